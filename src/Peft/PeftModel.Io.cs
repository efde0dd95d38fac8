using Peft.Core;
using Peft.Core.SafeTensors;
using Peft.Transformers;

namespace Peft;

/// <summary>An adapter file that does not fit the model: names the file and lists the keys at fault.</summary>
public sealed class AdapterLoadException(string path, string problem, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected)
    : Exception($"{path}: {problem}")
{
    /// <summary>The adapter file.</summary>
    public string FilePath { get; } = path;

    /// <summary>Adapter tensors the model expects and the file lacks.</summary>
    public IReadOnlyList<string> MissingKeys { get; } = missing;

    /// <summary>Tensors in the file the model has no place for.</summary>
    public IReadOnlyList<string> UnexpectedKeys { get; } = unexpected;
}

public sealed partial class PeftModel
{
    /// <summary>File name of adapter weights inside an adapter folder.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    /// <summary>
    /// Saves each adapter as PEFT does: <paramref name="folder"/> for "default", <c>folder/&lt;name&gt;</c> for others,
    /// each holding adapter_config.json (inference_mode true) and adapter_model.safetensors whose keys drop the adapter
    /// name (<c>base_model.model.&lt;path&gt;.lora_A.weight</c>; modules_to_save under their original keys).
    /// </summary>
    public void SavePretrained(string folder, IEnumerable<string>? selectedAdapters = null)
    {
        foreach (var name in selectedAdapters ?? _configs.Keys)
        {
            if (!_configs.TryGetValue(name, out var config)) throw new KeyNotFoundException($"no adapter named '{name}'");
            var dir = name == "default" ? folder : Path.Combine(folder, name);
            Directory.CreateDirectory(dir);
            using var scope = Tensor.NewScope();
            var state = config is PromptLearningConfig ? PromptState(name, forSaving: true) : AdapterState(name);
            SliceByRankPattern(name, state);   // slices are new tensors: the scope disposes them
            var tensors = state.ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
            SafeTensorsWriter.Save(Path.Combine(dir, WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
            var saved = config.Clone();
            saved.InferenceMode = true;
            if (saved.BaseModelNameOrPath == null && Model.SourceConfig?.Path is { } cfgPath && cfgPath != "<memory>")
                saved.BaseModelNameOrPath = Path.GetDirectoryName(Path.GetFullPath(cfgPath));
            saved.Save(dir);
        }
    }

    /// <summary>The adapter's tensors under their saved (PEFT file) keys.</summary>
    private Dictionary<string, Tensor> AdapterState(string adapter)
    {
        var config = _configs[adapter] as TunerConfig;   // null for adaption prompt: no bias rule
        var result = new Dictionary<string, Tensor>();
        foreach (var (path, tensor) in StateDict())
        {
            var key = SavedKey(path, adapter);
            if (key != null) result[key] = tensor;
            else if (config != null && BiasRuleCovers(path, config))
                result[path] = tensor;
        }
        return result;
    }

    /// <summary>
    /// PEFT's on-disk key for an in-memory path of <paramref name="adapter"/>, or null: the adapter name is dropped
    /// (<c>.lora_A.default.weight</c> → <c>.lora_A.weight</c>, <c>.hada_w1_a.default</c> → <c>.hada_w1_a</c>,
    /// <c>base_model.vera_A.default</c> → <c>base_model.vera_A</c>); DoRA's magnitude also loses its ".weight";
    /// modules_to_save copies are saved under the original module's keys.
    /// </summary>
    private static string? SavedKey(string path, string adapter)
    {
        var segments = path.Split('.').ToList();
        int i = AdapterSegmentIndex(segments.ToArray());
        if (i < 0 || segments[i] != adapter) return null;
        segments.RemoveAt(i);
        if (segments[i - 1] == "modules_to_save") segments.RemoveAt(i - 1);
        else if (segments[i - 1] == "lora_magnitude_vector" && i < segments.Count && segments[i] == "weight") segments.RemoveAt(i);
        return string.Join('.', segments);
    }

    /// <summary>
    /// Loads an adapter saved by this library or by Python <c>peft</c> onto <paramref name="model"/>, as
    /// <c>PeftModel.from_pretrained</c>: frozen (inference mode) unless <paramref name="isTrainable"/>.
    /// </summary>
    public static PeftModel FromPretrained(PreTrainedModel model, string adapterFolder, string adapterName = "default", bool isTrainable = false)
    {
        var config = PeftConfig.Load(adapterFolder);
        if (config is PromptLearningConfig && isTrainable)
            throw new ArgumentException("a prompt-learning adapter cannot be loaded as trainable (as in PEFT: its file holds the encoder's output, not the encoder)");
        config.InferenceMode = !isTrainable;
        var peft = Create(model, config, adapterName);
        try
        {
            peft.LoadAdapterWeights(adapterFolder, adapterName);
            return peft;
        }
        catch
        {
            peft.Unload();
            peft.Dispose();
            throw;
        }
    }

    /// <summary>Loads another adapter next to the existing ones (not activated), as PEFT's load_adapter.</summary>
    public void LoadAdapter(string adapterFolder, string adapterName, bool isTrainable = false)
    {
        var config = PeftConfig.Load(adapterFolder);
        if (config is PromptLearningConfig && isTrainable)
            throw new ArgumentException("a prompt-learning adapter cannot be loaded as trainable (as in PEFT: its file holds the encoder's output, not the encoder)");
        config.InferenceMode = !isTrainable;
        AddAdapter(adapterName, config);
        LoadAdapterWeights(adapterFolder, adapterName);
    }

    private void LoadAdapterWeights(string folder, string adapter)
    {
        var file = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(file))
            throw new FileNotFoundException(File.Exists(Path.Combine(folder, "adapter_model.bin"))
                ? $"'{folder}' holds only adapter_model.bin (pickle), which Peft.Native does not read; re-save it with safe_serialization=True"
                : $"no {WeightsFileName} in '{folder}'", file);
        using var st = SafeTensorsFile.Open(file);
        ResizeByRankPattern(adapter);
        var expected = _configs[adapter] is PromptLearningConfig ? PromptState(adapter, forSaving: false) : AdapterState(adapter);
        var missing = expected.Keys.Where(k => !st.Contains(k)).Order(StringComparer.Ordinal).ToList();
        var unexpected = st.Tensors.Select(t => t.Name).Where(k => !expected.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var mismatched = expected.Where(kv => st.Contains(kv.Key) && !st.Info(kv.Key).Shape.AsSpan().SequenceEqual(kv.Value.Shape))
            .Select(kv => $"{kv.Key}: model has {Shapes.Format(kv.Value.Shape)}, file has {Shapes.Format(st.Info(kv.Key).Shape)}").ToList();
        if (mismatched.Count > 0)
            throw new AdapterLoadException(file, $"{mismatched.Count} tensor(s) do not fit the model (an adapter for a different base model or config?): {string.Join("; ", mismatched.Take(5))}", missing, unexpected);
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new AdapterLoadException(file, $"adapter keys do not match the model: {missing.Count} missing ({string.Join(", ", missing.Take(5))}), {unexpected.Count} unexpected ({string.Join(", ", unexpected.Take(5))})", missing, unexpected);
        using var _ = Autograd.NoGrad();
        foreach (var (key, target) in expected)
        {
            using var loaded = st.Load(key);
            bool trainable = target.RequiresGrad;
            target.RequiresGrad = false;
            target.CopyFrom(loaded);
            target.RequiresGrad = trainable;
        }
    }
}
