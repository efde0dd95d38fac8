using Peft.Core.Random;

namespace Peft.Core.Tests;

/// <summary>
/// Tensor.LowRankHadamard (LoHa's fused ΔW = s·(a1·b1) ⊙ (a2·b2)) against its composite definition, its float64
/// gradient check, and the gradients it computes only when they are wanted.
/// </summary>
[TestFixture]
public class LowRankHadamardTests
{
    // (M, N, R): ragged against the SIMD width and the CUDA tiles, R = 1, and LoHa's usual ranks.
    private static readonly (int M, int N, int R)[] Shapes = [(5, 7, 3), (37, 70, 1), (33, 129, 16), (64, 300, 8)];

    private static Tensor[] Factors(int m, int n, int r, DType dtype, ulong seed, bool grad)
    {
        var t = new[] { Tensor.Randn([m, r], new Generator(seed), dtype), Tensor.Randn([r, n], new Generator(seed + 1), dtype),
                        Tensor.Randn([m, r], new Generator(seed + 2), dtype), Tensor.Randn([r, n], new Generator(seed + 3), dtype) };
        return grad ? t.Select(x => x.RequiresGradient()).ToArray() : t;
    }

    private static Tensor Composite(Tensor[] f, double s) => f[0].MatMul(f[1]) * f[2].MatMul(f[3]) * s;

    [Test]
    public void ForwardMatchesTheCompositeInF32AndF64([Values(DType.F32, DType.F64)] DType dtype)
    {
        using var scope = Tensor.NewScope();
        foreach (var (m, n, r) in Shapes)
        {
            var f = Factors(m, n, r, dtype, 10, grad: false);
            var fused = Tensor.LowRankHadamard(f[0], f[1], f[2], f[3], 0.75);
            Assert.That(fused.Shape, Is.EqualTo(new[] { m, n }));
            Assert.That(fused.DType, Is.EqualTo(dtype));
            Assert.That(TestUtil.RelErr(fused, Composite(f, 0.75)), Is.LessThan(dtype == DType.F64 ? 1e-14 : 1e-6), $"{m}×{n}, r={r}");
        }
    }

    [Test]
    public void GradientsMatchFiniteDifferencesInF64()
    {
        foreach (var (m, n, r) in new[] { (4, 6, 3), (3, 5, 1) })
            GradCheck.Check(x => Tensor.LowRankHadamard(x[0], x[1], x[2], x[3], 1.7),
                [GradCheck.Leaf([m, r], 1), GradCheck.Leaf([r, n], 2), GradCheck.Leaf([m, r], 3), GradCheck.Leaf([r, n], 4)]);
    }

    [Test]
    public void F32GradientsMatchTheComposite()
    {
        using var scope = Tensor.NewScope();
        var (m, n, r) = (33, 129, 16);
        var fused = Factors(m, n, r, DType.F32, 20, grad: true);
        var plain = Factors(m, n, r, DType.F32, 20, grad: true);
        var weights = Tensor.Randn([m, n], new Generator(99));
        (Tensor.LowRankHadamard(fused[0], fused[1], fused[2], fused[3], 0.5) * weights).Sum().Backward();
        (Composite(plain, 0.5) * weights).Sum().Backward();
        for (int i = 0; i < 4; i++)
            Assert.That(TestUtil.RelErr(fused[i].Grad!, plain[i].Grad!), Is.LessThan(1e-5), $"factor {i}");
    }

    [Test]
    public void OnlyTheWantedGradientsAreComputed()
    {
        using var scope = Tensor.NewScope();
        var f = Factors(6, 9, 2, DType.F64, 30, grad: false);
        var reference = Factors(6, 9, 2, DType.F64, 30, grad: false);
        f[3] = f[3].RequiresGradient();          // LoHa at PEFT's init trains all four, but a frozen pair must cost nothing
        reference[3] = reference[3].RequiresGradient();
        Tensor.LowRankHadamard(f[0], f[1], f[2], f[3], 2.0).Sum().Backward();
        Composite(reference, 2.0).Sum().Backward();
        Assert.That(f[0].Grad, Is.Null);
        Assert.That(f[2].Grad, Is.Null);
        Assert.That(TestUtil.RelErr(f[3].Grad!, reference[3].Grad!), Is.LessThan(1e-14));
    }

    [Test]
    public void DifferentRanksAndBf16TakeTheCompositeWithTheSameResult()
    {
        using var scope = Tensor.NewScope();
        var a1 = Tensor.Randn([8, 3], 1); var b1 = Tensor.Randn([3, 10], 2);
        var a2 = Tensor.Randn([8, 5], 3); var b2 = Tensor.Randn([5, 10], 4);
        var expected = a1.MatMul(b1) * a2.MatMul(b2) * 0.3;
        Assert.That(TestUtil.RelErr(Tensor.LowRankHadamard(a1, b1, a2, b2, 0.3), expected), Is.LessThan(1e-6));
        var half = new[] { a1, b1, a1, b1 }.Select(t => t.To(DType.BF16)).ToArray();
        var viaComposite = Composite(half, 0.3);
        Assert.That(Tensor.LowRankHadamard(half[0], half[1], half[2], half[3], 0.3).ToDoubleArray(), Is.EqualTo(viaComposite.ToDoubleArray()));
    }

    [Test]
    public void MismatchedFactorsNameTheShapes()
    {
        using var scope = Tensor.NewScope();
        var ex = Assert.Throws<ShapeMismatchException>(() =>
            Tensor.LowRankHadamard(Tensor.Zeros([4, 2]), Tensor.Zeros([3, 5]), Tensor.Zeros([4, 2]), Tensor.Zeros([2, 5]), 1));
        Assert.That(ex!.Message, Does.Contain("[4, 2]").And.Contain("[3, 5]"));
        Assert.Throws<ShapeMismatchException>(() => Tensor.LowRankHadamard(Tensor.Zeros([4]), Tensor.Zeros([4, 2]), Tensor.Zeros([4, 2]), Tensor.Zeros([2, 5]), 1));
    }
}
