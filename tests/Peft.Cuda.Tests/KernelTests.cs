using Peft.Core.Quantization;

namespace Peft.Cuda.Tests;

/// <summary>Every hand-written kernel against its CPU reference in Peft.Core, on fresh random inputs, outputs poisoned.</summary>
public class KernelTests : GpuTest
{
    [TestCase(1)]
    [TestCase(8)]
    [TestCase(1_000_003)] // the vectorised body and a scalar tail
    public void CastF32ToBf16MatchesTheCpuBitForBit(int n)
    {
        using var x = Tensor.Randn([n], Fresh(), std: 3);
        using var want = x.To(DType.BF16);
        using var xd = x.To(Gpu.Device);
        PoisonNext(Gpu, n * 2L);
        using var yd = CudaKernels.Cast(xd, DType.BF16);
        using var got = yd.To(Device.Cpu);
        Assert.That(got.ToArray<BFloat16>(), Is.EqualTo(want.ToArray<BFloat16>()));
    }

    [TestCase(5)]
    [TestCase(1_000_003)]
    public void CastBf16ToF32IsExact(int n)
    {
        using var x = Tensor.Randn([n], Fresh(), std: 3).To(DType.BF16);
        using var xd = x.To(Gpu.Device);
        PoisonNext(Gpu, n * 4L);
        using var yd = CudaKernels.Cast(xd, DType.F32);
        using var got = yd.To(Device.Cpu);
        using var want = x.To(DType.F32);
        Assert.That(got.ToArray<float>(), Is.EqualTo(want.ToArray<float>()));
    }

    [TestCase(64 * 1024, DType.F32)]
    [TestCase(4097 * 3, DType.F32)]  // odd count: a half-used last byte and a partial last block
    [TestCase(4096 * 64, DType.BF16)]
    public void Nf4DequantMatchesTheCpuReference(int n, DType dtype)
    {
        using var w = Tensor.Randn([n], Fresh(), std: 0.05);
        var (packed, absmax) = Nf4.Quantize(w.ToArray<float>());
        var reference = Nf4.Dequantize(packed, absmax, n);
        using var packedD = Tensor.FromArray(packed).To(Gpu.Device);
        using var absmaxD = Tensor.FromArray(absmax).To(Gpu.Device);
        PoisonNext(Gpu, (long)n * dtype.SizeOf());
        using var yd = CudaKernels.DequantizeNf4(packedD, absmaxD, [n], dtype);
        using var got = yd.To(Device.Cpu);
        using var want = Tensor.FromArray(reference).To(dtype);
        Assert.That(Bits(got), Is.EqualTo(Bits(want)), "f32 is bit-exact; bf16 is the f32 reference rounded to nearest even");
    }

    [TestCase(64 * 700 + 5, DType.F32)]  // 701 NF4 blocks → 3 nested blocks, the last partial
    [TestCase(4096 * 64, DType.BF16)]
    public void DoublyQuantizedNf4DequantMatchesTheCpuReference(int n, DType dtype)
    {
        using var w = Tensor.Randn([n], Fresh(), std: 0.05);
        var (packed, absmax) = Nf4.Quantize(w.ToArray<float>());
        var dq = DoubleQuantizedAbsmax.From(absmax);
        var decoded = dq.Dequantize();
        var reference = Nf4.Dequantize(packed, decoded, n);
        using var codesD = Tensor.FromArray(dq.Codes).To(Gpu.Device);
        using var tableD = Tensor.FromArray(Blockwise8.Code).To(Gpu.Device);
        using var nestedD = Tensor.FromArray(dq.NestedAbsmax).To(Gpu.Device);
        PoisonNext(Gpu, decoded.Length * 4L);
        using (var absmaxD = CudaKernels.DequantizeBlockwise8(codesD, tableD, nestedD, dq.Offset))
        using (var absmaxHost = absmaxD.To(Device.Cpu))
            Assert.That(absmaxHost.ToArray<float>(), Is.EqualTo(decoded), "the decoded statistics, bit for bit (no fused multiply-add)");
        using var packedD = Tensor.FromArray(packed).To(Gpu.Device);
        PoisonNext(Gpu, (long)n * dtype.SizeOf());
        using var yd = CudaKernels.DequantizeNf4(packedD, codesD, tableD, nestedD, dq.Offset, [n], dtype);
        using var got = yd.To(Device.Cpu);
        using var want = Tensor.FromArray(reference).To(dtype);
        Assert.That(Bits(got), Is.EqualTo(Bits(want)));
    }

    [TestCase(257, 1023, DType.F32)]  // cols % 16 ≠ 0: the scalar path
    [TestCase(128, 4096, DType.BF16)] // the vector path
    [TestCase(33, 2048, DType.F32)]
    public void Int8DequantMatchesTheCpuReference(int rows, int cols, DType dtype)
    {
        using var w = Tensor.Randn([rows * cols], Fresh(), std: 0.05);
        var (q, scb) = Int8RowWise.Quantize(w.ToArray<float>(), rows, cols);
        var reference = Int8RowWise.Dequantize(q, scb, rows, cols);
        using var qD = Tensor.FromArray(q, [rows, cols]).To(Gpu.Device);
        using var scbD = Tensor.FromArray(scb).To(Gpu.Device);
        PoisonNext(Gpu, (long)rows * cols * dtype.SizeOf());
        using var yd = CudaKernels.DequantizeInt8(qD, scbD, dtype);
        using var got = yd.To(Device.Cpu);
        using var want = Tensor.FromArray(reference, [rows, cols]).To(dtype);
        Assert.That(Bits(got), Is.EqualTo(Bits(want)));
    }

    [Test]
    public void MisalignedViewsTakeTheScalarPathAndStillMatch()
    {
        int n = 10_001;
        using var x = Tensor.Randn([n + 1], Fresh());
        using var xd = x.To(Gpu.Device);
        using var view = xd.Narrow(0, 1, n); // starts 4 bytes into the block: not 16-byte aligned
        using var yd = CudaKernels.Cast(view, DType.BF16);
        using var got = yd.To(Device.Cpu);
        using var hostView = x.Narrow(0, 1, n);
        using var want = hostView.To(DType.BF16);
        Assert.That(Bits(got), Is.EqualTo(Bits(want)));

        using var w = Tensor.Randn([n], Fresh(), std: 0.05);
        var (packed, absmax) = Nf4.Quantize(w.ToArray<float>());
        using var shifted = Tensor.FromArray(new byte[] { 0x5A }.Concat(packed).ToArray()).To(Gpu.Device);
        using var packedView = shifted.Narrow(0, 1, packed.Length);
        using var absmaxD = Tensor.FromArray(absmax).To(Gpu.Device);
        using var dq = CudaKernels.DequantizeNf4(packedView, absmaxD, [n], DType.F32);
        using var dqHost = dq.To(Device.Cpu);
        Assert.That(dqHost.ToArray<float>(), Is.EqualTo(Nf4.Dequantize(packed, absmax, n)));
    }

    [Test]
    public void PoisonedOutputsAreOverwritten()
    {
        // The launchers allocate their outputs uninitialised; recycle a poisoned block of the same size class so a
        // kernel that skipped elements would leave NaNs behind.
        int n = 300_001;
        PoisonNext(Gpu, n * 4L);
        using var x = Tensor.Randn([n], Fresh()).To(DType.BF16);
        using var xd = x.To(Gpu.Device);
        using var yd = CudaKernels.Cast(xd, DType.F32);
        using var got = yd.To(Device.Cpu);
        Assert.That(got.ToArray<float>().Count(float.IsNaN), Is.Zero);
    }

    private static ushort[] Bits(Tensor t) => t.DType == DType.BF16
        ? t.ToArray<BFloat16>().Select(b => b.Bits).ToArray()
        : t.ToArray<float>().SelectMany(f => { uint u = BitConverter.SingleToUInt32Bits(f); return new[] { (ushort)u, (ushort)(u >> 16) }; }).ToArray();
}
