using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// BOFT on a Linear or Conv1D, as PEFT: <c>boft_R.&lt;a&gt;</c> [F, D, b, b] holds F butterfly factors of D blocks;
/// each block becomes orthogonal by the exact Cayley transform of S = ½(R − Rᵀ), factor f is M_f = P_f·BD_f·P_fᵀ
/// (P_f a butterfly permutation), M = M_{F−1}⋯M_0, and <c>boft_s.&lt;a&gt;</c> [out, 1] scales the outputs:
/// y = (base(x·M) − b) ⊙ s + b. Merging writes W ← (W·Mᵀ) ⊙ s; unmerging W ← (W'/s)·M (M is orthogonal).
/// Permutations are applied as index gathers, never as n×n matrices.
/// </summary>
public sealed class BoftLayer : TunerLayer
{
    private readonly Dictionary<string, (int BlockSize, int Blocks, int[][] Perms, int[][] Inverses, double Dropout)> _spec = new();

    /// <summary>Wraps <paramref name="baseLayer"/>.</summary>
    public BoftLayer(Module baseLayer) : base(baseLayer)
    {
        RegisterModule("boft_R", new ParameterDict());
        RegisterModule("boft_s", new ParameterDict());
    }

    private ParameterDict R => Child<ParameterDict>("boft_R");
    private ParameterDict S => Child<ParameterDict>("boft_s");

    /// <inheritdoc/>
    public override IEnumerable<string> Adapters => _spec.Keys;

    /// <summary>(block size, blocks, butterfly factors) of an adapter.</summary>
    public (int BlockSize, int Blocks, int Factors) Shape(string adapter) => (_spec[adapter].BlockSize, _spec[adapter].Blocks, _spec[adapter].Perms.Length);

    /// <summary>
    /// Adds (or replaces) an adapter with blocks of <paramref name="blockSize"/> or <paramref name="blockNum"/> blocks
    /// (exactly one non-zero) and <paramref name="nButterflyFactor"/> (PEFT's config value; F = that − 1 + 1 factors).
    /// The divisibility rules are PEFT's. <paramref name="initIdentity"/>: R = 0, s = 1; otherwise R ~ N(0, 0.1), s ~ N(1, 0.1).
    /// </summary>
    public void UpdateLayer(string adapter, int blockSize, int blockNum, int nButterflyFactor, double dropout, bool initIdentity)
    {
        int nbf = nButterflyFactor - 1;   // PEFT's paper notation
        if (nbf < 0) throw new ArgumentException($"boft_n_butterfly_factor must be a positive integer, got {nButterflyFactor}");
        int n = InFeatures;
        if ((blockSize == 0) == (blockNum == 0))
            throw new ArgumentException($"specify either boft_block_size ({blockSize}) or boft_block_num ({blockNum}), not both and not neither: size × num = in_features");
        if (blockSize == 0)
        {
            if (n % blockNum != 0) throw new ArgumentException($"in_features ({n}) must be divisible by boft_block_num ({blockNum})");
            if (nbf != 0 && (nbf > (int)Math.Log2(blockNum) || blockNum % (1 << nbf) != 0))
                throw new ArgumentException($"invalid combination of boft_n_butterfly_factor ({nButterflyFactor}) and boft_block_num ({blockNum})");
            blockSize = n / blockNum;
        }
        else
        {
            if (n % blockSize != 0) throw new ArgumentException($"in_features ({n}) must be divisible by boft_block_size ({blockSize})");
            if (nbf != 0 && (n < blockSize * (1 << nbf) || n % (blockSize * (1 << nbf)) != 0))
                throw new ArgumentException($"invalid combination of in_features ({n}), boft_n_butterfly_factor ({nButterflyFactor}) and boft_block_size ({blockSize})");
            blockNum = n / blockSize;
        }
        if (nbf != 0 && (blockNum % 2 != 0 || blockSize % 2 != 0))
            throw new ArgumentException($"with a butterfly, boft_block_num ({blockNum}) and boft_block_size ({blockSize}) must be even");
        var perms = Enumerable.Range(0, nbf + 1).Select(i => ButterflyPermutation.Indices(n, blockNum >> i, blockSize / 2, nbf)).ToArray();
        _spec[adapter] = (blockSize, blockNum, perms, perms.Select(ButterflyPermutation.Inverse).ToArray(), dropout);
        var r = Tensor.Zeros([nbf + 1, blockNum, blockSize, blockSize]);
        var s = Tensor.Ones([OutFeatures, 1]);
        if (!initIdentity)
            using (Autograd.NoGrad())
            {
                using (var rr = Tensor.Randn(r.Shape, null, DType.F32, 0, 0.1)) r.CopyFrom(rr);
                using (var ss = Tensor.Randn(s.Shape, null, DType.F32, 1, 0.1)) s.CopyFrom(ss);
            }
        R.Set(adapter, r);
        S.Set(adapter, s);
    }

    /// <summary>The orthogonal blocks [F, D, b, b]: (I − S)(I + S)⁻¹ with S = ½(R − Rᵀ); in training, BOFT dropout
    /// replaces ⌊p·D⌋ random blocks of one random factor by the identity.</summary>
    public Tensor Blocks(string adapter)
    {
        var (b, d, perms, _, p) = _spec[adapter];
        int f = perms.Length;
        var raw = R[adapter];
        using var flat = raw.Reshape(f * d, b, b);
        using var flatT = flat.Transpose(1, 2);
        using var diff = flat.Sub(flatT);
        using var skew = diff.Mul(0.5);
        using var identity = Tensor.Eye(b, raw.DType, raw.Device);
        using var eye = identity.Expand(f * d, b, b);   // one I per block (a view)
        using var minus = eye.Sub(skew);
        using var plus = eye.Add(skew);
        using var inv = plus.Inverse();
        using var q = minus.MatMul(inv);
        if (!(IsTraining && p > 0)) return q.Reshape(f, d, b, b);
        // PEFT's MultiplicativeDropoutLayer: one factor, ⌊p·D⌋ of its blocks become I.
        var mask = new float[f * d];
        using var draws = Tensor.Rand([d + 1]);   // the default generator: seeded runs drop the same blocks
        var u = draws.ToFloatArray();
        int factor = Math.Min((int)(u[d] * f), f - 1);
        var order = Enumerable.Range(0, d).OrderBy(i => u[i]).Take((int)(p * d));
        foreach (var blk in order) mask[factor * d + blk] = 1;
        using var hostMask = Tensor.FromArray(mask, [f * d, 1, 1]);
        using var m = hostMask.To(q.Device);
        using var keep = m.Neg().Add(1.0);
        using var kept = q.Mul(keep);
        using var ident = eye.Mul(m);
        using var mixed = kept.Add(ident);
        return mixed.Reshape(f, d, b, b);
    }

    /// <summary>y[..., j] = x[..., index[j]] (a differentiable column gather: the rows of xᵀ looked up as an embedding).</summary>
    private static Tensor Gather(Tensor x, int[] index)
    {
        if (ButterflyPermutation.IsIdentity(index)) return x.Contiguous();
        var shape = x.Shape;
        using var flat = x.Reshape(-1, shape[^1]);
        using var t = flat.Transpose(0, 1);
        using var tc = t.Contiguous();
        using var ids = Tensor.FromArray(index.Select(i => (long)i).ToArray());
        using var rows = tc.Embedding(ids);
        using var back = rows.Transpose(0, 1);
        return back.Reshape(shape);
    }

    /// <summary>x·M_f = x·P_f·BD_f·P_fᵀ for factor f (with the blocks transposed when <paramref name="transposed"/>).</summary>
    private Tensor ApplyFactor(Tensor x, Tensor blocks, string adapter, int f, bool transposed)
    {
        var (b, _, perms, inverses, _) = _spec[adapter];
        using var q = blocks.Select(0, f);
        using var qt = transposed ? q.Transpose(1, 2) : q.Contiguous();
        using var permuted = Gather(x, inverses[f]);
        using var rotated = OftRotation.ApplyBlocks(permuted, qt, b);
        return Gather(rotated, perms[f]);
    }

    /// <summary>x·M (forward) or x·Mᵀ (<paramref name="transposed"/>), row-vector convention, M = M_{F−1}⋯M_0.</summary>
    private Tensor ApplyRotation(Tensor x, string adapter, bool transposed)
    {
        using var blocks = Blocks(adapter);
        int f = _spec[adapter].Perms.Length;
        var current = x.Contiguous();
        for (int k = 0; k < f; k++)
        {
            int factor = transposed ? k : f - 1 - k;   // x·M applies M_{F−1} first; x·Mᵀ applies M_0ᵀ first
            var next = ApplyFactor(current, blocks, adapter, factor, transposed);
            current.Dispose();
            current = next;
        }
        return current;
    }

    /// <inheritdoc/>
    protected override bool IsAdditive => false;

    /// <summary>(base(x·M) − b) ⊙ s + b with M and s combined over the active adapters as PEFT (the last adapter's M
    /// acts on x first).</summary>
    protected override Tensor AdaptedForward(Tensor x, IReadOnlyList<string> adapters)
    {
        if (adapters.Count == 0) return BaseForward(x);
        var current = x.Contiguous();
        for (int i = adapters.Count - 1; i >= 0; i--)
        {
            var next = ApplyRotation(current, adapters[i], transposed: false);
            current.Dispose();
            current = next;
        }
        using (var scale = FlatProduct(adapters.Select(a => S[a])))
        using (current)
        {
            using var y = BaseForward(current);
            if (BaseBias is not { } bias) return y.Mul(scale);
            using var noBias = y.Sub(bias);
            using var scaled = noBias.Mul(scale);
            return scaled.Add(bias);
        }
    }

    /// <inheritdoc/>
    protected override Tensor MergedWeight(string adapter)
    {
        using var w = WeightOutIn();
        using var rotated = ApplyRotation(w, adapter, transposed: true);   // rows of W times Mᵀ
        using var scaled = rotated.Mul(S[adapter]);
        return InBaseLayout(scaled);
    }

    /// <inheritdoc/>
    protected override Tensor UnmergedWeight(string adapter)
    {
        using var w = WeightOutIn();
        using var unscaled = w.Div(S[adapter]);
        using var restored = ApplyRotation(unscaled, adapter, transposed: false);
        return InBaseLayout(restored);
    }

    /// <summary>(W·Mᵀ) ⊙ s − W in the base weight's layout (BOFT itself is multiplicative).</summary>
    public override Tensor DeltaWeight(string adapter)
    {
        using var _ = Autograd.NoGrad();
        using var merged = MergedWeight(adapter);
        return merged.Sub(BaseWeight);
    }

    /// <inheritdoc/>
    protected override void RemoveAdapterState(string adapter)
    {
        R.Remove(adapter);
        S.Remove(adapter);
        _spec.Remove(adapter);
    }
}
