using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// LoHa (low-rank Hadamard product) on a Linear or Conv1D, laid out as PEFT: <c>hada_w1_a.&lt;a&gt;</c> [out, r],
/// <c>hada_w1_b.&lt;a&gt;</c> [r, in], <c>hada_w2_a.&lt;a&gt;</c> [out, r], <c>hada_w2_b.&lt;a&gt;</c> [r, in];
/// ΔW = (W1a·W1b) ⊙ (W2a·W2b) · alpha/r. PEFT's init: all factors kaiming-uniform except W2b = 0 (the layer starts as
/// the base); init_weights = false makes every factor random.
/// </summary>
public sealed class LoHaLayer : LycorisLayer
{
    private static readonly string[] Names = ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"];

    /// <summary>Wraps <paramref name="baseLayer"/>.</summary>
    public LoHaLayer(Module baseLayer) : base(baseLayer)
    {
        foreach (var n in Names) RegisterModule(n, new ParameterDict());
    }

    private ParameterDict P(string name) => Child<ParameterDict>(name);

    /// <inheritdoc/>
    public override IEnumerable<string> Adapters => P("hada_w1_a").NamedParameters().Select(p => p.Name);

    /// <summary>Adds (or replaces) an adapter.</summary>
    public void UpdateLayer(string adapter, int r, double alpha, double rankDropout, double moduleDropout, bool initWeights)
    {
        SetHyper(adapter, r, alpha, rankDropout, moduleDropout, scaleRankDropout: true); // LoHa always rescales kept rows
        P("hada_w1_a").Set(adapter, KaimingUniform(OutFeatures, r));
        P("hada_w1_b").Set(adapter, KaimingUniform(r, InFeatures));
        P("hada_w2_a").Set(adapter, KaimingUniform(OutFeatures, r));
        var w2b = KaimingUniform(r, InFeatures);
        if (initWeights) using (Autograd.NoGrad()) w2b.FillInPlace(0);
        P("hada_w2_b").Set(adapter, w2b);
    }

    /// <inheritdoc/>
    /// <remarks>One fused op (<see cref="Tensor.LowRankHadamard"/>): neither product W1a·W1b nor W2a·W2b is stored.</remarks>
    protected override Tensor ScaledDelta(string adapter) =>
        Tensor.LowRankHadamard(P("hada_w1_a")[adapter], P("hada_w1_b")[adapter], P("hada_w2_a")[adapter], P("hada_w2_b")[adapter], Scaling(adapter));

    /// <inheritdoc/>
    protected override bool FoldsIntoBaseWeight => true;

    /// <inheritdoc/>
    protected override void RemoveFactors(string adapter) => RemoveFrom(adapter, Names);
}
