using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// PEFT's PromptEncoderConfig (P-tuning, <c>peft_type = "P_TUNING"</c>): virtual token embeddings passed through an
/// MLP (Linear–ReLU–Linear–ReLU–Linear, <c>mlp_head.0/2/4</c>) or a bidirectional LSTM (<c>lstm_head</c>,
/// encoder_num_layers layers, encoder_dropout between them) followed by Linear(2h, 2h)–ReLU–Linear(2h, token_dim)
/// before being prepended; encoder_hidden_size h defaults to token_dim.
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

    /// <summary>MLP or LSTM.</summary>
    public string EncoderReparameterizationType { get => GetString("encoder_reparameterization_type") ?? "MLP"; set => Json["encoder_reparameterization_type"] = value; }

    /// <summary>Hidden width of the MLP (default token_dim).</summary>
    public int? EncoderHiddenSize { get => Json["encoder_hidden_size"] == null ? null : (int)GetDouble("encoder_hidden_size", 0); set => Json["encoder_hidden_size"] = value; }

    /// <summary>LSTM layers (the MLP always has PEFT's fixed three layers, whatever this says).</summary>
    public int EncoderNumLayers { get => (int)GetDouble("encoder_num_layers", 2); set => Json["encoder_num_layers"] = value; }

    /// <summary>Dropout between the LSTM's layers.</summary>
    public double EncoderDropout { get => GetDouble("encoder_dropout", 0); set => Json["encoder_dropout"] = PythonJson.Float(value); }

    /// <inheritdoc/>
    public override PeftConfig Clone() => new PromptEncoderConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        base.Validate();
        if (EncoderReparameterizationType is not ("MLP" or "LSTM")) throw new InvalidOperationException($"encoder_reparameterization_type must be MLP or LSTM, got '{EncoderReparameterizationType}'");
    }

    internal override bool SupportsEncoderDecoder => true;

    internal override PromptEncoder CreateEncoder(PreTrainedModel model) =>
        InferenceMode ? new PromptEmbedding(TotalVirtualTokens, TokenDim!.Value)
        : EncoderReparameterizationType == "LSTM"
            ? new PTuningLstmEncoder(TotalVirtualTokens, TokenDim!.Value, EncoderHiddenSize ?? TokenDim!.Value, EncoderNumLayers, EncoderDropout)
            : new PTuningEncoder(TotalVirtualTokens, TokenDim!.Value, EncoderHiddenSize ?? TokenDim!.Value);
}
