using System.Text.Json.Nodes;
using Peft.Nn;

namespace Peft;

/// <summary>
/// PEFT's LoKrConfig (<c>peft_type = "LOKR"</c>): r = 8, alpha = 8, decompose_both = false, decompose_factor = −1,
/// rank_dropout_scale = false, init_weights = true (or "lycoris"); ΔW = kron(W1, W2)·alpha/r.
/// </summary>
/// <example><code>var config = new LoKrConfig { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"], DecomposeBoth = true };</code></example>
public sealed class LoKrConfig : LycorisConfig
{
    /// <summary>A config with PEFT's defaults.</summary>
    public LoKrConfig() : base(Defaults()) { }

    internal LoKrConfig(JsonObject json) : base(json) => Validate();

    private static JsonObject Defaults()
    {
        var json = CommonDefaults("LOKR");
        json["decompose_both"] = false;
        json["decompose_factor"] = -1;
        json["rank_dropout_scale"] = false;
        return json;
    }

    /// <summary>Also factor W1 into two rank-r matrices (when r is small enough).</summary>
    public bool DecomposeBoth { get => GetBool("decompose_both", false); set => Json["decompose_both"] = value; }

    /// <summary>Preferred size of the smaller Kronecker factor (−1: near the square root).</summary>
    public int DecomposeFactor { get => (int)GetDouble("decompose_factor", -1); set => Json["decompose_factor"] = value; }

    /// <summary>Rescale the kept rows by the kept fraction under rank dropout.</summary>
    public bool RankDropoutScale { get => GetBool("rank_dropout_scale", false); set => Json["rank_dropout_scale"] = value; }

    /// <summary>"true" (W1 = 0), "lycoris" (W2 = 0) or "false" (all random).</summary>
    public string InitWeights
    {
        get => GetBoolOrString("init_weights");
        set => SetBoolOrString("init_weights", value);
    }

    /// <inheritdoc/>
    public override string Prefix => "lokr_";

    /// <inheritdoc/>
    public override PeftConfig Clone() => new LoKrConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        base.Validate();
        if (InitWeights is not ("true" or "false" or "lycoris")) throw new InvalidOperationException($"init_weights must be true, false or \"lycoris\", got '{InitWeights}'");
        if (DecomposeFactor == 0 || DecomposeFactor < -1) throw new InvalidOperationException($"decompose_factor must be −1 or positive, got {DecomposeFactor}");
    }

    internal override TunerLayer NewLayer(Module baseLayer, string moduleName) => new LoKrLayer(baseLayer);

    internal override void AddTo(TunerLayer layer, string adapter, string moduleName, IReadOnlyDictionary<string, SharedTensorDict> shared)
    {
        var (r, alpha) = RankAndAlphaFor(moduleName);
        ((LoKrLayer)layer).UpdateLayer(adapter, r, alpha, RankDropout, ModuleDropout, RankDropoutScale, InitWeights, DecomposeBoth, DecomposeFactor);
    }
}
