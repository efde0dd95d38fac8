using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// PEFT's PromptEncoderConfig (P-tuning, <c>peft_type = "P_TUNING"</c>): virtual token embeddings passed through an
/// MLP (Linear–ReLU–Linear–ReLU–Linear, <c>mlp_head.0/2/4</c>) before being prepended; encoder_hidden_size defaults to
/// token_dim. The LSTM reparameterisation is not available here yet.
/// </summary>
public sealed class PromptEncoderConfig : PromptLearningConfig
{
    /// <summary>A config with PEFT's defaults.</summary>
    public PromptEncoderConfig() : base(Defaults()) { }

    internal PromptEncoderConfig(JsonObject json) : base(json) => Validate();

    private static JsonObject Defaults()
    {
        var json = CommonDefaults("P_TUNING");
        json["encoder_dropout"] = PythonJson.Float(0.0);
        json["encoder_hidden_size"] = null;
        json["encoder_num_layers"] = 2;
        json["encoder_reparameterization_type"] = "MLP";
        return json;
    }

    /// <summary>MLP (or LSTM, not supported yet).</summary>
    public string EncoderReparameterizationType { get => GetString("encoder_reparameterization_type") ?? "MLP"; set => Json["encoder_reparameterization_type"] = value; }

    /// <summary>Hidden width of the MLP (default token_dim).</summary>
    public int? EncoderHiddenSize { get => Json["encoder_hidden_size"] == null ? null : (int)GetDouble("encoder_hidden_size", 0); set => Json["encoder_hidden_size"] = value; }

    /// <summary>Kept for PEFT's format; the MLP always has PEFT's fixed three layers.</summary>
    public int EncoderNumLayers { get => (int)GetDouble("encoder_num_layers", 2); set => Json["encoder_num_layers"] = value; }

    /// <inheritdoc/>
    public override PeftConfig Clone() => new PromptEncoderConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        base.Validate();
        if (EncoderReparameterizationType == "LSTM")
            throw new NotSupportedException("P-tuning with encoder_reparameterization_type LSTM is not supported yet (no LSTM layer here); use MLP");
        if (EncoderReparameterizationType != "MLP") throw new InvalidOperationException($"encoder_reparameterization_type must be MLP or LSTM, got '{EncoderReparameterizationType}'");
    }

    internal override bool SupportsEncoderDecoder => true;

    internal override PromptEncoder CreateEncoder(PreTrainedModel model) =>
        InferenceMode ? new PromptEmbedding(TotalVirtualTokens, TokenDim!.Value) : new PTuningEncoder(TotalVirtualTokens, TokenDim!.Value, EncoderHiddenSize ?? TokenDim!.Value);
}
