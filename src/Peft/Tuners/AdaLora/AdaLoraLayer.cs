using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// AdaLoRA's SVD-form layer (PEFT's SVDLinear) on a Linear or Conv1D: bare parameters <c>lora_A.&lt;a&gt;</c> = P
/// [r, in], <c>lora_E.&lt;a&gt;</c> = Λ [r, 1] and <c>lora_B.&lt;a&gt;</c> = Q [out, r], plus the frozen
/// <c>ranknum.&lt;a&gt;</c> (the starting rank, never saved). y = base(x) + dropout(x)·(P⊙Λ)ᵀ·Qᵀ·alpha/(ranknum + 1e-5).
/// The rank allocator prunes by zeroing entries of Λ; a loaded adapter is resized to the kept triplets.
/// </summary>
public sealed class AdaLoraLayer : TunerLayer
{
    private readonly Dictionary<string, double> _alpha = new();

    /// <summary>Wraps <paramref name="baseLayer"/>.</summary>
    public AdaLoraLayer(Module baseLayer) : base(baseLayer)
    {
        RegisterModule("lora_dropout", new ModuleDict<Dropout>());
        foreach (var n in new[] { "lora_A", "lora_B", "lora_E", "ranknum" }) RegisterModule(n, new ParameterDict());
    }

    private ParameterDict P(string name) => Child<ParameterDict>(name);

    /// <inheritdoc/>
    public override IEnumerable<string> Adapters => _alpha.Keys;

    /// <summary>P [r, in].</summary>
    public Tensor A(string adapter) => P("lora_A")[adapter];

    /// <summary>Q [out, r].</summary>
    public Tensor B(string adapter) => P("lora_B")[adapter];

    /// <summary>Λ [r, 1].</summary>
    public Tensor E(string adapter) => P("lora_E")[adapter];

    /// <summary>Current number of triplets held (rows of P).</summary>
    public int Rank(string adapter) => A(adapter).Shape[0];

    /// <summary>alpha / (ranknum + 1e-5): ranknum keeps the starting rank, so pruning never rescales the rest.</summary>
    public double Scaling(string adapter) => _alpha[adapter] / (P("ranknum")[adapter].Item() + 1e-5);

    /// <summary>Adds (or replaces) an adapter of rank <paramref name="r"/> (0 allowed, as PEFT).</summary>
    public void UpdateLayer(string adapter, int r, double alpha, double dropout, bool initWeights)
    {
        if (r < 0) throw new ArgumentOutOfRangeException(nameof(r), $"AdaLoRA rank must be 0 or more, got {r}");
        _alpha[adapter] = alpha > 0 ? alpha : r;
        Child<ModuleDict<Dropout>>("lora_dropout").Set(adapter, new Dropout(dropout));
        var a = Tensor.Randn([r, InFeatures]);
        var e = Tensor.Randn([r, 1]);
        var b = Tensor.Randn([OutFeatures, r]);
        if (initWeights)
            using (Autograd.NoGrad())
            {
                e.FillInPlace(0);
                using (var na = Tensor.Randn([r, InFeatures], null, DType.F32, 0, 0.02)) a.CopyFrom(na);
                using (var nb = Tensor.Randn([OutFeatures, r], null, DType.F32, 0, 0.02)) b.CopyFrom(nb);
            }
        P("lora_A").Set(adapter, a);
        P("lora_E").Set(adapter, e);
        P("lora_B").Set(adapter, b);
        P("ranknum").Set(adapter, Tensor.Full([1], r), requiresGrad: false);
    }

    /// <summary>Keeps only the triplets flagged in <paramref name="keep"/> (a saved rank_pattern), with the scaling
    /// unchanged, as PEFT's resize_modules_by_rank_pattern.</summary>
    public void ResizeTo(string adapter, bool[] keep)
    {
        if (keep.Length != Rank(adapter))
            throw new ArgumentException($"rank_pattern has {keep.Length} flags but the layer holds {Rank(adapter)} triplets (init_r)");
        var idx = Enumerable.Range(0, keep.Length).Where(i => keep[i]).ToArray();
        using var _ = Autograd.NoGrad();
        var a = Take(A(adapter), 0, idx);
        var e = Take(E(adapter), 0, idx);
        var b = Take(B(adapter), 1, idx);
        bool trainable = A(adapter).RequiresGrad;
        foreach (var (name, t) in new[] { ("lora_A", a), ("lora_E", e), ("lora_B", b) })
        {
            t.RequiresGrad = trainable;
            P(name).Set(adapter, t);
        }
    }

    /// <summary>The slices of <paramref name="t"/> at <paramref name="indices"/> along <paramref name="dim"/>, as a new tensor.</summary>
    internal static Tensor Take(Tensor t, int dim, int[] indices)
    {
        if (indices.Length == 0)
        {
            var shape = (int[])t.Shape.Clone();
            shape[dim] = 0;
            return Tensor.Zeros(shape, t.DType, t.Device);
        }
        var slices = indices.Select(i => t.Select(dim, i)).ToList();
        try { return Tensor.Stack(slices, dim); }
        finally { foreach (var s in slices) s.Dispose(); }
    }

    /// <inheritdoc/>
    protected override Tensor AddAdapterOutput(string adapter, Tensor x, Tensor result)
    {
        if (Rank(adapter) == 0) return result.Contiguous();
        using var dx = Child<ModuleDict<Dropout>>("lora_dropout")[adapter].Forward(x);
        using var ae = A(adapter).Mul(E(adapter));
        using var t = dx.Linear(ae);
        using var u = t.Linear(B(adapter));
        using var scaled = u.Mul(Scaling(adapter));
        return result.Add(scaled);
    }

    /// <inheritdoc/>
    public override Tensor DeltaWeight(string adapter)
    {
        using var _ = Autograd.NoGrad();
        if (Rank(adapter) == 0) return Tensor.ZerosLike(BaseWeight);
        using var ae = A(adapter).Mul(E(adapter));
        using var ba = B(adapter).MatMul(ae);
        using var scaled = ba.Mul(Scaling(adapter));
        return InBaseLayout(scaled);
    }

    /// <inheritdoc/>
    protected override void RemoveAdapterState(string adapter)
    {
        foreach (var n in new[] { "lora_A", "lora_B", "lora_E", "ranknum" }) P(n).Remove(adapter);
        Child<ModuleDict<Dropout>>("lora_dropout").Remove(adapter);
        _alpha.Remove(adapter);
    }
}
