using System.Text.Json;
using System.Text.Json.Nodes;

namespace Peft.Transformers;

/// <summary>A config.json that cannot be used: names the file and the field at fault.</summary>
public sealed class ConfigException(string path, string problem, Exception? inner = null) : Exception($"{path}: {problem}", inner)
{
    /// <summary>The config file.</summary>
    public string FilePath { get; } = path;
}

/// <summary>
/// Read access to a Hugging Face config.json. Missing fields take the default the transformers config class uses
/// (each model config passes it); a present field of the wrong JSON type is an error naming the field. Unknown
/// fields are kept in <see cref="Json"/> and ignored, as transformers does.
/// </summary>
public sealed class HfConfig
{
    private HfConfig(string path, JsonObject json)
    {
        Path = path;
        Json = json;
    }

    /// <summary>Where the config came from.</summary>
    public string Path { get; }

    /// <summary>The raw JSON object.</summary>
    public JsonObject Json { get; }

    /// <summary>Reads <c>config.json</c> from a model folder (or a config file path).</summary>
    public static HfConfig Load(string folderOrFile)
    {
        var path = Directory.Exists(folderOrFile) ? System.IO.Path.Combine(folderOrFile, "config.json") : folderOrFile;
        if (!File.Exists(path)) throw new FileNotFoundException($"no config.json at '{path}'", path);
        try
        {
            var node = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { MaxDepth = 64 });
            return new HfConfig(path, node as JsonObject ?? throw new ConfigException(path, "config is not a JSON object"));
        }
        catch (JsonException e)
        {
            throw new ConfigException(path, $"not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Wraps JSON already in memory.</summary>
    public static HfConfig FromJson(string json, string path = "<memory>") =>
        new(path, JsonNode.Parse(json) as JsonObject ?? throw new ConfigException(path, "config is not a JSON object"));

    /// <summary>True when the field is present and not null.</summary>
    public bool Has(string name) => Json.TryGetPropertyValue(name, out var v) && v != null;

    /// <summary>An integer field, or <paramref name="fallback"/> when absent/null.</summary>
    public int Int(string name, int fallback) => Get(name, fallback, v => v.GetValue<int>());

    /// <summary>A size field: an integer ≥ 1 (sizes, counts, heads); zero or negative is a <see cref="ConfigException"/>.</summary>
    public int PositiveInt(string name, int fallback)
    {
        int v = Int(name, fallback);
        return v >= 1 ? v : throw new ConfigException(Path, $"field '{name}' must be a positive integer, got {v}");
    }

    /// <summary>An integer field that must be present.</summary>
    public int RequiredInt(string name) => Has(name) ? Int(name, 0) : throw new ConfigException(Path, $"required field '{name}' is missing");

    /// <summary>An optional integer field.</summary>
    public int? OptionalInt(string name) => Has(name) ? Int(name, 0) : null;

    /// <summary>An integer or a list of integers (e.g. Llama 3's eos_token_id), as a list; null when absent.</summary>
    public int[]? IntList(string name)
    {
        if (!Has(name)) return null;
        if (Json[name] is JsonArray a)
            return a.Select(n => n is JsonValue v && v.TryGetValue<int>(out int x) ? x : throw new ConfigException(Path, $"field '{name}' should hold integers, got {a.ToJsonString()}")).ToArray();
        return [Int(name, 0)];
    }

    /// <summary>A number field.</summary>
    public double Double(string name, double fallback) => Get(name, fallback, v => v.GetValue<double>());

    /// <summary>A boolean field.</summary>
    public bool Bool(string name, bool fallback) => Get(name, fallback, v => v.GetValue<bool>());

    /// <summary>A string field.</summary>
    public string String(string name, string fallback) => Get(name, fallback, v => v.GetValue<string>());

    /// <summary>An optional string field.</summary>
    public string? OptionalString(string name) => Has(name) ? String(name, "") : null;

    /// <summary>An object field, or null.</summary>
    public JsonObject? Object(string name) => Has(name)
        ? Json[name] as JsonObject ?? throw new ConfigException(Path, $"field '{name}' should be an object")
        : null;

    /// <summary><c>architectures[0]</c>, or null.</summary>
    public string? Architecture => Json["architectures"] is JsonArray { Count: > 0 } a ? a[0]?.GetValue<string>() : null;

    /// <summary><c>model_type</c>, or null.</summary>
    public string? ModelType => OptionalString("model_type");

    /// <summary>Number of labels for classification heads: <c>num_labels</c>, else the size of <c>id2label</c>, else 2 (HF's default).</summary>
    public int NumLabels => Has("num_labels") ? Int("num_labels", 2) : Object("id2label")?.Count ?? 2;

    private T Get<T>(string name, T fallback, Func<JsonValue, T> read)
    {
        if (!Json.TryGetPropertyValue(name, out var node) || node == null) return fallback;
        try
        {
            return node is JsonValue v ? read(v) : throw new InvalidOperationException("not a scalar");
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new ConfigException(Path, $"field '{name}' should be a {typeof(T).Name}, got {node.ToJsonString()}", e);
        }
    }
}
