using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// (IA)³ on a Linear or Conv1D, as PEFT: a learned vector <c>ia3_l.&lt;a&gt;</c> scales the layer's output
/// ([out, 1]: y = base(x) ⊙ l) or, for feed-forward modules, its input ([1, in]: y = base(x ⊙ l)). Several active
/// adapters multiply. Merging multiplies W's rows (and the bias) or columns by l; unmerging divides by l + 1e-8, which
/// PEFT warns is inexact.
/// </summary>
public sealed class IA3Layer : TunerLayer
{
    /// <summary>Wraps <paramref name="baseLayer"/>; <paramref name="isFeedforward"/> scales the input instead of the output.</summary>
    public IA3Layer(Module baseLayer, bool isFeedforward) : base(baseLayer)
    {
        IsFeedforward = isFeedforward;
        RegisterModule("ia3_l", new ParameterDict());
    }

    /// <summary>True when l scales the input (feed-forward modules), false when it scales the output.</summary>
    public bool IsFeedforward { get; }

    private ParameterDict L => Child<ParameterDict>("ia3_l");

    /// <inheritdoc/>
    public override IEnumerable<string> Adapters => L.NamedParameters().Select(p => p.Name);

    /// <summary>Adds (or replaces) an adapter: l = 1 (a no-op) when <paramref name="initOnes"/>, else N(0, 1) as PEFT.</summary>
    public void UpdateLayer(string adapter, bool initOnes)
    {
        var l = IsFeedforward ? Tensor.Randn([1, InFeatures]) : Tensor.Randn([OutFeatures, 1]);
        if (initOnes) using (Autograd.NoGrad()) l.FillInPlace(1);
        L.Set(adapter, l);
    }

    /// <inheritdoc/>
    protected override bool IsAdditive => false;

    /// <summary>base(x ⊙ Πl) for feed-forward modules, base(x) ⊙ Πl otherwise.</summary>
    protected override Tensor AdaptedForward(Tensor x, IReadOnlyList<string> adapters)
    {
        if (adapters.Count == 0) return BaseForward(x);
        using (var scaling = FlatProduct(adapters.Select(a => L[a])))
        {
            if (IsFeedforward)
            {
                using var scaled = x.Mul(scaling);
                return BaseForward(scaled);
            }
            using var y = BaseForward(x);
            return y.Mul(scaling);
        }
    }

    /// <inheritdoc/>
    protected override Tensor MergedWeight(string adapter)
    {
        using var w = WeightOutIn();
        using var scaled = w.Mul(L[adapter]);   // l is a column [out, 1] or a row [1, in]: it scales W as [out, in]
        return InBaseLayout(scaled);
    }

    /// <inheritdoc/>
    protected override Tensor UnmergedWeight(string adapter)
    {
        using var w = WeightOutIn();
        using var safe = L[adapter].Add(1e-8); // PEFT's tolerance against division by zero
        using var restored = w.Div(safe);
        return InBaseLayout(restored);
    }

    /// <summary>An output-scaling adapter scales the bias too (b ⊙ l on merge, b / (l + 1e-8) on unmerge).</summary>
    protected override void MergeBias(string adapter, int sign)
    {
        if (IsFeedforward || BaseBias is not { } bias) return;
        using var l = L[adapter].Flatten();
        using var factor = sign > 0 ? l.Contiguous() : l.Add(1e-8);
        using var next = sign > 0 ? bias.Mul(factor) : bias.Div(factor);
        bias.CopyFrom(next);
    }

    /// <summary>W ⊙ l − W in the base weight's layout (what merging changes; (IA)³ itself is multiplicative).</summary>
    public override Tensor DeltaWeight(string adapter)
    {
        using var _ = Autograd.NoGrad();
        using var merged = MergedWeight(adapter);
        return merged.Sub(BaseWeight);
    }

    /// <inheritdoc/>
    protected override void RemoveAdapterState(string adapter) => L.Remove(adapter);
}
