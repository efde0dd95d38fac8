using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// What LoHa and LoKr share (PEFT's LycorisLayer): rank, alpha, scaling = alpha/r, rank dropout (training drops rows
/// of ΔW) and module dropout (training skips the whole adapter with probability p); y = base(x) + x·ΔWᵀ.
/// </summary>
public abstract class LycorisLayer : TunerLayer
{
    private readonly Dictionary<string, (int Rank, double Alpha, double RankDropout, double ModuleDropout, bool ScaleRankDropout)> _hyper = new();

    /// <summary>Wraps a Linear or GPT-2 Conv1D (PEFT itself wraps nn.Linear and convolutions; Conv1D is handled as a
    /// transposed Linear here).</summary>
    protected LycorisLayer(Module baseLayer) : base(baseLayer) { }

    /// <summary>The rank of <paramref name="adapter"/>.</summary>
    public int Rank(string adapter) => _hyper[adapter].Rank;

    /// <summary>alpha / r.</summary>
    public double Scaling(string adapter) => _hyper[adapter].Alpha / _hyper[adapter].Rank;

    /// <summary>Records the adapter's hyper-parameters (before its factors are created).</summary>
    protected void SetHyper(string adapter, int r, double alpha, double rankDropout, double moduleDropout, bool scaleRankDropout)
    {
        if (r <= 0) throw new ArgumentOutOfRangeException(nameof(r), $"rank must be positive, got {r}");
        if (rankDropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(rankDropout), $"rank_dropout must be in [0, 1), got {rankDropout}");
        if (moduleDropout is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(moduleDropout), $"module_dropout must be in [0, 1], got {moduleDropout}");
        _hyper[adapter] = (r, alpha, rankDropout, moduleDropout, scaleRankDropout);
    }

    /// <summary>s·ΔW as [out, in], recorded by autograd (gradients reach the factors).</summary>
    protected abstract Tensor ScaledDelta(string adapter);

    /// <inheritdoc/>
    public override Tensor DeltaWeight(string adapter)
    {
        using var _ = Autograd.NoGrad();
        using var d = ScaledDelta(adapter);
        return InBaseLayout(d);
    }

    /// <inheritdoc/>
    protected override Tensor AddAdapterOutput(string adapter, Tensor x, Tensor result)
    {
        var h = _hyper[adapter];
        if (SkippedByModuleDropout(h.ModuleDropout)) return result.Contiguous();
        using var delta = IsTraining && h.RankDropout > 0 ? DeltaWithRankDropout(adapter, h.RankDropout, h.ScaleRankDropout) : null;
        using var change = delta != null ? x.Linear(delta) : DeltaTimes(adapter, x);
        return result.Add(change);
    }

    /// <summary>Training's module dropout: true when this pass skips the adapter (PEFT applies it when rand > p).</summary>
    private bool SkippedByModuleDropout(double p)
    {
        if (!IsTraining || p <= 0) return false;
        using var u = Tensor.Rand([1]);
        return u.Item() < p;
    }

    /// <summary>
    /// True for methods whose ΔW is built dense on every pass anyway (LoHa): the forward then folds the active adapters
    /// into the weight, y = x·(W + Σ s·ΔW)ᵀ + b — one product instead of the base's plus one per adapter, and one
    /// input-gradient product in backward — which equals PEFT's base(x) + Σ x·ΔWᵀ up to F32 rounding (as a merged
    /// layer does). Only for an F32 Linear or Conv1D base outside autocast: rounding W + ΔW to 16 bits would lose ΔW.
    /// </summary>
    protected virtual bool FoldsIntoBaseWeight => false;

    /// <inheritdoc/>
    protected override Tensor AdaptedForward(Tensor x, IReadOnlyList<string> adapters)
    {
        if (!FoldsIntoBaseWeight || adapters.Count == 0 || Autocast.Current != null || BaseLayer is not (Linear or Conv1D)
            || BaseWeight.DType != DType.F32 || x.DType != DType.F32)
            return base.AdaptedForward(x, adapters);
        // The same random draws in the same order as the unfolded path: per adapter, module dropout, then rank dropout.
        Tensor? sum = null;
        foreach (var name in adapters)
        {
            var h = _hyper[name];
            if (SkippedByModuleDropout(h.ModuleDropout)) continue;
            var delta = IsTraining && h.RankDropout > 0 ? DeltaWithRankDropout(name, h.RankDropout, h.ScaleRankDropout) : ScaledDelta(name);
            if (sum == null) { sum = delta; continue; }
            using (delta)
            using (var previous = sum)
                sum = previous.Add(delta);
        }
        if (sum == null) return BaseForward(x);
        using (sum)
        using (var layout = FanInFanOut ? sum.Transpose(0, 1) : null)   // Conv1D stores W as [in, out]
        using (var weight = BaseWeight.Add(layout ?? sum))
        {
            if (BaseLayer is Linear linear) return x.Linear(weight, linear.Bias);
            using var y = x.MatMul(weight);
            return BaseBias is { } bias ? y.Add(bias) : y.Contiguous();
        }
    }

    /// <summary>x·(s·ΔW)ᵀ; methods with a cheaper factored form override this.</summary>
    protected virtual Tensor DeltaTimes(string adapter, Tensor x)
    {
        using var delta = ScaledDelta(adapter);
        return x.Linear(delta);
    }

    /// <summary>s·ΔW with whole output rows dropped with probability <paramref name="p"/> (and the kept rows divided by
    /// the kept fraction when <paramref name="rescale"/>), as PEFT's rank dropout.</summary>
    private Tensor DeltaWithRankDropout(string adapter, double p, bool rescale)
    {
        using var u = Tensor.Rand([OutFeatures]);
        var keep = u.ToFloatArray().Select(v => v > p ? 1f : 0f).ToArray();
        float mean = keep.Average();
        if (rescale && mean > 0) for (int i = 0; i < keep.Length; i++) keep[i] /= mean;
        using var hostMask = Tensor.FromArray(keep, [OutFeatures, 1]);
        using var delta = ScaledDelta(adapter);
        using var mask = hostMask.To(delta.Device);   // drawn on the host (the CPU's generator stream), applied where ΔW is
        return delta.Mul(mask);
    }

    /// <summary>torch's kaiming_uniform_(a=√5) on a [rows, cols] tensor: U(±1/√cols).</summary>
    protected static Tensor KaimingUniform(int rows, int cols)
    {
        double bound = 1.0 / Math.Sqrt(cols);
        return Tensor.Rand([rows, cols], null, DType.F32, -bound, bound);
    }

    /// <summary>Drops the adapter's factors.</summary>
    protected abstract void RemoveFactors(string adapter);

    /// <inheritdoc/>
    protected sealed override void RemoveAdapterState(string adapter)
    {
        RemoveFactors(adapter);
        _hyper.Remove(adapter);
    }

    /// <summary>Removes <paramref name="adapter"/> from every named parameter dictionary that holds it.</summary>
    protected void RemoveFrom(string adapter, params string[] dicts)
    {
        foreach (var d in dicts)
        {
            var dict = Child<ParameterDict>(d);
            if (dict.Contains(adapter)) dict.Remove(adapter);
        }
    }
}
