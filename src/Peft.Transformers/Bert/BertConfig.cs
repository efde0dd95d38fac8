namespace Peft.Transformers.Bert;

/// <summary>BERT/RoBERTa hyper-parameters with transformers' BertConfig / RobertaConfig defaults.</summary>
public sealed record BertConfig
{
    /// <summary>Vocabulary size.</summary>
    public int VocabSize { get; init; } = 30522;
    /// <summary>Hidden size.</summary>
    public int HiddenSize { get; init; } = 768;
    /// <summary>Layers.</summary>
    public int NumHiddenLayers { get; init; } = 12;
    /// <summary>Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 12;
    /// <summary>MLP inner size.</summary>
    public int IntermediateSize { get; init; } = 3072;
    /// <summary>Activation.</summary>
    public string HiddenAct { get; init; } = "gelu";
    /// <summary>Dropout after embeddings, attention output and MLP output.</summary>
    public double HiddenDropoutProb { get; init; } = 0.1;
    /// <summary>Attention-probability dropout.</summary>
    public double AttentionProbsDropoutProb { get; init; } = 0.1;
    /// <summary>Position-embedding rows.</summary>
    public int MaxPositionEmbeddings { get; init; } = 512;
    /// <summary>Segment (token type) embedding rows.</summary>
    public int TypeVocabSize { get; init; } = 2;
    /// <summary>Init std.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary>LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-12;
    /// <summary>Padding token (RoBERTa numbers positions after it).</summary>
    public int PadTokenId { get; init; }
    /// <summary>Dropout before classification heads (hidden_dropout_prob when null).</summary>
    public double? ClassifierDropout { get; init; }
    /// <summary>Labels of classification heads.</summary>
    public int NumLabels { get; init; } = 2;
    /// <summary>"bert" or "roberta".</summary>
    public string ModelType { get; init; } = "bert";
    /// <summary>Source file (for error messages).</summary>
    public string Path { get; init; } = "<memory>";

    /// <summary>True for RoBERTa (positions numbered from pad_token_id + 1, classification head on &lt;s&gt;).</summary>
    public bool IsRoberta => ModelType is "roberta" or "xlm-roberta";

    /// <summary>Reads a BERT or RoBERTa config.json.</summary>
    public static BertConfig From(HfConfig c)
    {
        var type = c.ModelType ?? "bert";
        bool roberta = type is "roberta" or "xlm-roberta";
        var cfg = new BertConfig
        {
            VocabSize = c.PositiveInt("vocab_size", roberta ? 50265 : 30522), HiddenSize = c.PositiveInt("hidden_size", 768),
            NumHiddenLayers = c.PositiveInt("num_hidden_layers", 12), NumAttentionHeads = c.PositiveInt("num_attention_heads", 12),
            IntermediateSize = c.PositiveInt("intermediate_size", 3072), HiddenAct = c.String("hidden_act", "gelu"),
            HiddenDropoutProb = c.Double("hidden_dropout_prob", 0.1), AttentionProbsDropoutProb = c.Double("attention_probs_dropout_prob", 0.1),
            MaxPositionEmbeddings = c.PositiveInt("max_position_embeddings", 512), TypeVocabSize = c.PositiveInt("type_vocab_size", 2),
            InitializerRange = c.Double("initializer_range", 0.02), LayerNormEps = c.Double("layer_norm_eps", 1e-12),
            PadTokenId = c.Int("pad_token_id", roberta ? 1 : 0),
            ClassifierDropout = c.Has("classifier_dropout") ? c.Double("classifier_dropout", 0.1) : null,
            NumLabels = c.NumLabels, ModelType = type, Path = c.Path,
        };
        if (cfg.HiddenSize % cfg.NumAttentionHeads != 0)
            throw new ConfigException(c.Path, $"hidden_size {cfg.HiddenSize} is not divisible by num_attention_heads {cfg.NumAttentionHeads}");
        return cfg;
    }
}
