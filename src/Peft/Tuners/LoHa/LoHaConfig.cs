using System.Text.Json.Nodes;
using Peft.Nn;

namespace Peft;

/// <summary>
/// PEFT's LoHaConfig (<c>peft_type = "LOHA"</c>): r = 8, alpha = 8, rank_dropout = 0, module_dropout = 0,
/// init_weights = true; ΔW = (W1a·W1b) ⊙ (W2a·W2b) · alpha/r.
/// </summary>
/// <example><code>var config = new LoHaConfig { R = 8, Alpha = 16, TargetModules = ["q_proj", "v_proj"] };</code></example>
public sealed class LoHaConfig : LycorisConfig
{
    /// <summary>A config with PEFT's defaults.</summary>
    public LoHaConfig() : base(CommonDefaults("LOHA")) { }

    internal LoHaConfig(JsonObject json) : base(json) => Validate();

    /// <summary>True: W2b = 0 so the adapter starts as a no-op; false: every factor random.</summary>
    public bool InitWeights { get => GetBool("init_weights", true); set => Json["init_weights"] = value; }

    /// <inheritdoc/>
    public override string Prefix => "hada_";

    /// <inheritdoc/>
    public override PeftConfig Clone() => new LoHaConfig((JsonObject)Json.DeepClone());

    internal override TunerLayer NewLayer(Module baseLayer, string moduleName) => new LoHaLayer(baseLayer);

    internal override void AddTo(TunerLayer layer, string adapter, string moduleName, IReadOnlyDictionary<string, SharedTensorDict> shared)
    {
        var (r, alpha) = RankAndAlphaFor(moduleName);
        ((LoHaLayer)layer).UpdateLayer(adapter, r, alpha, RankDropout, ModuleDropout, InitWeights);
    }
}
