using System.Text.Json;
using System.Text.Json.Nodes;
using Peft.Core.SafeTensors;

namespace Peft;

/// <summary>An adapter_config.json that cannot be used; names the file and the field.</summary>
public sealed class PeftConfigException(string path, string problem, Exception? inner = null) : Exception($"{path}: {problem}", inner)
{
    /// <summary>The config file.</summary>
    public string FilePath { get; } = path;
}

/// <summary>
/// Fields every PEFT config has. The JSON object is the source of truth: typed properties read and write it, and
/// fields this library does not know are kept, so a config written by Python <c>peft</c> is re-saved unchanged
/// except for what PEFT itself rewrites (<c>inference_mode</c>, <c>base_model_name_or_path</c>).
/// </summary>
public abstract class PeftConfig
{
    /// <summary>File name of the config inside an adapter folder.</summary>
    public const string FileName = "adapter_config.json";

    /// <summary>Creates a config over <paramref name="json"/>.</summary>
    protected PeftConfig(JsonObject json) => Json = json;

    /// <summary>The JSON fields.</summary>
    public JsonObject Json { get; }

    /// <summary>"LORA", "LOHA", ...</summary>
    public string PeftType => Json["peft_type"]?.GetValue<string>() ?? throw new InvalidOperationException("config has no peft_type");

    /// <summary>"CAUSAL_LM", "SEQ_CLS", "TOKEN_CLS", "SEQ_2_SEQ_LM", "FEATURE_EXTRACTION", ... or null.</summary>
    public string? TaskType { get => GetString("task_type"); set => Json["task_type"] = value; }

    /// <summary>Where the base model came from (written on save).</summary>
    public string? BaseModelNameOrPath { get => GetString("base_model_name_or_path"); set => Json["base_model_name_or_path"] = value; }

    /// <summary>True for adapters loaded for inference (frozen); PEFT writes true on save.</summary>
    public bool InferenceMode { get => GetBool("inference_mode", false); set => Json["inference_mode"] = value; }

    /// <summary>Modules made trainable and saved whole, besides the adapter (e.g. a classifier head).</summary>
    public string[]? ModulesToSave { get => GetStringList("modules_to_save"); set => Json["modules_to_save"] = ToArray(value); }

    /// <summary>Reads an adapter_config.json (or the one in a folder) and builds the config class of its peft_type.</summary>
    public static PeftConfig Load(string folderOrFile)
    {
        var path = Directory.Exists(folderOrFile) ? Path.Combine(folderOrFile, FileName) : folderOrFile;
        if (!File.Exists(path)) throw new FileNotFoundException($"no {FileName} at '{path}'", path);
        JsonObject json;
        try
        {
            json = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { MaxDepth = 64 }) as JsonObject
                ?? throw new PeftConfigException(path, "adapter config is not a JSON object");
        }
        catch (JsonException e) { throw new PeftConfigException(path, $"not valid JSON: {e.Message}", e); }
        var type = json["peft_type"] is JsonValue v && v.TryGetValue<string>(out var s) ? s
            : throw new PeftConfigException(path, "'peft_type' is missing (the only field PEFT requires)");
        try
        {
            return type switch
            {
                "LORA" => new LoraConfig(json),
                "LOHA" => new LoHaConfig(json),
                "LOKR" => new LoKrConfig(json),
                "IA3" => new IA3Config(json),
                "VERA" => new VeraConfig(json),
                "OFT" => new OftConfig(json),
                "ADALORA" => new AdaLoraConfig(json),
                "BOFT" => new BoftConfig(json),
                "PROMPT_TUNING" => Validated(new PromptTuningConfig(json)),
                "P_TUNING" => new PromptEncoderConfig(json),
                "PREFIX_TUNING" => new PrefixTuningConfig(json),
                "MULTITASK_PROMPT_TUNING" => new MultitaskPromptTuningConfig(json),
                "ADAPTION_PROMPT" => new AdaptionPromptConfig(json),
                _ => throw new PeftConfigException(path, $"peft_type '{type}' is not supported yet (supported: LORA, LOHA, LOKR, IA3, VERA, OFT, BOFT, ADALORA, PROMPT_TUNING, P_TUNING, PREFIX_TUNING, MULTITASK_PROMPT_TUNING, ADAPTION_PROMPT)"),
            };
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new PeftConfigException(path, e.Message, e);
        }
    }

    private static PeftConfig Validated(PeftConfig config)
    {
        config.Validate();
        return config;
    }

    /// <summary>The config as PEFT writes it: sorted keys, two-space indent.</summary>
    public string ToJsonString() => PythonJson.Dumps(Json);

    /// <summary>Writes <c>adapter_config.json</c> into <paramref name="folder"/> atomically.</summary>
    public void Save(string folder) => AtomicFile.WriteAllText(Path.Combine(folder, FileName), ToJsonString());

    /// <summary>A deep copy.</summary>
    public abstract PeftConfig Clone();

    /// <summary>Throws when fields are inconsistent (e.g. r ≤ 0).</summary>
    public virtual void Validate() { }

    /// <summary>A string field (null when absent or null).</summary>
    protected string? GetString(string key) => Json[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        var n => throw new InvalidOperationException($"field '{key}' should be a string, got {n.ToJsonString()}"),
    };

    /// <summary>A boolean field.</summary>
    protected bool GetBool(string key, bool fallback) => Json[key] switch
    {
        null => fallback,
        JsonValue v when v.TryGetValue<bool>(out var b) => b,
        var n => throw new InvalidOperationException($"field '{key}' should be true or false, got {n.ToJsonString()}"),
    };

    /// <summary>A field PEFT types as bool or string (init_lora_weights, init_weights): "true"/"false" or the string.</summary>
    protected string GetBoolOrString(string key) => Json[key] switch
    {
        null => "true",
        JsonValue v when v.TryGetValue<bool>(out var b) => b ? "true" : "false",
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        var n => throw new InvalidOperationException($"field '{key}' should be a bool or a string, got {n.ToJsonString()}"),
    };

    /// <summary>Writes a bool-or-string field: "true"/"false" become JSON booleans, as PEFT writes them.</summary>
    protected void SetBoolOrString(string key, string value) => Json[key] = value switch { "true" => true, "false" => false, _ => value };

    /// <summary>A number field.</summary>
    protected double GetDouble(string key, double fallback) => Json[key] switch
    {
        null => fallback,
        JsonValue v when v.TryGetValue<double>(out var d) => d,
        JsonValue v when v.TryGetValue<long>(out var l) => l,   // values set from C# keep their CLR type
        JsonValue v when v.TryGetValue<int>(out var i) => i,
        var n => throw new InvalidOperationException($"field '{key}' should be a number, got {n.ToJsonString()}"),
    };

    /// <summary>A list of strings (a bare string reads as a one-element list), or null.</summary>
    protected string[]? GetStringList(string key) => Json[key] switch
    {
        null => null,
        JsonArray a => a.Select(n => n?.GetValue<string>() ?? throw new InvalidOperationException($"field '{key}' holds a null")).ToArray(),
        JsonValue v when v.TryGetValue<string>(out var s) => [s],
        var n => throw new InvalidOperationException($"field '{key}' should be a list of strings, got {n.ToJsonString()}"),
    };

    /// <summary>A JSON array of strings, or null.</summary>
    protected static JsonArray? ToArray(IEnumerable<string>? values) => values == null ? null : new JsonArray(values.Select(v => (JsonNode)JsonValue.Create(v)!).ToArray());
}
