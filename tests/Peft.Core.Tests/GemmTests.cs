using Peft.Core.Random;

namespace Peft.Core.Tests;

/// <summary>The packed SGEMM against a naive double-precision product on fresh random inputs.</summary>
[TestFixture]
public class GemmTests
{
    // Sizes that exercise edge tiles (not multiples of MR=6 / NR=32), several KC blocks (k > 256) and tiny cases.
    [TestCase(1, 1, 1)]
    [TestCase(7, 33, 5)]
    [TestCase(37, 53, 29)]
    [TestCase(64, 64, 300)]
    [TestCase(130, 70, 513)]
    [TestCase(6, 3100, 9)]
    public void F32MatchesNaiveReferenceForAllTransposes(int m, int n, int k)
    {
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
            {
                using var scope = Tensor.NewScope();
                var a = Tensor.Randn(ta ? [k, m] : [m, k], new Generator((ulong)(m * 31 + k)));
                var b = Tensor.Randn(tb ? [n, k] : [k, n], new Generator((ulong)(n * 17 + k)));
                var c = (ta ? a.Transpose(0, 1) : a).MatMul(tb ? b.Transpose(0, 1) : b);
                var expected = TestUtil.NaiveMatMul(a.ToDoubleArray(), b.ToDoubleArray(), m, n, k, ta, tb);
                Assert.That(c.Shape, Is.EqualTo(new[] { m, n }));
                Assert.That(TestUtil.RelErr(c.ToDoubleArray(), expected), Is.LessThan(1e-5), $"ta={ta} tb={tb}");
            }
    }

    // LoRA's thin products take their own loops: N ≤ 16 (dots along K, needs a row-major A), K ≤ 16 (broadcast
    // multiply-adds along N). Ragged edges of the 4 × 4 dot blocks, K tails off the 8-wide vectors, N tails off 32/8.
    [TestCase(4096, 8, 768)]
    [TestCase(13, 1, 37)]
    [TestCase(9, 16, 300)]
    [TestCase(30, 11, 65)]
    [TestCase(300, 768, 8)]
    [TestCase(17, 45, 16)]
    [TestCase(8, 100, 1)]
    [TestCase(64, 37, 13)]
    [TestCase(768, 16, 4096)]   // a LoRA weight gradient: xᵀ·dt
    [TestCase(45, 5, 33)]       // a ragged last 16-row block and a partial column chunk
    public void ThinProductsMatchTheNaiveReferenceForAllTransposes(int m, int n, int k) => F32MatchesNaiveReferenceForAllTransposes(m, n, k);

    [TestCase(1000, 16, 768, false)]
    [TestCase(1000, 768, 16, false)]
    [TestCase(1000, 16, 768, true)]
    public unsafe void ThinProductsDoNotDependOnTheThreadCount(int m, int n, int k, bool transposedA)
    {
        using var scope = Tensor.NewScope();
        var a = Tensor.Randn(transposedA ? [k, m] : [m, k], new Generator(21));
        var b = Tensor.Randn([n, k], new Generator(22));   // [n, k]: used transposed, as Wᵀ
        float[] Run(int threads)
        {
            var c = new float[m * n];
            fixed (float* pc = c)
                Cpu.Gemm.Sgemm(m, n, k, 1, new Cpu.Gemm.Operand(a.Ptr<float>(), transposedA ? m : k, transposedA, Cpu.Gemm.Element.F32),
                    new Cpu.Gemm.Operand(b.Ptr<float>(), k, true, Cpu.Gemm.Element.F32), 0, pc, n, threads);
            return c;
        }
        var one = Run(1);
        Assert.That(Run(2), Is.EqualTo(one));
        Assert.That(Run(4), Is.EqualTo(one));
    }

    [Test]
    public void Bf16OperandsAreConvertedWhilePacking()
    {
        using var scope = Tensor.NewScope();
        var a = Tensor.Randn([19, 40], 3).To(DType.BF16);
        var b = Tensor.Randn([40, 45], 4).To(DType.BF16);
        var c = a.MatMul(b);
        Assert.That(c.DType, Is.EqualTo(DType.F32));
        // The reference uses the same bf16-rounded values, so only summation order differs.
        var expected = TestUtil.NaiveMatMul(a.ToDoubleArray(), b.ToDoubleArray(), 19, 45, 40, false, false);
        Assert.That(TestUtil.RelErr(c.ToDoubleArray(), expected), Is.LessThan(1e-5));
        var mixed = a.MatMul(b.To(DType.F32));
        Assert.That(TestUtil.RelErr(mixed.ToDoubleArray(), expected), Is.LessThan(1e-5));
    }

    [Test]
    public void BatchedMatMulBroadcastsBatchDims()
    {
        using var scope = Tensor.NewScope();
        var a = Tensor.Randn([3, 1, 5, 7], 5);
        var b = Tensor.Randn([4, 7, 2], 6);
        var c = a.MatMul(b);
        Assert.That(c.Shape, Is.EqualTo(new[] { 3, 4, 5, 2 }));
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
            {
                var expected = TestUtil.NaiveMatMul(a.Select(0, i).Select(0, 0).ToDoubleArray(), b.Select(0, j).ToDoubleArray(), 5, 2, 7, false, false);
                Assert.That(TestUtil.RelErr(c.Select(0, i).Select(0, j).ToDoubleArray(), expected), Is.LessThan(1e-5));
            }
    }

    [Test]
    public void ThreadCountDoesNotChangeTheResult()
    {
        // Threads split C into tiles, so each element is summed in the same order whatever the thread count.
        using var scope = Tensor.NewScope();
        var a = Tensor.Randn([300, 200], 8);
        var b = Tensor.Randn([200, 150], 9);
        var one = Run(1);
        var many = Run(4);
        Assert.That(many, Is.EqualTo(one));

        unsafe float[] Run(int threads)
        {
            var c = new float[300 * 150];
            fixed (float* pc = c)
                Cpu.Gemm.Sgemm(300, 150, 200, 1, new Cpu.Gemm.Operand(a.Ptr<float>(), 200, false, Cpu.Gemm.Element.F32), new Cpu.Gemm.Operand(b.Ptr<float>(), 150, false, Cpu.Gemm.Element.F32), 0, pc, 150, threads);
            return c;
        }
    }

    [TestCase(false, false)]
    [TestCase(true, true)]
    public unsafe void TileGridsOfAnyThreadCountGiveTheSameBits(bool transA, bool transB)
    {
        // Ragged in both dimensions, K over several KC slices, β ≠ 0 (C accumulates): each element is still summed in
        // the one-thread order, whichever grid of row × column tiles the thread count gives.
        const int m = 301, n = 517, k = 1100;
        using var scope = Tensor.NewScope();
        var a = Tensor.Randn(transA ? [k, m] : [m, k], new Generator(31));
        var b = Tensor.Randn(transB ? [n, k] : [k, n], new Generator(32));
        var c0 = Tensor.Randn([m, n], new Generator(33));
        float[] Run(int threads)
        {
            var c = c0.ToFloatArray();
            fixed (float* pc = c)
                Cpu.Gemm.Sgemm(m, n, k, 0.75f, new Cpu.Gemm.Operand(a.Ptr<float>(), transA ? m : k, transA, Cpu.Gemm.Element.F32),
                    new Cpu.Gemm.Operand(b.Ptr<float>(), transB ? k : n, transB, Cpu.Gemm.Element.F32), 0.5f, pc, n, threads);
            return c;
        }
        var one = Run(1);
        var expected = TestUtil.NaiveMatMul(a.ToDoubleArray(), b.ToDoubleArray(), m, n, k, transA, transB);
        var start = c0.ToDoubleArray();
        var reference = expected.Select((v, i) => 0.75 * v + 0.5 * start[i]).ToArray();
        Assert.That(TestUtil.RelErr(one.Select(v => (double)v).ToArray(), reference), Is.LessThan(1e-5));
        foreach (int threads in new[] { 2, 3, 7, 16 })
            Assert.That(Run(threads), Is.EqualTo(one), $"{threads} threads");
    }

    [TestCase(61, 45, 27)]
    [TestCase(36, 70, 8)]
    [TestCase(12, 40, 300)]
    public unsafe void StridedOperandsScaledByAlphaMatchTheReference(int m, int n, int k)
    {
        // Operands inside wider buffers (leading dimension past their width) and α ≠ 1: packing reads rows and
        // columns by the leading dimension, eight k at a time plus a tail, and folds α in; it must neither read a
        // neighbouring column into a panel nor drop one.
        const int pad = 5;
        const float alpha = 1.5f;
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
            {
                using var scope = Tensor.NewScope();
                int aRows = ta ? k : m, aCols = ta ? m : k, bRows = tb ? n : k, bCols = tb ? k : n;
                var a = Tensor.Randn([aRows, aCols + pad], new Generator((ulong)(m + k)));
                var b = Tensor.Randn([bRows, bCols + pad], new Generator((ulong)(n + 3 * k)));
                var c = new float[m * n];
                fixed (float* pc = c)
                    Cpu.Gemm.Sgemm(m, n, k, alpha, new Cpu.Gemm.Operand(a.Ptr<float>(), aCols + pad, ta, Cpu.Gemm.Element.F32),
                        new Cpu.Gemm.Operand(b.Ptr<float>(), bCols + pad, tb, Cpu.Gemm.Element.F32), 0, pc, n, 1);
                var aDense = a.Narrow(1, 0, aCols).Contiguous().ToDoubleArray();
                var bDense = b.Narrow(1, 0, bCols).Contiguous().ToDoubleArray();
                var expected = TestUtil.NaiveMatMul(aDense, bDense, m, n, k, ta, tb).Select(v => alpha * v).ToArray();
                Assert.That(TestUtil.RelErr(c.Select(v => (double)v).ToArray(), expected), Is.LessThan(1e-5), $"ta={ta} tb={tb}");
            }
    }

    [TestCase(256, 2304, 16)]
    [TestCase(4096, 768, 16)]
    [TestCase(256, 50257, 2)]
    [TestCase(7, 5, 16)]
    [TestCase(1000, 1000, 7)]
    public void TheTileGridCoversCWithAtMostOneTilePerThread(int m, int n, int threads)
    {
        var (rows, cols) = Cpu.Gemm.Grid(m, n, threads);
        Assert.That(rows % Cpu.Gemm.MR, Is.Zero);
        Assert.That(cols % Cpu.Gemm.NR, Is.Zero);
        int tiles = (m + rows - 1) / rows * ((n + cols - 1) / cols);
        Assert.That(tiles, Is.InRange(1, threads));
        // Enough tiles to use the threads when C has room for them.
        if ((long)(m / Cpu.Gemm.MR) * (n / Cpu.Gemm.NR) >= 4L * threads) Assert.That(tiles, Is.GreaterThanOrEqualTo(threads / 2 + 1));
    }

    [Test]
    public void F64MatMulIsExactEnoughForGradientChecks()
    {
        using var scope = Tensor.NewScope();
        var a = Tensor.Randn([9, 11], 1, DType.F64);
        var b = Tensor.Randn([11, 4], 2, DType.F64);
        var expected = TestUtil.NaiveMatMul(a.ToDoubleArray(), b.ToDoubleArray(), 9, 4, 11, false, false);
        Assert.That(TestUtil.RelErr(a.MatMul(b).ToDoubleArray(), expected), Is.LessThan(1e-14));
    }

    [Test]
    public void MismatchedInnerDimensionsNameBothShapes()
    {
        using var scope = Tensor.NewScope();
        var ex = Assert.Throws<ShapeMismatchException>(() => Tensor.Zeros([2, 3]).MatMul(Tensor.Zeros([4, 5])));
        Assert.That(ex!.Message, Does.Contain("[2, 3]").And.Contain("[4, 5]"));
    }
}
