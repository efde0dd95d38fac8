using System.Text.Json.Nodes;

namespace Peft.Transformers.Llama;

/// <summary>LLaMA-family hyper-parameters with transformers' LlamaConfig defaults (also read for Mistral and Qwen2
/// folders, which share the architecture; Qwen2 adds biases on q/k/v).</summary>
public sealed record LlamaConfig
{
    /// <summary>Vocabulary size.</summary>
    public int VocabSize { get; init; } = 32000;
    /// <summary>Hidden size.</summary>
    public int HiddenSize { get; init; } = 4096;
    /// <summary>MLP inner size.</summary>
    public int IntermediateSize { get; init; } = 11008;
    /// <summary>Layers.</summary>
    public int NumHiddenLayers { get; init; } = 32;
    /// <summary>Query heads.</summary>
    public int NumAttentionHeads { get; init; } = 32;
    /// <summary>Key/value heads (grouped-query attention when fewer than query heads).</summary>
    public int NumKeyValueHeads { get; init; } = 32;
    /// <summary>Per-head size (hidden / heads unless given).</summary>
    public int HeadDim { get; init; } = 128;
    /// <summary>MLP activation.</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary>Maximum positions.</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;
    /// <summary>RMSNorm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>RoPE base.</summary>
    public double RopeTheta { get; init; } = 10000;
    /// <summary>rope_scaling: type ("linear", "llama3", "default") and its parameters, or null.</summary>
    public JsonObject? RopeScaling { get; init; }
    /// <summary>Bias on q/k/v/o projections (LLaMA's attention_bias).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>Bias on q/k/v only (Qwen2).</summary>
    public bool QkvBias { get; init; }
    /// <summary>Bias on the MLP projections.</summary>
    public bool MlpBias { get; init; }
    /// <summary>Attention-probability dropout.</summary>
    public double AttentionDropout { get; init; }
    /// <summary>Output head shares the token embedding.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Init std.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary>Labels of classification heads.</summary>
    public int NumLabels { get; init; } = 2;
    /// <summary>Padding token.</summary>
    public int? PadTokenId { get; init; }
    /// <summary>End-of-sequence tokens (Llama 3 lists several).</summary>
    public int[] EosTokenIds { get; init; } = [2];
    /// <summary>"llama", "mistral" or "qwen2".</summary>
    public string ModelType { get; init; } = "llama";
    /// <summary>Source file (for error messages).</summary>
    public string Path { get; init; } = "<memory>";

    /// <summary>Reads a LLaMA/Mistral/Qwen2 config.json.</summary>
    public static LlamaConfig From(HfConfig c)
    {
        var modelType = c.ModelType ?? "llama";
        int hidden = c.PositiveInt("hidden_size", 4096), heads = c.PositiveInt("num_attention_heads", 32);
        foreach (var optional in new[] { "num_key_value_heads", "head_dim" })
            if (c.OptionalInt(optional) is int v && v < 1) throw new ConfigException(c.Path, $"field '{optional}' must be a positive integer, got {v}");
        // transformers ≥ 5 writes rope_parameters {rope_type, rope_theta, factor, ...}; older configs have a top-level
        // rope_theta and an optional rope_scaling {type | rope_type, factor, ...}. Both spellings read the same.
        var ropeParameters = c.Object("rope_parameters");
        double ropeTheta = ropeParameters?["rope_theta"] is System.Text.Json.Nodes.JsonValue theta ? theta.GetValue<double>() : c.Double("rope_theta", 10000);
        var ropeScaling = c.Object("rope_scaling") ?? ropeParameters;
        var cfg = new LlamaConfig
        {
            VocabSize = c.PositiveInt("vocab_size", 32000), HiddenSize = hidden, IntermediateSize = c.PositiveInt("intermediate_size", 11008),
            NumHiddenLayers = c.PositiveInt("num_hidden_layers", 32), NumAttentionHeads = heads,
            NumKeyValueHeads = c.OptionalInt("num_key_value_heads") ?? heads, HeadDim = c.OptionalInt("head_dim") ?? hidden / heads,
            HiddenAct = c.String("hidden_act", "silu"), MaxPositionEmbeddings = c.PositiveInt("max_position_embeddings", 2048),
            RmsNormEps = c.Double("rms_norm_eps", 1e-6), RopeTheta = ropeTheta, RopeScaling = ropeScaling,
            AttentionBias = c.Bool("attention_bias", false), QkvBias = modelType == "qwen2", MlpBias = c.Bool("mlp_bias", false),
            AttentionDropout = c.Double("attention_dropout", 0), TieWordEmbeddings = c.Bool("tie_word_embeddings", false),
            InitializerRange = c.Double("initializer_range", 0.02), NumLabels = c.NumLabels, PadTokenId = c.OptionalInt("pad_token_id"),
            EosTokenIds = c.IntList("eos_token_id") ?? [2],
            ModelType = modelType, Path = c.Path,
        };
        if (cfg.NumAttentionHeads % cfg.NumKeyValueHeads != 0)
            throw new ConfigException(c.Path, $"num_attention_heads {cfg.NumAttentionHeads} is not a multiple of num_key_value_heads {cfg.NumKeyValueHeads}");
        return cfg;
    }
}
