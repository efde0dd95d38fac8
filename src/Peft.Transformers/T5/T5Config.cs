namespace Peft.Transformers.T5;

/// <summary>T5 hyper-parameters with transformers' T5Config defaults (T5 v1.0; mT5/Flan-T5/mt0 set gated-gelu and
/// untied embeddings in their config.json).</summary>
public sealed record T5Config
{
    /// <summary>Vocabulary size.</summary>
    public int VocabSize { get; init; } = 32128;
    /// <summary>Model width.</summary>
    public int DModel { get; init; } = 512;
    /// <summary>Per-head size.</summary>
    public int DKv { get; init; } = 64;
    /// <summary>Feed-forward inner size.</summary>
    public int DFf { get; init; } = 2048;
    /// <summary>Encoder layers.</summary>
    public int NumLayers { get; init; } = 6;
    /// <summary>Decoder layers.</summary>
    public int NumDecoderLayers { get; init; } = 6;
    /// <summary>Heads.</summary>
    public int NumHeads { get; init; } = 8;
    /// <summary>Relative-position buckets.</summary>
    public int RelativeAttentionNumBuckets { get; init; } = 32;
    /// <summary>Distance beyond which buckets are shared.</summary>
    public int RelativeAttentionMaxDistance { get; init; } = 128;
    /// <summary>Dropout.</summary>
    public double DropoutRate { get; init; } = 0.1;
    /// <summary>RMS norm epsilon.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-6;
    /// <summary>Feed-forward activation, e.g. "relu" or "gelu_new".</summary>
    public string DenseActFn { get; init; } = "relu";
    /// <summary>Gated feed-forward (wi_0 / wi_1).</summary>
    public bool IsGatedAct { get; init; }
    /// <summary>lm_head shares the embedding (<c>shared.weight</c>) when the checkpoint holds no <c>lm_head.weight</c>.</summary>
    public bool TieWordEmbeddings { get; init; } = true;
    /// <summary>The decoder output is scaled by d_model^-0.5 before lm_head. transformers ≥ 5.17 saves this as
    /// <c>scale_decoder_outputs</c> (and rewrites <c>tie_word_embeddings</c>); older configs imply it by tying.</summary>
    public bool ScaleDecoderOutputs { get; init; } = true;
    /// <summary>Padding token.</summary>
    public int PadTokenId { get; init; }
    /// <summary>End-of-sequence token.</summary>
    public int EosTokenId { get; init; } = 1;
    /// <summary>First decoder input.</summary>
    public int DecoderStartTokenId { get; init; }
    /// <summary>Init factor.</summary>
    public double InitializerFactor { get; init; } = 1.0;
    /// <summary>"t5" or "mt5".</summary>
    public string ModelType { get; init; } = "t5";
    /// <summary>Source file.</summary>
    public string Path { get; init; } = "<memory>";

    /// <summary>Reads a T5/mT5 config.json.</summary>
    public static T5Config From(HfConfig c)
    {
        var proj = c.String("feed_forward_proj", "relu");
        var parts = proj.Split('-');
        bool gated = parts[0] == "gated";
        if ((gated && parts.Length != 2) || (!gated && parts.Length != 1))
            throw new ConfigException(c.Path, $"feed_forward_proj '{proj}' is not 'ACT' or 'gated-ACT'");
        var act = parts[^1] == "gelu" && gated ? "gelu_new" : parts[^1]; // transformers' backwards-compatibility rule
        Activations.Get(act, c.Path);
        int layers = c.PositiveInt("num_layers", 6);
        if (c.OptionalInt("num_decoder_layers") is int dl && dl < 1) throw new ConfigException(c.Path, $"field 'num_decoder_layers' must be a positive integer, got {dl}");
        bool tie = c.Bool("tie_word_embeddings", true);
        return new T5Config
        {
            VocabSize = c.PositiveInt("vocab_size", 32128), DModel = c.PositiveInt("d_model", 512), DKv = c.PositiveInt("d_kv", 64), DFf = c.PositiveInt("d_ff", 2048),
            NumLayers = layers, NumDecoderLayers = c.OptionalInt("num_decoder_layers") ?? layers, NumHeads = c.PositiveInt("num_heads", 8),
            RelativeAttentionNumBuckets = c.PositiveInt("relative_attention_num_buckets", 32), RelativeAttentionMaxDistance = c.PositiveInt("relative_attention_max_distance", 128),
            DropoutRate = c.Double("dropout_rate", 0.1), LayerNormEpsilon = c.Double("layer_norm_epsilon", 1e-6), DenseActFn = act, IsGatedAct = gated,
            TieWordEmbeddings = tie, ScaleDecoderOutputs = c.Bool("scale_decoder_outputs", tie), PadTokenId = c.Int("pad_token_id", 0), EosTokenId = c.Int("eos_token_id", 1),
            DecoderStartTokenId = c.Int("decoder_start_token_id", 0), InitializerFactor = c.Double("initializer_factor", 1.0),
            ModelType = c.ModelType ?? "t5", Path = c.Path,
        };
    }
}
