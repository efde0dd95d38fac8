using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// LoKr (low-rank Kronecker product) on a Linear or Conv1D, laid out as PEFT: out = a·b and in = c·d are split near
/// their square roots (<see cref="Factorization"/>); ΔW = kron(W1, W2)·alpha/r with W1 [a, c] stored whole as
/// <c>lokr_w1</c> or as <c>lokr_w1_a</c>·<c>lokr_w1_b</c> (decompose_both and r &lt; max(a, c)/2), and W2 [b, d] as
/// <c>lokr_w2</c> or <c>lokr_w2_a</c>·<c>lokr_w2_b</c> (r &lt; max(b, d)/2). Forward never builds the Kronecker product:
/// (W1 ⊗ W2)·x = vec(W1·X·W2ᵀ) with X the input reshaped to [c, d], two small matrix products per token.
/// </summary>
public sealed class LoKrLayer : LycorisLayer
{
    private static readonly string[] Names = ["lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"];
    private readonly Dictionary<string, (int A, int B, int C, int D)> _shape = new();

    /// <summary>Wraps <paramref name="baseLayer"/>.</summary>
    public LoKrLayer(Module baseLayer) : base(baseLayer)
    {
        foreach (var n in Names) RegisterModule(n, new ParameterDict());
    }

    private ParameterDict P(string name) => Child<ParameterDict>(name);

    /// <inheritdoc/>
    public override IEnumerable<string> Adapters => _shape.Keys;

    /// <summary>(a, b, c, d) of an adapter: W1 is [a, c], W2 is [b, d], out = a·b, in = c·d.</summary>
    public (int A, int B, int C, int D) KroneckerShape(string adapter) => _shape[adapter];

    /// <summary>True when W1 / W2 are stored as two low-rank factors.</summary>
    public (bool W1, bool W2) Decomposed(string adapter) => (P("lokr_w1_a").Contains(adapter), P("lokr_w2_a").Contains(adapter));

    /// <summary>
    /// LyCORIS's factorization: dimension = m·n with m ≤ n. With factor &gt; 0 dividing the dimension, m = factor;
    /// otherwise m grows through the divisors while m + n shrinks and m stays ≤ factor (−1: no limit).
    /// </summary>
    public static (int M, int N) Factorization(int dimension, int factor = -1)
    {
        if (factor > 0 && dimension % factor == 0) return (factor, dimension / factor);
        if (factor == -1) factor = dimension;
        int m = 1, n = dimension;
        while (m < n)
        {
            int newM = m + 1;
            while (dimension % newM != 0) newM++;
            int newN = dimension / newM;
            if (newM + newN > m + n || newM > factor) break;
            (m, n) = (newM, newN);
        }
        return m > n ? (n, m) : (m, n);
    }

    /// <summary>Adds (or replaces) an adapter; <paramref name="init"/> is "true" (W1 = 0: starts as the base),
    /// "lycoris" (W2 = 0 instead) or "false" (everything random).</summary>
    public void UpdateLayer(string adapter, int r, double alpha, double rankDropout, double moduleDropout, bool rankDropoutScale,
        string init, bool decomposeBoth, int decomposeFactor)
    {
        if (init is not ("true" or "false" or "lycoris")) throw new ArgumentException($"init_weights must be true, false or \"lycoris\", got '{init}'");
        SetHyper(adapter, r, alpha, rankDropout, moduleDropout, rankDropoutScale);
        if (_shape.ContainsKey(adapter)) RemoveFrom(adapter, Names);
        var (c, d) = Factorization(InFeatures, decomposeFactor);
        var (a, b) = Factorization(OutFeatures, decomposeFactor);
        _shape[adapter] = (a, b, c, d);
        bool splitW1 = decomposeBoth && r < Math.Max(a, c) / 2.0;
        bool splitW2 = r < Math.Max(b, d) / 2.0;
        // Which factor starts at zero: W1 (or W1a) by default, W2 (or W2b) for "lycoris", none for false.
        bool zeroW1 = init == "true", zeroW2 = init == "lycoris";
        if (splitW1)
        {
            P("lokr_w1_a").Set(adapter, Zeroed(KaimingUniform(a, r), zeroW1));
            P("lokr_w1_b").Set(adapter, KaimingUniform(r, c));
        }
        else P("lokr_w1").Set(adapter, Zeroed(KaimingUniform(a, c), zeroW1));
        if (splitW2)
        {
            P("lokr_w2_a").Set(adapter, KaimingUniform(b, r));
            P("lokr_w2_b").Set(adapter, Zeroed(KaimingUniform(r, d), zeroW2));
        }
        else P("lokr_w2").Set(adapter, Zeroed(KaimingUniform(b, d), zeroW2));
    }

    private static Tensor Zeroed(Tensor t, bool zero)
    {
        if (zero) using (Autograd.NoGrad()) t.FillInPlace(0);
        return t;
    }

    private Tensor Factor(string adapter, string whole, string left, string right) =>
        P(whole).Contains(adapter) ? P(whole)[adapter].Contiguous() : P(left)[adapter].MatMul(P(right)[adapter]);

    /// <inheritdoc/>
    protected override Tensor ScaledDelta(string adapter)
    {
        using var w1 = Factor(adapter, "lokr_w1", "lokr_w1_a", "lokr_w1_b");
        using var w2 = Factor(adapter, "lokr_w2", "lokr_w2_a", "lokr_w2_b");
        using var kron = Tensor.Kron(w1, w2);
        return kron.Mul(Scaling(adapter));
    }

    /// <summary>x·ΔWᵀ without ΔW: for each token, Y = W1·X·W2ᵀ with X = x as [c, d] and Y read as [a·b]; costs
    /// tokens·(c·d·b + c·b·a) instead of tokens·a·b·c·d plus the a·b·c·d product itself.</summary>
    protected override Tensor DeltaTimes(string adapter, Tensor x)
    {
        var (a, b, c, d) = _shape[adapter];
        var lead = x.Shape[..^1];
        using var w1 = Factor(adapter, "lokr_w1", "lokr_w1_a", "lokr_w1_b");   // [a, c]
        using var w2 = Factor(adapter, "lokr_w2", "lokr_w2_a", "lokr_w2_b");   // [b, d]
        using var xs = x.Reshape(-1, c, d);                                     // [N, c, d]
        using var w2t = w2.Transpose(0, 1);
        using var t = xs.MatMul(w2t);                                           // [N, c, b]
        using var tt = t.Transpose(1, 2);                                       // [N, b, c]
        using var w1t = w1.Transpose(0, 1);
        using var u = tt.MatMul(w1t);                                           // [N, b, a]
        using var ut = u.Transpose(1, 2);                                       // [N, a, b]
        using var scaled = ut.Mul(Scaling(adapter));
        return scaled.Reshape([.. lead, a * b]);
    }

    /// <inheritdoc/>
    protected override void RemoveFactors(string adapter)
    {
        RemoveFrom(adapter, Names);
        _shape.Remove(adapter);
    }
}
