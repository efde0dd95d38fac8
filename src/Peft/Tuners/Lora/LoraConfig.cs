using System.Text.Json.Nodes;
using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// PEFT's LoraConfig (<c>peft_type = "LORA"</c>) with the same field names and defaults: r = 8, lora_alpha = 8,
/// lora_dropout = 0, init_lora_weights = true, bias = "none".
/// </summary>
/// <example><code>var config = new LoraConfig { R = 8, LoraAlpha = 32, LoraDropout = 0.05, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" };</code></example>
public sealed class LoraConfig : TunerConfig
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
        get => GetBoolOrString("init_lora_weights");
        set => SetBoolOrString("init_lora_weights", value);
    }

    /// <summary>Per-module rank overrides: pattern → r.</summary>
    public Dictionary<string, int> RankPattern
    {
        get => GetIntMap("rank_pattern");
        set => Json["rank_pattern"] = ToObject(value);
    }

    /// <summary>Per-module alpha overrides: pattern → alpha.</summary>
    public Dictionary<string, double> AlphaPattern
    {
        get => GetDoubleMap("alpha_pattern");
        set => Json["alpha_pattern"] = ToObject(value);
    }

    /// <inheritdoc/>
    public override PeftConfig Clone() => new LoraConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        if (R <= 0) throw new InvalidOperationException($"r must be positive, got {R}");
        if (LoraDropout is < 0 or >= 1) throw new InvalidOperationException($"lora_dropout must be in [0, 1), got {LoraDropout}");
        if (Bias is not ("none" or "all" or "lora_only")) throw new InvalidOperationException($"bias must be 'none', 'all' or 'lora_only', got '{Bias}'");
        ValidateTargets();
        var init = InitLoraWeights;
        if (init is not ("true" or "false" or "gaussian" or "pissa" or "olora") && !System.Text.RegularExpressions.Regex.IsMatch(init, @"^pissa_niter_\d+$"))
            throw new NotSupportedException($"init_lora_weights '{init}' is not supported yet (true, false, gaussian, pissa, pissa_niter_K, olora)");
    }

    /// <summary>(rank, alpha) for a module, honouring rank_pattern/alpha_pattern (PEFT's get_pattern_key).</summary>
    public (int Rank, double Alpha) RankAndAlphaFor(string moduleName) =>
        (PatternValue(RankPattern, moduleName, R), PatternValue(AlphaPattern, moduleName, LoraAlpha));

    /// <inheritdoc/>
    public override string Prefix => "lora_";

    internal override string BiasRule => Bias;

    internal override bool CanWrap(Module baseLayer) => baseLayer is Linear or Conv1D or QuantizedLinear or Embedding;

    internal override TunerLayer NewLayer(Module baseLayer, string moduleName) => LoraLayer.For(baseLayer);

    internal override void AddTo(TunerLayer layer, string adapter, string moduleName, IReadOnlyDictionary<string, SharedTensorDict> shared)
    {
        var (r, alpha) = RankAndAlphaFor(moduleName);
        ((LoraLayer)layer).UpdateLayer(adapter, r, alpha, LoraDropout, InitLoraWeights, UseRslora, LoraBias, UseDora);
    }
}
