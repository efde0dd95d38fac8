using System.Text.Json.Nodes;
using Peft.Nn;

namespace Peft;

/// <summary>Fields LoHa and LoKr share (PEFT's LycorisConfig): r, alpha, rank_dropout, module_dropout, init_weights,
/// use_effective_conv2d and the rank/alpha patterns.</summary>
public abstract class LycorisConfig : TunerConfig
{
    /// <summary>Creates a config over <paramref name="json"/>.</summary>
    protected LycorisConfig(JsonObject json) : base(json) { }

    /// <summary>The fields and defaults LoHa and LoKr both write.</summary>
    protected static JsonObject CommonDefaults(string peftType) => new()
    {
        ["alpha"] = 8, ["alpha_pattern"] = new JsonObject(), ["auto_mapping"] = null, ["base_model_name_or_path"] = null,
        ["exclude_modules"] = null, ["inference_mode"] = false, ["init_weights"] = true, ["layers_pattern"] = null,
        ["layers_to_transform"] = null, ["module_dropout"] = PythonJson.Float(0.0), ["modules_to_save"] = null, ["peft_type"] = peftType,
        ["r"] = 8, ["rank_dropout"] = PythonJson.Float(0.0), ["rank_pattern"] = new JsonObject(), ["revision"] = null,
        ["target_modules"] = null, ["task_type"] = null, ["use_effective_conv2d"] = false,
    };

    /// <summary>Rank.</summary>
    public int R { get => (int)GetDouble("r", 8); set => Json["r"] = value; }

    /// <summary>Scaling numerator: s = alpha / r.</summary>
    public double Alpha { get => GetDouble("alpha", 8); set => Json["alpha"] = value == Math.Floor(value) ? JsonValue.Create((long)value) : PythonJson.Float(value); }

    /// <summary>Probability of dropping a row of ΔW in training.</summary>
    public double RankDropout { get => GetDouble("rank_dropout", 0); set => Json["rank_dropout"] = PythonJson.Float(value); }

    /// <summary>Probability of skipping the whole adapter in a training forward.</summary>
    public double ModuleDropout { get => GetDouble("module_dropout", 0); set => Json["module_dropout"] = PythonJson.Float(value); }

    /// <summary>Per-module rank overrides: pattern → r.</summary>
    public Dictionary<string, int> RankPattern { get => GetIntMap("rank_pattern"); set => Json["rank_pattern"] = ToObject(value); }

    /// <summary>Per-module alpha overrides: pattern → alpha.</summary>
    public Dictionary<string, double> AlphaPattern { get => GetDoubleMap("alpha_pattern"); set => Json["alpha_pattern"] = ToObject(value); }

    /// <summary>(rank, alpha) for a module, honouring rank_pattern/alpha_pattern.</summary>
    public (int Rank, double Alpha) RankAndAlphaFor(string moduleName) =>
        (PatternValue(RankPattern, moduleName, R), PatternValue(AlphaPattern, moduleName, Alpha));

    /// <summary>Convolutions are the only layers use_effective_conv2d changes; the models here have none.</summary>
    internal override bool CanWrap(Module baseLayer) => baseLayer is Linear or Conv1D;

    /// <inheritdoc/>
    public override void Validate()
    {
        if (R <= 0) throw new InvalidOperationException($"r must be positive, got {R}");
        if (RankDropout is < 0 or >= 1) throw new InvalidOperationException($"rank_dropout must be in [0, 1), got {RankDropout}");
        if (ModuleDropout is < 0 or > 1) throw new InvalidOperationException($"module_dropout must be in [0, 1], got {ModuleDropout}");
        ValidateTargets();
    }
}
