using System.Text.Json.Nodes;
using Peft.Nn;

namespace Peft;

/// <summary>
/// PEFT's IA3Config (<c>peft_type = "IA3"</c>): target_modules, feedforward_modules (a subset of the targets whose
/// input, not output, is scaled), fan_in_fan_out, init_ia3_weights = true (l = 1).
/// </summary>
/// <example><code>var config = new IA3Config { TargetModules = ["k_proj", "v_proj", "down_proj"], FeedforwardModules = ["down_proj"] };</code></example>
public sealed class IA3Config : TunerConfig
{
    /// <summary>A config with PEFT's defaults.</summary>
    public IA3Config() : base(new JsonObject
    {
        ["auto_mapping"] = null, ["base_model_name_or_path"] = null, ["exclude_modules"] = null, ["fan_in_fan_out"] = false,
        ["feedforward_modules"] = null, ["inference_mode"] = false, ["init_ia3_weights"] = true, ["modules_to_save"] = null,
        ["peft_type"] = "IA3", ["revision"] = null, ["target_modules"] = null, ["task_type"] = null,
    }) { }

    internal IA3Config(JsonObject json) : base(json) => Validate();

    /// <summary>Targets whose input is scaled (names/suffixes as target_modules).</summary>
    public string[]? FeedforwardModules
    {
        get => Json["feedforward_modules"] is JsonValue ? null : GetStringList("feedforward_modules");
        set => Json["feedforward_modules"] = ToArray(value);
    }

    /// <summary>A regular expression of feed-forward module names (PEFT's string form).</summary>
    public string? FeedforwardModulesRegex
    {
        get => Json["feedforward_modules"] is JsonValue ? GetString("feedforward_modules") : null;
        set => Json["feedforward_modules"] = value;
    }

    /// <summary>True when the base layers store [in, out] weights (corrected to the layers found).</summary>
    public bool FanInFanOut { get => GetBool("fan_in_fan_out", false); set => Json["fan_in_fan_out"] = value; }

    /// <summary>l = 1 (the adapter starts as a no-op); false draws l ~ N(0, 1).</summary>
    public bool InitIa3Weights { get => GetBool("init_ia3_weights", true); set => Json["init_ia3_weights"] = value; }

    /// <inheritdoc/>
    public override string Prefix => "ia3_";

    /// <inheritdoc/>
    public override PeftConfig Clone() => new IA3Config((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        ValidateTargets();
        if (FeedforwardModules is { } ff && TargetModules is { } targets && ff.Except(targets).ToList() is { Count: > 0 } extra)
            throw new InvalidOperationException($"feedforward_modules must be a subset of target_modules; not targeted: {string.Join(", ", extra)}");
    }

    /// <summary>Whether the module at <paramref name="moduleName"/> is a feed-forward module (PEFT: a suffix of the
    /// name for a list, a full match for a regex).</summary>
    public bool IsFeedforward(string moduleName) =>
        FeedforwardModulesRegex is { } regex ? System.Text.RegularExpressions.Regex.IsMatch(moduleName, $"^(?:{regex})$")
        : (FeedforwardModules ?? []).Any(f => moduleName.EndsWith(f, StringComparison.Ordinal));

    internal override bool CanWrap(Module baseLayer) => baseLayer is Linear or Conv1D or QuantizedLinear;

    internal override TunerLayer NewLayer(Module baseLayer, string moduleName) => new IA3Layer(baseLayer, IsFeedforward(moduleName));

    internal override void AddTo(TunerLayer layer, string adapter, string moduleName, IReadOnlyDictionary<string, SharedTensorDict> shared)
    {
        var ia3 = (IA3Layer)layer;
        if (ia3.IsFeedforward != IsFeedforward(moduleName))
            throw new ArgumentException($"(IA)³ adapters on one layer must agree on whether it is a feed-forward module (this one says {IsFeedforward(moduleName)})");
        ia3.UpdateLayer(adapter, InitIa3Weights);
    }
}
