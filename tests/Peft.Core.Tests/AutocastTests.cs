namespace Peft.Core.Tests;

/// <summary>Autocast's matmul rule: low-precision operands and result, F32 accumulation, the same rounding in backward.</summary>
[TestFixture]
public class AutocastTests
{
    private static bool IsBf16(float v) => (BitConverter.SingleToUInt32Bits(v) & 0xFFFF) == 0;
    private static bool IsF16(float v) => float.IsInfinity(v) || (float)(Half)v == v;

    private static float[] RoundBf16(float[] v) => v.Select(x => BFloat16.FromSingle(x).ToSingle()).ToArray();

    private static double RelErr(float[] a, float[] b)
    {
        double n = 0, d = 0;
        for (int i = 0; i < a.Length; i++) { n += Math.Pow(a[i] - b[i], 2); d += (double)b[i] * b[i]; }
        return Math.Sqrt(n / d);
    }

    /// <summary>Row-major [m, k]·[k, n] in float64.</summary>
    private static float[] Product(float[] a, float[] b, int m, int k, int n)
    {
        var c = new float[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++) s += (double)a[i * k + p] * b[p * n + j];
                c[i * n + j] = (float)s;
            }
        return c;
    }

    [Test]
    public void Bf16MatMulRoundsItsOperandsAndItsResult()
    {
        using var a = Tensor.Randn([9, 70], 1);
        using var b = Tensor.Randn([70, 13], 2);
        float[] y;
        using (Autocast.Enable(DType.BF16)) using (var t = a.MatMul(b)) y = t.ToFloatArray();
        Assert.That(y.All(IsBf16), "every result is a bfloat16 value");
        var fromRounded = RoundBf16(Product(RoundBf16(a.ToFloatArray()), RoundBf16(b.ToFloatArray()), 9, 70, 13));
        using var exact = a.MatMul(b);
        Assert.That(RelErr(y, fromRounded), Is.LessThan(1e-3), "the product of the rounded operands, rounded (summation order aside)");
        Assert.That(RelErr(y, exact.ToFloatArray()), Is.LessThan(1e-2).And.GreaterThan(1e-4), "bf16-close to the F32 product, and not equal to it");
        Assert.That(Autocast.Current, Is.Null, "the scope restored F32");
    }

    [Test]
    public void F16MatMulOverflowsWhereF16DoesAndBf16DoesNot()
    {
        using var a = Tensor.FromArray(new float[] { 300, 1 }, [1, 2]);
        using var b = Tensor.FromArray(new float[] { 300, 0.5f }, [2, 1]);
        using (Autocast.Enable(DType.F16)) using (var y = a.MatMul(b)) Assert.That(float.IsPositiveInfinity(y.ToFloatArray()[0]), "90000.5 > 65504");
        using (Autocast.Enable(DType.BF16)) using (var y = a.MatMul(b)) Assert.That(y.ToFloatArray()[0], Is.EqualTo(90112f), "bf16 keeps F32's range: 90000.5 rounds to 90112");
        using (var small = Tensor.Randn([4, 8], 3))
        using (var w = Tensor.Randn([8, 5], 4))
        using (Autocast.Enable(DType.F16))
        using (var y = small.MatMul(w)) Assert.That(y.ToFloatArray().All(IsF16));
    }

    [Test]
    public void BackwardRoundsTheGradientProductsAndReachesF32Leaves()
    {
        using var a = Tensor.Randn([6, 20], 5).RequiresGradient();
        using var b = Tensor.Randn([20, 7], 6).RequiresGradient();
        using var upstream = Tensor.Randn([6, 7], 7);
        using (var scope = Tensor.NewScope())
        {
            Tensor y;
            using (Autocast.Enable(DType.BF16)) y = a.MatMul(b);
            y.Mul(upstream).Sum().Backward();   // backward runs outside autocast: only the matmul node rounds
        }
        Assert.That((a.Grad!.DType, b.Grad!.DType), Is.EqualTo((DType.F32, DType.F32)), "F32 master gradients");
        Assert.That(a.Grad.ToFloatArray().All(IsBf16) && b.Grad.ToFloatArray().All(IsBf16));
        // dA = round(round(G)·round(B)ᵀ): compared with the float64 product of the rounded factors.
        var g16 = RoundBf16(upstream.ToFloatArray());
        var bT = RoundBf16(b.Detach().Transpose(0, 1).Contiguous().ToFloatArray());
        Assert.That(RelErr(a.Grad.ToFloatArray(), RoundBf16(Product(g16, bT, 6, 7, 20))), Is.LessThan(1e-3));
        using var exactA = upstream.MatMul(b.Detach().Transpose(0, 1));
        Assert.That(RelErr(a.Grad.ToFloatArray(), exactA.ToFloatArray()), Is.LessThan(1e-2));
    }

    [Test]
    public void F16GradientsUnderflowWithoutLossScalingAndSurviveWithIt()
    {
        float Grad(double lossScale)
        {
            using var a = Tensor.FromArray(new float[] { 1 }, [1, 1]).RequiresGradient();
            using var b = Tensor.FromArray(new float[] { 1e-4f }, [1, 1]);
            using (var scope = Tensor.NewScope())
            {
                Tensor y;
                using (Autocast.Enable(DType.F16)) y = a.MatMul(b);
                y.Mul(1e-4 * lossScale).Sum().Backward();   // dA = 1e-4·1e-4 = 1e-8, under F16's smallest subnormal (6e-8)
            }
            return (float)(a.Grad!.ToFloatArray()[0] / lossScale);
        }
        Assert.That(Grad(1), Is.EqualTo(0f), "flushed to zero in F16");
        Assert.That(Grad(65536), Is.EqualTo(1e-8f).Within(1e-10), "scaled by 2^16 it is representable, and unscales to 1e-8");
    }

    [Test]
    public unsafe void VectorisedBf16RoundingMatchesTheScalarRuleOnEveryBitPattern()
    {
        var r = new System.Random(3);
        var bits = Enumerable.Range(0, 20011).Select(_ => (uint)r.NextInt64(0, 1L << 32)).ToList();
        bits.AddRange([0x3F808000u, 0x3F818000u, 0x7F800000u, 0xFF800000u, 0x7FC00001u, 0x7F800001u, 0xFFFFFFFFu, 0x7F7FFFFFu, 0, 0x80000000u]); // ties, ±∞, NaNs, max
        var values = bits.Select(BitConverter.UInt32BitsToSingle).ToArray();
        var expected = values.Select(v => BFloat16.FromSingle(v).Bits).ToArray();
        using (var t = Tensor.FromArray(values))
        using (var b = t.To(DType.BF16))
            Assert.That(b.ToArray<BFloat16>().Select(x => x.Bits).ToArray(), Is.EqualTo(expected), "F32 → BF16 cast");
        var inPlace = (float[])values.Clone();
        fixed (float* p = inPlace) Cpu.Cast.RoundInPlace(p, inPlace.Length, DType.BF16);
        Assert.That(inPlace.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray(), Is.EqualTo(expected), "rounding kept in F32 storage");
        Assert.That(inPlace.All(v => (BitConverter.SingleToUInt32Bits(v) & 0xFFFF) == 0));
    }

    [Test]
    public void AttentionUnderAutocastRoundsItsInputsAndOutputOnlyAndPassesGradientsStraightThrough()
    {
        // torch's fused 16-bit attention (HF models' default sdpa path): q, k, v rounded, F32 inside (the probabilities
        // are not rounded), the output rounded; the input roundings pass gradients through unrounded.
        using var scope = Tensor.NewScope();
        var q = Tensor.Randn([2, 2, 7, 8], 1).RequiresGradient();
        var k = Tensor.Randn([2, 2, 7, 8], 2).RequiresGradient();
        var v = Tensor.Randn([2, 2, 7, 8], 3).RequiresGradient();
        var up = Tensor.Randn([2, 2, 7, 8], 4);
        Tensor y;
        using (Autocast.Enable(DType.BF16)) y = Tensor.ScaledDotProductAttention(q, k, v, isCausal: true);
        Assert.That(y.DType, Is.EqualTo(DType.BF16));
        (y.To(DType.F32) * up).Sum().Backward();
        var rounded = new[] { q, k, v }.Select(t => t.Detach().To(DType.BF16).To(DType.F32).RequiresGradient()).ToArray();
        var exact = Tensor.ScaledDotProductAttention(rounded[0], rounded[1], rounded[2], isCausal: true);
        Assert.That(y.ToFloatArray(), Is.EqualTo(exact.To(DType.BF16).ToFloatArray()), "the F32 attention of the rounded inputs, rounded once");
        // The incoming gradient reaches the BF16 output through its cast back to F32, which rounds it (as torch's
        // 16-bit dO); from there on everything is F32.
        (exact * up.To(DType.BF16).To(DType.F32)).Sum().Backward();
        Assert.That(q.Grad!.ToFloatArray(), Is.EqualTo(rounded[0].Grad!.ToFloatArray()));
        Assert.That(v.Grad!.ToFloatArray(), Is.EqualTo(rounded[2].Grad!.ToFloatArray()));
        Assert.That(q.Grad!.ToFloatArray().Any(g => !IsBf16(g)), "gradients are not rounded to BF16");
    }

    [Test]
    public void F64StaysExactAndNestedScopesRestore()
    {
        using var a = Tensor.Randn([3, 4], 8, DType.F64);
        using var b = Tensor.Randn([4, 2], 9, DType.F64);
        using var plain = a.MatMul(b);
        using (Autocast.Enable(DType.F16))
        {
            using (Autocast.Enable(DType.BF16)) Assert.That(Autocast.Current, Is.EqualTo(DType.BF16));
            Assert.That(Autocast.Current, Is.EqualTo(DType.F16));
            using (Autocast.Disable()) Assert.That(Autocast.Current, Is.Null);
            using (Autocast.Use(null)) Assert.That(Autocast.Current, Is.Null, "Use(null) is F32 whatever the caller set");
            using (Autocast.Use(DType.BF16)) Assert.That(Autocast.Current, Is.EqualTo(DType.BF16));
            using var y = a.MatMul(b);
            Assert.That(y.DType, Is.EqualTo(DType.F64));
            Assert.That(y.ToDoubleArray(), Is.EqualTo(plain.ToDoubleArray()), "gradient checks in F64 are never rounded");
        }
        Assert.Throws<ArgumentException>(() => Autocast.Enable(DType.F32));
        Assert.Throws<ArgumentException>(() => Autocast.Use(DType.F64));
    }

    [Test]
    public void SixteenBitOperandsWidenInElementWiseMaths()
    {
        using var w = Tensor.Randn([3, 5], 10).To(DType.BF16);
        using var x = Tensor.Randn([3, 5], 11);
        using var sum = w.Add(x);
        Assert.That(sum.DType, Is.EqualTo(DType.F32));
        using var w32 = w.To(DType.F32);
        using var expected = w32.Add(x);
        Assert.That(sum.ToFloatArray(), Is.EqualTo(expected.ToFloatArray()));
        using var h = Tensor.Randn([4], 12).To(DType.F16);
        using var e = h.Exp();
        Assert.That(e.DType, Is.EqualTo(DType.F32));
    }
}
