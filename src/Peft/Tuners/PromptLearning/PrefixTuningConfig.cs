using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// PEFT's PrefixTuningConfig (<c>peft_type = "PREFIX_TUNING"</c>): learned past keys/values for every layer, from an
/// embedding [num_virtual_tokens, 2·layers·token_dim] or, with prefix_projection, an embedding of width token_dim
/// through Linear–Tanh–Linear (encoder_hidden_size). With grouped-query attention the prefix has the key/value heads,
/// so token_dim becomes head_dim × num_key_value_heads, as PEFT does.
/// </summary>
public sealed class PrefixTuningConfig : PromptLearningConfig
{
    /// <summary>A config with PEFT's defaults.</summary>
    public PrefixTuningConfig() : base(Defaults()) { }

    internal PrefixTuningConfig(JsonObject json) : base(json) => Validate();

    private static JsonObject Defaults()
    {
        var json = CommonDefaults("PREFIX_TUNING");
        json["encoder_hidden_size"] = null;
        json["prefix_projection"] = false;
        return json;
    }

    /// <summary>Reparameterise the prefix through an MLP.</summary>
    public bool PrefixProjection { get => GetBool("prefix_projection", false); set => Json["prefix_projection"] = value; }

    /// <summary>Hidden width of the projection (default token_dim).</summary>
    public int? EncoderHiddenSize { get => Json["encoder_hidden_size"] == null ? null : (int)GetDouble("encoder_hidden_size", 0); set => Json["encoder_hidden_size"] = value; }

    /// <inheritdoc/>
    public override PeftConfig Clone() => new PrefixTuningConfig((JsonObject)Json.DeepClone());

    /// <summary>On T5 the prefix goes to the decoder's self-attention (PEFT's EncoderDecoderCache with an empty
    /// cross-attention cache); the encoder runs unchanged.</summary>
    internal override bool SupportsEncoderDecoder => true;

    internal override void FillFrom(PreTrainedModel model)
    {
        base.FillFrom(model);
        if (!model.PromptDimensions!.TakesPastKeyValues)
            throw new NotSupportedException($"prefix tuning needs an attention that takes past keys/values; {model.ArchitectureName} here does not");
        // PEFT (#1901): with grouped-query attention the cached keys/values have num_key_value_heads heads, so
        // token_dim = token_dim / num_attention_heads × kv_heads (idempotent: a saved config passes through unchanged).
        int kv = model.PromptDimensions!.KvHeads;
        TokenDim = TokenDim!.Value / NumAttentionHeads!.Value * kv;
        NumAttentionHeads = kv;
    }

    internal override PromptEncoder CreateEncoder(PreTrainedModel model)
    {
        int width = 2 * NumLayers!.Value * TokenDim!.Value;
        return PrefixProjection && !InferenceMode
            ? new PrefixEncoder(NumVirtualTokens, TokenDim!.Value, EncoderHiddenSize ?? TokenDim!.Value, width)
            : new PromptEmbedding(NumVirtualTokens, width);
    }
}
