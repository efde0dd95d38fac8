using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// What every layer-injecting method's config has (PEFT's non-prompt configs): which modules to adapt
/// (target_modules, exclude_modules, layers_to_transform, layers_pattern) and per-module patterns; and what the method
/// does with a matched layer. <see cref="TargetMatcher"/> applies the target rules once for every method.
/// </summary>
public abstract class TunerConfig : PeftConfig
{
    /// <summary>Creates a config over <paramref name="json"/>.</summary>
    protected TunerConfig(JsonObject json) : base(json) { }

    /// <summary>Module names to adapt: exact names or dotted suffixes ("c_attn", "q_proj"), or "all-linear".</summary>
    public string[]? TargetModules
    {
        get => Json["target_modules"] is JsonValue ? null : GetStringList("target_modules");
        set => Json["target_modules"] = ToArray(value);
    }

    /// <summary>A regular expression that must match a module's full name (PEFT's string form of target_modules).</summary>
    public string? TargetModulesRegex
    {
        get => Json["target_modules"] is JsonValue ? GetString("target_modules") : null;
        set => Json["target_modules"] = value;
    }

    /// <summary>Names (or a regex via <see cref="ExcludeModulesRegex"/>) never adapted.</summary>
    public string[]? ExcludeModules { get => Json["exclude_modules"] is JsonValue ? null : GetStringList("exclude_modules"); set => Json["exclude_modules"] = ToArray(value); }

    /// <summary>A regular expression of module names never adapted.</summary>
    public string? ExcludeModulesRegex { get => Json["exclude_modules"] is JsonValue ? GetString("exclude_modules") : null; set => Json["exclude_modules"] = value; }

    /// <summary>Only adapt layers with these indices.</summary>
    public int[]? LayersToTransform
    {
        get => Json["layers_to_transform"] switch
        {
            null => null,
            JsonArray a => a.Select(n => n!.GetValue<int>()).ToArray(),
            JsonValue v => [v.GetValue<int>()],
            _ => throw new InvalidOperationException("layers_to_transform should be an int or a list of ints"),
        };
        set => Json["layers_to_transform"] = value == null ? null : new JsonArray(value.Select(i => (JsonNode)JsonValue.Create(i)).ToArray());
    }

    /// <summary>Name(s) of the module list holding the layers ("h", "layers").</summary>
    public string[]? LayersPattern { get => GetStringList("layers_pattern"); set => Json["layers_pattern"] = ToArray(value); }

    /// <summary>PEFT's prefix of this method's parameter names ("lora_", "hada_", "lokr_", "ia3_", "vera_lambda_", ...).</summary>
    public abstract string Prefix { get; }

    /// <summary>Which base biases train and are saved with the adapter: "none", "all" or "&lt;method&gt;_only".</summary>
    internal virtual string BiasRule => "none";

    /// <summary>True when the method can wrap <paramref name="baseLayer"/> (an unwrapped Linear, Conv1D, Embedding...).</summary>
    internal abstract bool CanWrap(Module baseLayer);

    /// <summary>A fresh, adapter-less layer of this method around <paramref name="baseLayer"/> (at <paramref name="moduleName"/>).</summary>
    internal abstract TunerLayer NewLayer(Module baseLayer, string moduleName);

    /// <summary>Adds adapter <paramref name="adapter"/> to <paramref name="layer"/> (at module path
    /// <paramref name="moduleName"/>, for rank/alpha patterns); <paramref name="shared"/> holds the tensors made by
    /// <see cref="SharedTensors"/> (looked up per use: a dtype change replaces the tensors).</summary>
    internal abstract void AddTo(TunerLayer layer, string adapter, string moduleName, IReadOnlyDictionary<string, SharedTensorDict> shared);

    /// <summary>Tensors the method keeps once for the whole model (VeRA's projections), by name, made from the
    /// layers it will adapt; stored under <c>base_model.&lt;name&gt;.&lt;adapter&gt;</c>.</summary>
    internal virtual IReadOnlyDictionary<string, Tensor> SharedTensors(IReadOnlyList<Module> targetBaseLayers) => new Dictionary<string, Tensor>();

    /// <summary>Lets the config correct itself once its targets are known (PEFT fixes fan_in_fan_out to the layers'
    /// layout, with a warning, and saves the corrected value).</summary>
    internal virtual void FitTo(IReadOnlyList<Module> targetBaseLayers)
    {
        if (!Json.ContainsKey("fan_in_fan_out")) return;
        if (targetBaseLayers.Any(m => m is Conv1D)) Json["fan_in_fan_out"] = true;
        else if (targetBaseLayers.Any(m => m is Linear)) Json["fan_in_fan_out"] = false;
    }

    /// <summary>The value of the first key K of <paramref name="pattern"/> with <c>(.*\.)?(K)$</c> matching
    /// <paramref name="moduleName"/>, else <paramref name="fallback"/> (PEFT's get_pattern_key).</summary>
    protected static T PatternValue<T>(IReadOnlyDictionary<string, T> pattern, string moduleName, T fallback)
    {
        foreach (var (k, v) in pattern)
            if (Regex.IsMatch(moduleName, $"^(.*\\.)?({k})$")) return v;
        return fallback;
    }

    /// <summary>A JSON object of int values as a dictionary (empty when absent).</summary>
    protected Dictionary<string, int> GetIntMap(string key) =>
        (Json[key] as JsonObject)?.ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>()) ?? new();

    /// <summary>A JSON object of numbers as a dictionary (empty when absent).</summary>
    protected Dictionary<string, double> GetDoubleMap(string key) =>
        (Json[key] as JsonObject)?.ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<double>()) ?? new();

    /// <summary>A dictionary of integers as a JSON object.</summary>
    // One overload per element type, not a generic: JsonValue.Create<T> needs reflection metadata that trimming
    // and native AOT remove (IL2026); the int and double overloads do not.
    protected static JsonObject ToObject(Dictionary<string, int> map) =>
        new(map.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));

    /// <summary>A dictionary of numbers as a JSON object.</summary>
    protected static JsonObject ToObject(Dictionary<string, double> map) =>
        new(map.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));

    /// <summary>Checks the target fields every method shares.</summary>
    protected void ValidateTargets()
    {
        if (TargetModulesRegex != null && LayersToTransform != null)
            throw new InvalidOperationException("layers_to_transform cannot be used when target_modules is a regular expression");
    }
}
