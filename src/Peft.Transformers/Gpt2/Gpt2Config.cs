namespace Peft.Transformers.Gpt2;

/// <summary>GPT-2 hyper-parameters with transformers' GPT2Config defaults.</summary>
public sealed record Gpt2Config
{
    /// <summary>Vocabulary size.</summary>
    public int VocabSize { get; init; } = 50257;
    /// <summary>Maximum positions (wpe rows).</summary>
    public int NPositions { get; init; } = 1024;
    /// <summary>Hidden size.</summary>
    public int NEmbd { get; init; } = 768;
    /// <summary>Layers.</summary>
    public int NLayer { get; init; } = 12;
    /// <summary>Attention heads.</summary>
    public int NHead { get; init; } = 12;
    /// <summary>MLP inner size (4·n_embd when null).</summary>
    public int? NInner { get; init; }
    /// <summary>MLP activation.</summary>
    public string ActivationFunction { get; init; } = "gelu_new";
    /// <summary>Residual dropout.</summary>
    public double ResidPdrop { get; init; } = 0.1;
    /// <summary>Embedding dropout.</summary>
    public double EmbdPdrop { get; init; } = 0.1;
    /// <summary>Attention-probability dropout.</summary>
    public double AttnPdrop { get; init; } = 0.1;
    /// <summary>LayerNorm epsilon.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-5;
    /// <summary>Init std.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary>Divide scores by √head_dim.</summary>
    public bool ScaleAttnWeights { get; init; } = true;
    /// <summary>Also divide scores by (layer index + 1).</summary>
    public bool ScaleAttnByInverseLayerIdx { get; init; }
    /// <summary>Output head shares the token embedding.</summary>
    public bool TieWordEmbeddings { get; init; } = true;
    /// <summary>Labels of classification heads.</summary>
    public int NumLabels { get; init; } = 2;
    /// <summary>Padding token (classification pooling).</summary>
    public int? PadTokenId { get; init; }
    /// <summary>End-of-sequence tokens.</summary>
    public int[] EosTokenIds { get; init; } = [50256];
    /// <summary>Dropout before the token-classification head (transformers: classifier_dropout, else hidden_dropout, else 0.1).</summary>
    public double? ClassifierDropout { get; init; }
    /// <summary>Source file (for error messages).</summary>
    public string Path { get; init; } = "<memory>";

    /// <summary>Head size.</summary>
    public int HeadDim => NEmbd / NHead;

    /// <summary>Reads a GPT-2 config.json.</summary>
    public static Gpt2Config From(HfConfig c)
    {
        if (c.OptionalInt("n_inner") is int inner && inner < 1) throw new ConfigException(c.Path, $"field 'n_inner' must be a positive integer, got {inner}");
        var cfg = new Gpt2Config
        {
            VocabSize = c.PositiveInt("vocab_size", 50257), NPositions = c.PositiveInt("n_positions", 1024), NEmbd = c.PositiveInt("n_embd", 768),
            NLayer = c.PositiveInt("n_layer", 12), NHead = c.PositiveInt("n_head", 12), NInner = c.OptionalInt("n_inner"),
            ActivationFunction = c.String("activation_function", "gelu_new"),
            ResidPdrop = c.Double("resid_pdrop", 0.1), EmbdPdrop = c.Double("embd_pdrop", 0.1), AttnPdrop = c.Double("attn_pdrop", 0.1),
            LayerNormEpsilon = c.Double("layer_norm_epsilon", 1e-5), InitializerRange = c.Double("initializer_range", 0.02),
            ScaleAttnWeights = c.Bool("scale_attn_weights", true), ScaleAttnByInverseLayerIdx = c.Bool("scale_attn_by_inverse_layer_idx", false),
            TieWordEmbeddings = c.Bool("tie_word_embeddings", true), NumLabels = c.NumLabels,
            PadTokenId = c.OptionalInt("pad_token_id"), EosTokenIds = c.IntList("eos_token_id") ?? [50256],
            ClassifierDropout = c.Has("classifier_dropout") ? c.Double("classifier_dropout", 0.1) : null, Path = c.Path,
        };
        if (cfg.NEmbd % cfg.NHead != 0) throw new ConfigException(c.Path, $"n_embd {cfg.NEmbd} is not divisible by n_head {cfg.NHead}");
        return cfg;
    }
}
