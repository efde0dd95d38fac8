using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// PEFT's PromptTuningConfig (<c>peft_type = "PROMPT_TUNING"</c>): num_virtual_tokens learned input embeddings prepended
/// to the input; prompt_tuning_init RANDOM (N(0, 1), as nn.Embedding), TEXT (the word embeddings of
/// prompt_tuning_init_text, repeated or cut to length) or SAMPLE_VOCAB (random rows of the vocabulary).
/// </summary>
/// <example><code>var config = new PromptTuningConfig { NumVirtualTokens = 8, PromptTuningInit = "TEXT", PromptTuningInitText = "Classify if the tweet is a complaint:", TaskType = "CAUSAL_LM" };</code></example>
public class PromptTuningConfig : PromptLearningConfig
{
    /// <summary>A config with PEFT's defaults (num_virtual_tokens must still be set).</summary>
    public PromptTuningConfig() : this(Defaults("PROMPT_TUNING")) { }

    internal PromptTuningConfig(JsonObject json) : base(json) { }

    /// <summary>The fields PEFT writes for prompt tuning.</summary>
    protected static JsonObject Defaults(string peftType)
    {
        var json = CommonDefaults(peftType);
        json["prompt_tuning_init"] = "RANDOM";
        json["prompt_tuning_init_text"] = null;
        json["tokenizer_kwargs"] = null;
        json["tokenizer_name_or_path"] = null;
        return json;
    }

    /// <summary>RANDOM, TEXT or SAMPLE_VOCAB.</summary>
    public string PromptTuningInit { get => GetString("prompt_tuning_init") ?? "RANDOM"; set => Json["prompt_tuning_init"] = value; }

    /// <summary>The text whose embeddings start the prompt (TEXT init).</summary>
    public string? PromptTuningInitText { get => GetString("prompt_tuning_init_text"); set => Json["prompt_tuning_init_text"] = value; }

    /// <summary>A local tokenizer folder for TEXT init (default: the model's own folder).</summary>
    public string? TokenizerNameOrPath { get => GetString("tokenizer_name_or_path"); set => Json["tokenizer_name_or_path"] = value; }

    /// <inheritdoc/>
    public override PeftConfig Clone() => new PromptTuningConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        base.Validate();
        if (PromptTuningInit is not ("RANDOM" or "TEXT" or "SAMPLE_VOCAB"))
            throw new InvalidOperationException($"prompt_tuning_init must be RANDOM, TEXT or SAMPLE_VOCAB, got '{PromptTuningInit}'");
        if (PromptTuningInit == "TEXT" && string.IsNullOrEmpty(PromptTuningInitText))
            throw new InvalidOperationException("prompt_tuning_init TEXT needs prompt_tuning_init_text");
    }

    internal override bool SupportsEncoderDecoder => true;

    internal override PromptEncoder CreateEncoder(PreTrainedModel model)
    {
        var encoder = new PromptEmbedding(TotalVirtualTokens, TokenDim!.Value);
        if (!InferenceMode) encoder.Initialise(this, model);
        return encoder;
    }

    /// <summary>The token ids of the init text, as PEFT: the tokenizer's full encoding (special tokens included),
    /// cut or repeated to <paramref name="length"/>.</summary>
    internal long[] InitTokenIds(PreTrainedModel model, int length)
    {
        var folder = TokenizerNameOrPath ?? (model.SourceConfig?.Path is { } p && p != "<memory>" ? Path.GetDirectoryName(Path.GetFullPath(p)) : null)
            ?? throw new InvalidOperationException("TEXT init needs tokenizer_name_or_path (a local tokenizer folder) or a model loaded from a folder");
        var ids = AutoTokenizer.FromPretrained(folder).Encode(PromptTuningInitText!);
        if (ids.Length == 0) throw new InvalidOperationException("prompt_tuning_init_text encodes to no tokens");
        return Enumerable.Range(0, length).Select(i => (long)ids[i % ids.Length]).ToArray();
    }
}
