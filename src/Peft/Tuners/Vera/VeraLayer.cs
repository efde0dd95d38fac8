using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// VeRA on a Linear or Conv1D, as PEFT: frozen random projections shared by every layer (<c>base_model.vera_A</c>
/// [r, max in], <c>base_model.vera_B</c> [max out, r], each layer using the top-left slice it needs) and two trained
/// vectors per layer, <c>vera_lambda_d.&lt;a&gt;</c> [r] and <c>vera_lambda_b.&lt;a&gt;</c> [out]:
/// y = base(x) + λ_b ⊙ ((λ_d ⊙ (dropout(x)·Aᵀ))·Bᵀ); ΔW = (λ_b ⊙ B)·(λ_d ⊙ A). No alpha.
/// </summary>
public sealed class VeraLayer : TunerLayer
{
    private readonly Dictionary<string, int> _rank = new();
    private SharedTensorDict? _projA, _projB;

    /// <summary>Wraps <paramref name="baseLayer"/>.</summary>
    public VeraLayer(Module baseLayer) : base(baseLayer)
    {
        RegisterModule("vera_dropout", new ModuleDict<Dropout>());
        RegisterModule("vera_lambda_b", new ParameterDict());
        RegisterModule("vera_lambda_d", new ParameterDict());
    }

    private ParameterDict LambdaB => Child<ParameterDict>("vera_lambda_b");
    private ParameterDict LambdaD => Child<ParameterDict>("vera_lambda_d");

    /// <inheritdoc/>
    public override IEnumerable<string> Adapters => _rank.Keys;

    /// <summary>The rank of <paramref name="adapter"/>.</summary>
    public int Rank(string adapter) => _rank[adapter];

    /// <summary>
    /// Adds (or replaces) an adapter over the shared projections <paramref name="projA"/>/<paramref name="projB"/>.
    /// <paramref name="initWeights"/>: λ_b = 0 and λ_d = <paramref name="dInitial"/> (a no-op); otherwise λ_b = 1 and
    /// λ_d ~ N(0, 1), as PEFT.
    /// </summary>
    public void UpdateLayer(string adapter, SharedTensorDict projA, SharedTensorDict projB, int r, double dropout, bool initWeights, double dInitial)
    {
        if (r <= 0) throw new ArgumentOutOfRangeException(nameof(r), $"rank must be positive, got {r}");
        var (a, b) = (projA[adapter], projB[adapter]);
        if (a.Shape[0] < r || a.Shape[1] < InFeatures || b.Shape[0] < OutFeatures || b.Shape[1] < r)
            throw new ArgumentException($"the shared projections vera_A {Shapes.Format(a.Shape)} / vera_B {Shapes.Format(b.Shape)} are too small for a rank-{r} adapter on a {InFeatures}→{OutFeatures} layer");
        (_projA, _projB) = (projA, projB);
        _rank[adapter] = r;
        Child<ModuleDict<Dropout>>("vera_dropout").Set(adapter, new Dropout(dropout));
        var lb = Tensor.Ones([OutFeatures]);
        var ld = Tensor.Randn([r]);
        if (initWeights)
            using (Autograd.NoGrad())
            {
                lb.FillInPlace(0);
                ld.FillInPlace(dInitial);
            }
        LambdaB.Set(adapter, lb);
        LambdaD.Set(adapter, ld);
    }

    /// <summary>The slices of the shared projections this layer uses: A [r, in], B [out, r] (frozen copies).</summary>
    private (Tensor A, Tensor B) Projections(string adapter)
    {
        int r = _rank[adapter];
        using var a = _projA![adapter].Narrow(0, 0, r);
        using var aIn = a.Narrow(1, 0, InFeatures);
        using var b = _projB![adapter].Narrow(0, 0, OutFeatures);
        using var bR = b.Narrow(1, 0, r);
        return (aIn.Contiguous(), bR.Contiguous());
    }

    /// <inheritdoc/>
    protected override Tensor AddAdapterOutput(string adapter, Tensor x, Tensor result)
    {
        var (a, b) = Projections(adapter);
        using (a)
        using (b)
        {
            using var dx = Child<ModuleDict<Dropout>>("vera_dropout")[adapter].Forward(x);
            using var t = dx.Linear(a);
            using var td = t.Mul(LambdaD[adapter]);
            using var u = td.Linear(b);
            using var ub = u.Mul(LambdaB[adapter]);
            return result.Add(ub);
        }
    }

    /// <inheritdoc/>
    public override Tensor DeltaWeight(string adapter)
    {
        using var _ = Autograd.NoGrad();
        var (a, b) = Projections(adapter);
        using (a)
        using (b)
        {
            using var lb = LambdaB[adapter].Unsqueeze(1);
            using var ld = LambdaD[adapter].Unsqueeze(1);
            using var left = b.Mul(lb);
            using var right = a.Mul(ld);
            using var delta = left.MatMul(right);
            return InBaseLayout(delta);
        }
    }

    /// <inheritdoc/>
    protected override void RemoveAdapterState(string adapter)
    {
        LambdaB.Remove(adapter);
        LambdaD.Remove(adapter);
        Child<ModuleDict<Dropout>>("vera_dropout").Remove(adapter);
        _rank.Remove(adapter);
    }
}
