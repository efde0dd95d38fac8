using Peft.Core;
using Peft.Core.Random;

namespace Peft.Core.Tests;

/// <summary>Every differentiable op against float64 finite differences (relative error ≤ 1e-6).</summary>
[TestFixture]
public class GradientCheckTests
{
    private static Tensor L(params int[] shape) => GradCheck.Leaf(shape, (ulong)Environment.TickCount64 ^ (ulong)shape.Sum() * 7919);
    private static Tensor Pos(params int[] shape) { using var a = L(shape); using (Autograd.NoGrad()) { using var b = a.Abs(); return (b + 0.5).Detach().RequiresGradient(); } }
    /// <summary>Random matrices plus 3·I: invertible and well conditioned, so finite differences are accurate.</summary>
    private static Tensor WellConditioned(int batch, int n)
    {
        using var a = L(batch, n, n);
        using var _ = Autograd.NoGrad();
        var eye = new double[batch * n * n];
        for (int b = 0; b < batch; b++) for (int i = 0; i < n; i++) eye[(b * n + i) * n + i] = 3;
        using var e = Tensor.FromArray(eye, [batch, n, n]);
        using var sum = a + e;
        return sum.Detach().RequiresGradient();
    }

    private static Tensor Ids(long[] v, int[] shape) => Tensor.FromArray(v, shape);
    private static Tensor Mask(byte[] v, int[] shape) => Tensor.FromArray(v, shape);

    public record Case(string Name, Func<Tensor[]> Inputs, Func<Tensor[], Tensor> F)
    {
        public override string ToString() => Name;
    }

    public static IEnumerable<Case> Cases()
    {
        // Element-wise binary with broadcasting.
        yield return new("add_broadcast", () => [L(3, 4), L(4)], x => x[0] + x[1]);
        yield return new("sub_broadcast", () => [L(2, 1, 4), L(3, 1)], x => x[0] - x[1]);
        yield return new("mul_broadcast", () => [L(2, 3, 4), L(1, 3, 1)], x => x[0] * x[1]);
        yield return new("div_broadcast", () => [L(3, 4), Pos(3, 1)], x => x[0] / x[1]);
        yield return new("neg", () => [L(5)], x => -x[0]);
        yield return new("pow_tensor", () => [Pos(3, 4), L(4)], x => x[0].Pow(x[1]));
        yield return new("pow_scalar", () => [Pos(3, 4)], x => x[0].Pow(2.5));
        yield return new("scalar_ops", () => [L(3, 4)], x => (x[0] * 3.0 + 1.5) / 2.0 - 0.25);
        yield return new("maximum", () => [L(3, 4), L(3, 4)], x => x[0].Maximum(x[1]));
        yield return new("minimum", () => [L(3, 4), L(4)], x => x[0].Minimum(x[1]));
        // Unary.
        yield return new("exp", () => [L(3, 4)], x => x[0].Exp());
        yield return new("log", () => [Pos(3, 4)], x => x[0].Log());
        yield return new("sqrt", () => [Pos(3, 4)], x => x[0].Sqrt());
        yield return new("rsqrt", () => [Pos(3, 4)], x => x[0].Rsqrt());
        yield return new("abs", () => [L(3, 4)], x => x[0].Abs());
        yield return new("tanh", () => [L(3, 4)], x => x[0].Tanh());
        yield return new("sigmoid", () => [L(3, 4)], x => x[0].Sigmoid());
        yield return new("relu", () => [L(3, 4)], x => x[0].Relu());
        yield return new("gelu_erf", () => [L(4, 5)], x => x[0].Gelu());
        yield return new("gelu_tanh", () => [L(4, 5)], x => x[0].Gelu(approximateTanh: true));
        yield return new("silu", () => [L(4, 5)], x => x[0].Silu());
        yield return new("sin_cos", () => [L(4, 5)], x => x[0].Sin() * x[0].Cos());
        yield return new("clamp", () => [L(4, 5)], x => x[0].Clamp(-0.5, 0.7));
        // Reductions.
        yield return new("sum_all", () => [L(3, 4)], x => x[0].Sum());
        yield return new("sum_dims_keepdim", () => [L(2, 3, 4)], x => x[0].Sum([0, 2], keepDim: true));
        yield return new("mean_dim", () => [L(2, 3, 4)], x => x[0].Mean(1));
        yield return new("max_dim", () => [L(3, 5)], x => x[0].Max(1, keepDim: true));
        yield return new("max_all", () => [L(3, 5)], x => x[0].Max());
        yield return new("min_dim", () => [L(3, 5)], x => x[0].Min([0]));
        yield return new("var_unbiased", () => [L(3, 5)], x => x[0].Var([1]));
        yield return new("var_biased_keepdim", () => [L(3, 5)], x => x[0].Var([0], correction: 0, keepDim: true));
        yield return new("norm_l2", () => [L(4, 6)], x => x[0].Norm(2, [1], keepDim: true));
        yield return new("norm_l3", () => [L(4, 6)], x => x[0].Norm(3, [0]));
        // Products.
        yield return new("matmul_2d", () => [L(3, 4), L(4, 5)], x => x[0].MatMul(x[1]));
        yield return new("inverse_batched", () => [WellConditioned(2, 4)], x => x[0].Inverse());
        yield return new("matmul_batched_broadcast", () => [L(2, 3, 4), L(4, 5)], x => x[0].MatMul(x[1]));
        yield return new("matmul_batch_broadcast_both", () => [L(2, 1, 3, 4), L(1, 3, 4, 2)], x => x[0].MatMul(x[1]));
        yield return new("matmul_transposed_views", () => [L(4, 3), L(5, 4)], x => x[0].Transpose(0, 1).MatMul(x[1].Transpose(0, 1)));
        yield return new("matmul_vec", () => [L(3, 4), L(4)], x => x[0].MatMul(x[1]));
        yield return new("matmul_dot", () => [L(4), L(4)], x => x[0].MatMul(x[1]));
        yield return new("linear", () => [L(2, 3, 4), L(5, 4), L(5)], x => x[0].Linear(x[1], x[2]));
        yield return new("kron", () => [L(2, 3), L(3, 2)], x => Tensor.Kron(x[0], x[1]));
        // Views.
        yield return new("reshape_transpose_permute", () => [L(2, 3, 4)], x => x[0].Permute(2, 0, 1).Reshape(4, 6).Transpose(0, 1));
        yield return new("narrow_slice", () => [L(4, 6)], x => x[0].Narrow(1, 1, 3).Slice(0, -3, 4));
        yield return new("expand", () => [L(3, 1)], x => x[0].Expand(2, 3, 4));
        yield return new("squeeze_unsqueeze", () => [L(3, 1, 4)], x => x[0].Squeeze(1).Unsqueeze(0).Unsqueeze(-1));
        yield return new("contiguous_clone", () => [L(3, 4)], x => x[0].Transpose(0, 1).Contiguous().Clone());
        yield return new("select", () => [L(3, 4)], x => x[0].Select(1, 2));
        // Indexing and joining.
        yield return new("embedding_repeated_ids", () => [L(5, 3)], x => x[0].Embedding(Ids([1, 4, 1, 0, 1, 3], [2, 3])));
        yield return new("index_select_dim1", () => [L(3, 5)], x => x[0].IndexSelect(1, Ids([4, 0, 4], [3])));
        yield return new("gather", () => [L(3, 4)], x => x[0].Gather(1, Ids([0, 3, 3, 1, 2, 2, 0, 0, 1], [3, 3])));
        yield return new("cat", () => [L(2, 3), L(4, 3)], x => Tensor.Cat([x[0], x[1]], 0));
        yield return new("stack", () => [L(2, 3), L(2, 3)], x => Tensor.Stack([x[0], x[1]], 1));
        yield return new("split", () => [L(5, 3)], x => x[0].Split([2, 3])[1] * x[0].Split(2)[0].Sum());
        yield return new("where", () => [L(3, 4), L(4)], x => Tensor.Where(Mask([1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1], [3, 4]), x[0], x[1]));
        yield return new("masked_fill", () => [L(3, 4)], x => x[0].MaskedFill(Mask([1, 0, 0, 1], [4]), 2.0));
        yield return new("tril", () => [L(2, 4, 4)], x => x[0].Tril());
        yield return new("triu_offset", () => [L(4, 5)], x => x[0].Triu(1));
        yield return new("dropout_seeded", () => [L(6, 7)], x => x[0].Dropout(0.3, true, new Generator(99)));
        // NN.
        yield return new("softmax_last", () => [L(3, 5)], x => x[0].Softmax(-1));
        yield return new("softmax_dim0", () => [L(3, 5)], x => x[0].Softmax(0));
        yield return new("log_softmax", () => [L(3, 5)], x => x[0].LogSoftmax(-1));
        yield return new("layer_norm", () => [L(3, 6), L(6), L(6)], x => x[0].LayerNorm(x[1], x[2]));
        yield return new("layer_norm_no_affine", () => [L(2, 3, 6)], x => x[0].LayerNorm(null, null));
        yield return new("rms_norm", () => [L(3, 6), L(6)], x => x[0].RmsNorm(x[1], 1e-6));
        yield return new("cross_entropy_mean", () => [L(4, 5)], x => x[0].CrossEntropy(Ids([1, 0, 4, 2], [4])));
        yield return new("cross_entropy_ignore_smoothing", () => [L(2, 3, 5)], x => x[0].CrossEntropy(Ids([1, -100, 4, 2, -100, 0], [2, 3]), labelSmoothing: 0.1));
        yield return new("cross_entropy_sum", () => [L(4, 5)], x => x[0].CrossEntropy(Ids([1, 0, 4, 2], [4]), reduction: Reduction.Sum));
        yield return new("cross_entropy_none", () => [L(4, 5)], x => x[0].CrossEntropy(Ids([1, 0, 4, 2], [4]), reduction: Reduction.None));
        yield return new("sdpa_causal", () => [L(1, 2, 4, 3), L(1, 2, 4, 3), L(1, 2, 4, 3)], x => Tensor.ScaledDotProductAttention(x[0], x[1], x[2], isCausal: true));
        yield return new("sdpa_padding_mask", () => [L(2, 3, 3), L(2, 5, 3), L(2, 5, 2)], x => Tensor.ScaledDotProductAttention(x[0], x[1], x[2], Mask([1, 1, 1, 0, 0, 1, 1, 1, 1, 1], [2, 1, 5])));
        yield return new("sdpa_kv_cache_causal", () => [L(1, 2, 3), L(1, 5, 3), L(1, 5, 3)], x => Tensor.ScaledDotProductAttention(x[0], x[1], x[2], isCausal: true));
    }

    [TestCaseSource(nameof(Cases))]
    public void GradientMatchesFiniteDifferences(Case c)
    {
        using var scope = Tensor.NewScope();
        GradCheck.Check(c.F, c.Inputs());
    }

    [Test]
    public void CastRoundTripPassesTheGradientThroughUnchanged()
    {
        using var scope = Tensor.NewScope();
        var x = L(3, 4);
        var w = GradCheck.Const([3, 4], 5);
        (x.To(DType.F32).To(DType.F64) * w).Sum().Backward();
        Assert.That(x.Grad!.ToDoubleArray(), Is.EqualTo(w.ToDoubleArray()).Within(1e-6));
    }
}
