using System.Text.Json.Nodes;

namespace Peft;

/// <summary>
/// PEFT's LoraConfig (<c>peft_type = "LORA"</c>) with the same field names and defaults: r = 8, lora_alpha = 8,
/// lora_dropout = 0, init_lora_weights = true, bias = "none".
/// </summary>
/// <example><code>var config = new LoraConfig { R = 8, LoraAlpha = 32, LoraDropout = 0.05, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" };</code></example>
public sealed class LoraConfig : PeftConfig
{
    /// <summary>A config with PEFT's defaults for every field PEFT writes.</summary>
    public LoraConfig() : base(Defaults()) { }

    internal LoraConfig(JsonObject json) : base(json) => Validate();

    private static JsonObject Defaults() => new()
    {
        ["alpha_pattern"] = new JsonObject(), ["auto_mapping"] = null, ["base_model_name_or_path"] = null, ["bias"] = "none",
        ["exclude_modules"] = null, ["fan_in_fan_out"] = false, ["inference_mode"] = false, ["init_lora_weights"] = true,
        ["layer_replication"] = null, ["layers_pattern"] = null, ["layers_to_transform"] = null, ["lora_alpha"] = 8, ["lora_bias"] = false,
        ["lora_dropout"] = PythonJson.Float(0.0), ["modules_to_save"] = null, ["peft_type"] = "LORA", ["r"] = 8, ["rank_pattern"] = new JsonObject(),
        ["revision"] = null, ["target_modules"] = null, ["task_type"] = null, ["use_dora"] = false, ["use_rslora"] = false,
    };

    /// <summary>Rank.</summary>
    public int R { get => (int)GetDouble("r", 8); set => Json["r"] = value; }

    /// <summary>Scaling numerator: s = lora_alpha / r (or / √r with rsLoRA).</summary>
    public double LoraAlpha { get => GetDouble("lora_alpha", 8); set => Json["lora_alpha"] = value == Math.Floor(value) ? JsonValue.Create((long)value) : PythonJson.Float(value); }

    /// <summary>Dropout on the adapter's input.</summary>
    public double LoraDropout { get => GetDouble("lora_dropout", 0); set => Json["lora_dropout"] = PythonJson.Float(value); }

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

    /// <summary>True when the base layer stores its weight as [in, out] (GPT-2's Conv1D).</summary>
    public bool FanInFanOut { get => GetBool("fan_in_fan_out", false); set => Json["fan_in_fan_out"] = value; }

    /// <summary>"none", "all" or "lora_only": which biases train.</summary>
    public string Bias { get => GetString("bias") ?? "none"; set => Json["bias"] = value; }

    /// <summary>rsLoRA: s = lora_alpha / √r.</summary>
    public bool UseRslora { get => GetBool("use_rslora", false); set => Json["use_rslora"] = value; }

    /// <summary>DoRA (weight-decomposed LoRA).</summary>
    public bool UseDora { get => GetBool("use_dora", false); set => Json["use_dora"] = value; }

    /// <summary>A bias on lora_B.</summary>
    public bool LoraBias { get => GetBool("lora_bias", false); set => Json["lora_bias"] = value; }

    /// <summary>"true" (kaiming A, zero B), "false" (both random: a non-trivial adapter), "gaussian", "pissa", "olora", ...</summary>
    public string InitLoraWeights
    {
        get => Json["init_lora_weights"] switch
        {
            null => "true",
            JsonValue v when v.TryGetValue<bool>(out var b) => b ? "true" : "false",
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            var n => throw new InvalidOperationException($"init_lora_weights should be a bool or a string, got {n.ToJsonString()}"),
        };
        set => Json["init_lora_weights"] = value switch { "true" => true, "false" => false, _ => value };
    }

    /// <summary>Per-module rank overrides: pattern → r.</summary>
    public Dictionary<string, int> RankPattern
    {
        get => (Json["rank_pattern"] as JsonObject)?.ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>()) ?? new();
        set => Json["rank_pattern"] = new JsonObject(value.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
    }

    /// <summary>Per-module alpha overrides: pattern → alpha.</summary>
    public Dictionary<string, double> AlphaPattern
    {
        get => (Json["alpha_pattern"] as JsonObject)?.ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<double>()) ?? new();
        set => Json["alpha_pattern"] = new JsonObject(value.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
    }

    /// <inheritdoc/>
    public override PeftConfig Clone() => new LoraConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        if (R <= 0) throw new InvalidOperationException($"r must be positive, got {R}");
        if (LoraDropout is < 0 or >= 1) throw new InvalidOperationException($"lora_dropout must be in [0, 1), got {LoraDropout}");
        if (Bias is not ("none" or "all" or "lora_only")) throw new InvalidOperationException($"bias must be 'none', 'all' or 'lora_only', got '{Bias}'");
        if (TargetModulesRegex != null && LayersToTransform != null)
            throw new InvalidOperationException("layers_to_transform cannot be used when target_modules is a regular expression");
        var init = InitLoraWeights;
        if (init is not ("true" or "false" or "gaussian" or "pissa" or "olora") && !System.Text.RegularExpressions.Regex.IsMatch(init, @"^pissa_niter_\d+$"))
            throw new NotSupportedException($"init_lora_weights '{init}' is not supported yet (true, false, gaussian, pissa, pissa_niter_K, olora)");
    }

    /// <summary>(rank, alpha) for a module, honouring rank_pattern/alpha_pattern: the first key K with
    /// <c>(.*\.)?(K)$</c> matching the module name wins, as PEFT's get_pattern_key.</summary>
    public (int Rank, double Alpha) RankAndAlphaFor(string moduleName)
    {
        int r = R;
        double a = LoraAlpha;
        foreach (var (k, v) in RankPattern)
            if (System.Text.RegularExpressions.Regex.IsMatch(moduleName, $"^(.*\\.)?({k})$")) { r = v; break; }
        foreach (var (k, v) in AlphaPattern)
            if (System.Text.RegularExpressions.Regex.IsMatch(moduleName, $"^(.*\\.)?({k})$")) { a = v; break; }
        return (r, a);
    }
}
