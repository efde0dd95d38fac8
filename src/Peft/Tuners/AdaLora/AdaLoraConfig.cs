using System.Text.Json.Nodes;
using Peft.Nn;

namespace Peft;

/// <summary>
/// PEFT's AdaLoraConfig (<c>peft_type = "ADALORA"</c>): LoRA in SVD form (ΔW = P·diag(E)·Q) whose rank budget is
/// redistributed during training. init_r = 12, target_r = 8, tinit = 0, tfinal = 0, deltaT = 1, beta1 = beta2 = 0.85,
/// orth_reg_weight = 0.5, total_step (required); r is ignored; rank_pattern holds the kept triplets per layer once
/// <see cref="PeftModel.UpdateAndAllocate"/> has masked some.
/// </summary>
/// <example><code>var config = new AdaLoraConfig { InitR = 12, TargetR = 4, TotalStep = 1000, Tinit = 100, Tfinal = 200, TargetModules = ["q_proj", "v_proj"] };</code></example>
public sealed class AdaLoraConfig : TunerConfig
{
    /// <summary>A config with PEFT's defaults (total_step must still be set).</summary>
    public AdaLoraConfig() : base(new JsonObject
    {
        ["alpha_pattern"] = new JsonObject(), ["auto_mapping"] = null, ["base_model_name_or_path"] = null, ["beta1"] = PythonJson.Float(0.85),
        ["beta2"] = PythonJson.Float(0.85), ["bias"] = "none", ["deltaT"] = 1, ["exclude_modules"] = null, ["fan_in_fan_out"] = false,
        ["inference_mode"] = false, ["init_lora_weights"] = true, ["init_r"] = 12, ["layers_pattern"] = null, ["layers_to_transform"] = null,
        ["lora_alpha"] = 8, ["lora_dropout"] = PythonJson.Float(0.0), ["modules_to_save"] = null, ["orth_reg_weight"] = PythonJson.Float(0.5),
        ["peft_type"] = "ADALORA", ["r"] = 8, ["rank_pattern"] = null, ["revision"] = null, ["target_modules"] = null, ["target_r"] = 8,
        ["task_type"] = null, ["tfinal"] = 0, ["tinit"] = 0, ["total_step"] = null, ["use_dora"] = false, ["use_rslora"] = false,
    }) { }

    internal AdaLoraConfig(JsonObject json) : base(json) => Validate();

    /// <summary>Starting rank of every layer.</summary>
    public int InitR { get => (int)GetDouble("init_r", 12); set => Json["init_r"] = value; }

    /// <summary>Average rank per layer at the end of the budget schedule.</summary>
    public int TargetR { get => (int)GetDouble("target_r", 8); set => Json["target_r"] = value; }

    /// <summary>Warm-up steps before any masking.</summary>
    public int Tinit { get => (int)GetDouble("tinit", 0); set => Json["tinit"] = value; }

    /// <summary>Final steps trained with the budget fixed.</summary>
    public int Tfinal { get => (int)GetDouble("tfinal", 0); set => Json["tfinal"] = value; }

    /// <summary>Steps between two budget allocations.</summary>
    public int DeltaT { get => (int)GetDouble("deltaT", 1); set => Json["deltaT"] = value; }

    /// <summary>EMA factor of the sensitivity.</summary>
    public double Beta1 { get => GetDouble("beta1", 0.85); set => Json["beta1"] = PythonJson.Float(value); }

    /// <summary>EMA factor of the uncertainty.</summary>
    public double Beta2 { get => GetDouble("beta2", 0.85); set => Json["beta2"] = PythonJson.Float(value); }

    /// <summary>Weight of the orthogonality regulariser added to the loss.</summary>
    public double OrthRegWeight { get => GetDouble("orth_reg_weight", 0.5); set => Json["orth_reg_weight"] = PythonJson.Float(value); }

    /// <summary>Total training steps (required).</summary>
    public int? TotalStep
    {
        get => Json["total_step"] == null ? null : (int)GetDouble("total_step", 0);
        set => Json["total_step"] = value;
    }

    /// <summary>Scaling numerator: s = lora_alpha / (current rank number + 1e-5).</summary>
    public double LoraAlpha { get => GetDouble("lora_alpha", 8); set => Json["lora_alpha"] = value == Math.Floor(value) ? JsonValue.Create((long)value) : PythonJson.Float(value); }

    /// <summary>Dropout on the adapter's input.</summary>
    public double LoraDropout { get => GetDouble("lora_dropout", 0); set => Json["lora_dropout"] = PythonJson.Float(value); }

    /// <summary>True: E = 0 and P, Q ~ N(0, 0.02) (a no-op at init); false: all N(0, 1).</summary>
    public bool InitLoraWeights { get => GetBool("init_lora_weights", true); set => Json["init_lora_weights"] = value; }

    /// <summary>"none", "all" or "lora_only".</summary>
    public string Bias { get => GetString("bias") ?? "none"; set => Json["bias"] = value; }

    /// <summary>Kept triplets per layer (module path + ".lora_E" → one flag per rank), or null before any masking.</summary>
    public Dictionary<string, bool[]>? RankPattern
    {
        get => Json["rank_pattern"] is JsonObject o
            ? o.ToDictionary(kv => kv.Key, kv => (kv.Value as JsonArray ?? throw new InvalidOperationException($"rank_pattern['{kv.Key}'] should be a list of booleans"))
                .Select(n => n!.GetValue<bool>()).ToArray())
            : null;
        set => Json["rank_pattern"] = value == null ? null
            : new JsonObject(value.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)new JsonArray(kv.Value.Select(b => (JsonNode)JsonValue.Create(b)).ToArray()))));
    }

    /// <inheritdoc/>
    public override string Prefix => "lora_";

    internal override string BiasRule => Bias;

    /// <inheritdoc/>
    public override PeftConfig Clone() => new AdaLoraConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        ValidateTargets();
        if (GetBool("use_dora", false)) throw new InvalidOperationException("AdaLoRA does not support DoRA");
        if (TotalStep is not > 0) throw new InvalidOperationException("AdaLoRA needs total_step > 0 (the length of training, for the rank budget schedule)");
        if (Tinit >= TotalStep - Tfinal)
            throw new InvalidOperationException($"the schedule leaves no budgeting phase: tinit ({Tinit}) must be below total_step − tfinal ({TotalStep} − {Tfinal})");
        if (InitR < 0 || TargetR < 0) throw new InvalidOperationException($"init_r and target_r must not be negative (init_r = {InitR}, target_r = {TargetR})");
        if (DeltaT < 1) throw new InvalidOperationException($"deltaT must be at least 1, got {DeltaT}");
        if (Beta1 is <= 0 or >= 1 || Beta2 is <= 0 or >= 1) throw new InvalidOperationException($"beta1 and beta2 must lie in (0, 1), got {Beta1} and {Beta2}");
        if (Bias is not ("none" or "all" or "lora_only")) throw new InvalidOperationException($"bias must be 'none', 'all' or 'lora_only', got '{Bias}'");
        _ = RankPattern;
    }

    internal override bool CanWrap(Module baseLayer) => baseLayer is Linear or Conv1D;

    internal override TunerLayer NewLayer(Module baseLayer, string moduleName) => new AdaLoraLayer(baseLayer);

    internal override void AddTo(TunerLayer layer, string adapter, string moduleName, IReadOnlyDictionary<string, SharedTensorDict> shared) =>
        ((AdaLoraLayer)layer).UpdateLayer(adapter, InitR, LoraAlpha, LoraDropout, InitLoraWeights);
}
