namespace Peft.Cuda.Tests;

/// <summary>cuBLAS GEMMs and the CUDA LoRA layer against float64 references computed on the CPU.</summary>
public class BlasAndLoraTests : GpuTest
{
    // Tolerances by dtype (‖err‖/‖ref‖): float32 accumulation of float32 data, bf16 operands (8-bit mantissa).
    private static double Tolerance(DType d) => d == DType.F32 ? 1e-5 : 1e-2;

    [TestCase(DType.F32, 67, 129, 93)]
    [TestCase(DType.BF16, 256, 512, 384)]
    [TestCase(DType.F16, 33, 65, 17)]
    public void LinearMatchesFloat64(DType dtype, int m, int k, int n)
    {
        using var x = Tensor.Randn([m, k], Fresh()).To(dtype);
        using var w = Tensor.Randn([n, k], Fresh()).To(dtype);
        using var xd = x.To(Gpu.Device);
        using var wd = w.To(Gpu.Device);
        PoisonNext(Gpu, (long)m * n * dtype.SizeOf());
        using var yd = CudaBlas.Linear(xd, wd);
        using var y = yd.To(Device.Cpu).To(DType.F32);
        var want = Reference(x, w, transposeB: true);
        Assert.That(RelativeError(y.ToArray<float>(), want), Is.LessThanOrEqualTo(Tolerance(dtype)));
    }

    [Test]
    public void Tf32IsOptInAndStaysWithinItsTolerance()
    {
        using var a = Tensor.Randn([256, 512], Fresh());
        using var b = Tensor.Randn([512, 128], Fresh());
        using var ad = a.To(Gpu.Device);
        using var bd = b.To(Gpu.Device);
        var want = Reference(a, b, transposeB: false);
        using var exact = CudaBlas.MatMul(ad, bd).To(Device.Cpu);
        Gpu.AllowTf32 = true;
        try
        {
            using var fast = CudaBlas.MatMul(ad, bd).To(Device.Cpu);
            double e32 = RelativeError(exact.ToArray<float>(), want), eTf32 = RelativeError(fast.ToArray<float>(), want);
            TestContext.Out.WriteLine($"f32 {e32:e2}, tf32 {eTf32:e2}");
            Assert.That(e32, Is.LessThan(1e-5));
            Assert.That(eTf32, Is.LessThan(3e-3));
        }
        finally { Gpu.AllowTf32 = false; }
    }

    [Test]
    public void StridedBatchedGemmMatchesPerBatchProducts()
    {
        int batch = 5, m = 31, k = 40, n = 27;
        using var a = Tensor.Randn([batch, m, k], Fresh());
        using var b = Tensor.Randn([batch, k, n], Fresh());
        using var ad = a.To(Gpu.Device);
        using var bd = b.To(Gpu.Device);
        using var cd = CudaTensors.Empty([batch, m, n], DType.F32, Gpu);
        CudaTensors.FillBytes(cd, 0xFF); // β = 0 must ignore the NaNs
        CudaBlas.GemmStridedBatched(false, false, m, n, k, 1f, ad, k, m * k, bd, n, k * n, 0f, cd, n, m * n, batch);
        var got = cd.To(Device.Cpu).ToArray<float>();
        for (int i = 0; i < batch; i++)
        {
            using var ai = a.Select(0, i);
            using var bi = b.Select(0, i);
            var want = Reference(ai, bi, transposeB: false);
            Assert.That(RelativeError(got.AsSpan(i * m * n, m * n), want), Is.LessThan(1e-5), $"batch {i}");
        }
    }

    // Rows: dtype, M, K, N, r, forward order, side stream in the backward, our thin kernels (bf16, r ∈ {16, 32}, M and K
    // multiples of 16, N and K multiples of 64 for the expands) or cuBLAS.
    [TestCase(DType.F32, 96, 160, 112, 8, LoraForwardOrder.AdapterFirst, false, true)]   // f32: cuBLAS thin products
    [TestCase(DType.F32, 96, 160, 112, 8, LoraForwardOrder.BaseFirst, true, true)]
    [TestCase(DType.BF16, 96, 192, 128, 16, LoraForwardOrder.AdapterFirst, true, true)]  // every thin product on our kernels
    [TestCase(DType.BF16, 96, 192, 128, 16, LoraForwardOrder.BaseFirst, false, true)]    // expand with β = 1
    [TestCase(DType.BF16, 64, 512, 256, 32, LoraForwardOrder.AdapterFirst, true, true)]  // r = 32, K spans several warps
    [TestCase(DType.BF16, 96, 192, 128, 16, LoraForwardOrder.AdapterFirst, true, false)] // cuBLAS thin products
    [TestCase(DType.BF16, 97, 264, 120, 16, LoraForwardOrder.AdapterFirst, true, true)]  // ragged shapes: cuBLAS fallback
    [TestCase(DType.BF16, 96, 160, 112, 8, LoraForwardOrder.AdapterFirst, true, true)]   // r = 8: cuBLAS fallback
    public void LoraForwardAndBackwardMatchTheComposite(DType dtype, int m, int k, int n, int r, LoraForwardOrder order, bool overlapBackward, bool kernels)
    {
        float scale = 2.5f;
        using var x = Tensor.Randn([m, k], Fresh()).To(dtype);
        using var w = Tensor.Randn([n, k], Fresh(), std: 0.1).To(dtype);
        using var a = Tensor.Randn([r, k], Fresh(), std: 0.1).To(dtype);
        using var b = Tensor.Randn([n, r], Fresh(), std: 0.1).To(dtype);
        using var dy = Tensor.Randn([m, n], Fresh()).To(dtype);
        using var xd = x.To(Gpu.Device);
        using var wd = w.To(Gpu.Device);
        using var ad = a.To(Gpu.Device);
        using var bd = b.To(Gpu.Device);
        using var dyd = dy.To(Gpu.Device);

        if (dtype == DType.BF16 && kernels && m % 16 == 0 && k % 64 == 0 && n % 64 == 0 && r % 16 == 0)
            using (var probe = CudaTensors.Empty([m, r], dtype, Gpu))
            {
                Assert.That(LoraKernels.ShrinkApplies(xd, ad, probe), Is.True, "this case exercises the shrink kernel");
                Assert.That(LoraKernels.ExpandApplies(probe, bd, dyd), Is.True, "this case exercises the expand kernel");
            }
        PoisonNext(Gpu, (long)m * n * dtype.SizeOf());
        var (yd, td) = CudaLora.Forward(xd, wd, ad, bd, scale, order, kernels);
        // Float64 composite: y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ.
        var X = D(x, m, k); var W = D(w, n, k); var A = D(a, r, k); var B = D(b, n, r); var DY = D(dy, m, n);
        var T = Mul(X, A, m, k, r, tb: true);
        var Y = Add(Mul(X, W, m, k, n, tb: true), Mul(T, B, m, r, n, tb: true), scale);
        Assert.That(RelativeError(F(yd), Y), Is.LessThanOrEqualTo(Tolerance(dtype)), "y");
        Assert.That(RelativeError(F(td), T), Is.LessThanOrEqualTo(Tolerance(dtype)), "t = x·Aᵀ");

        PoisonNext(Gpu, (long)m * k * dtype.SizeOf());
        var (dxd, dad, dbd) = CudaLora.Backward(dyd, xd, td, wd, ad, bd, scale, overlap: overlapBackward, kernels: kernels);
        var U = Mul(DY, B, m, n, r, tb: false);                                           // dY·B  [m, r]
        var DX = Add(Mul(DY, W, m, n, k, tb: false), Mul(U, A, m, r, k, tb: false), scale);
        var DB = Scale(Mul(Transpose(DY, m, n), T, n, m, r, tb: false), scale);           // s·dYᵀ·t
        var DA = Scale(Mul(Transpose(U, m, r), X, r, m, k, tb: false), scale);            // s·uᵀ·x
        Assert.That(RelativeError(F(dxd!), DX), Is.LessThanOrEqualTo(Tolerance(dtype)), "dX");
        Assert.That(RelativeError(F(dbd), DB), Is.LessThanOrEqualTo(Tolerance(dtype)), "dB");
        Assert.That(RelativeError(F(dad), DA), Is.LessThanOrEqualTo(Tolerance(dtype)), "dA");
        // Without an input gradient only dA and dB are computed, with the same values.
        var (none, dad2, dbd2) = CudaLora.Backward(dyd, xd, td, wd, ad, bd, scale, inputGrad: false, kernels: kernels);
        Assert.That(none, Is.Null);
        Assert.That(F(dad2), Is.EqualTo(F(dad)));
        Assert.That(F(dbd2), Is.EqualTo(F(dbd)));
        foreach (var t in new[] { yd, td, dxd!, dad, dbd, dad2, dbd2 }) t.Dispose();
    }

    [Test]
    public void LoraRejectsMismatchedShapesWithTheShapes()
    {
        using var x = CudaTensors.Zeros([4, 8], DType.F32, Gpu);
        using var w = CudaTensors.Zeros([6, 8], DType.F32, Gpu);
        using var a = CudaTensors.Zeros([2, 7], DType.F32, Gpu);
        using var b = CudaTensors.Zeros([6, 2], DType.F32, Gpu);
        var e = Assert.Throws<ArgumentException>(() => CudaLora.Forward(x, w, a, b, 1f))!;
        Assert.That(e.Message, Does.Contain("A [2, 7]"));
    }

    private static float[] F(Tensor device)
    {
        using var host = device.To(Device.Cpu);
        using var f = host.To(DType.F32);
        return f.ToArray<float>();
    }

    private static double[] D(Tensor t, int rows, int cols)
    {
        var v = t.ToDoubleArray();
        Assert.That(v.Length, Is.EqualTo(rows * cols));
        return v;
    }

    private static double[] Reference(Tensor a, Tensor b, bool transposeB)
    {
        int m = a.Size(0), k = a.Size(1), n = transposeB ? b.Size(0) : b.Size(1);
        return Mul(a.ToDoubleArray(), b.ToDoubleArray(), m, k, n, transposeB);
    }

    /// <summary>[m×k]·[k×n] (or ·[n×k]ᵀ when <paramref name="tb"/>) in float64.</summary>
    private static double[] Mul(double[] a, double[] b, int m, int k, int n, bool tb)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++) s += a[i * k + p] * (tb ? b[j * k + p] : b[p * n + j]);
                c[i * n + j] = s;
            }
        return c;
    }

    private static double[] Transpose(double[] a, int rows, int cols)
    {
        var t = new double[a.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
        return t;
    }

    private static double[] Add(double[] a, double[] b, double s) => a.Select((v, i) => v + s * b[i]).ToArray();
    private static double[] Scale(double[] a, double s) => a.Select(v => v * s).ToArray();
}
