using Peft.Core;
using Peft.Core.Quantization;
using Peft.Cuda;

namespace Peft.Bench;

/// <summary>
/// `kernels` suite (needs a CUDA GPU): the two measured ceilings (device-to-device copy bandwidth, cuBLAS bf16 GEMM
/// rate), each hand-written kernel's time and its share of the copy ceiling, and the CUDA LoRA layer at issue 8's
/// target shape (M = K = N = 4096, r = 16, bf16) against the bare cuBLAS GEMMs. CUDA-event medians after warm-up;
/// random inputs; sizes well past the 50 MB L2 for the memory-bound kernels.
/// </summary>
internal static class CudaKernelBench
{
    public static void Run(TextWriter o) => Run(o, loraOnly: false);

    /// <summary>The suite; <paramref name="loraOnly"/> runs just the LoRA part (`kernels-lora`, for profiling under ncu).</summary>
    public static void Run(TextWriter o, bool loraOnly)
    {
        if (!CudaDevice.IsAvailable(out var reason))
        {
            o.WriteLine($"kernels: skipped, no CUDA device ({reason})");
            return;
        }
        var gpu = CudaDevice.Get(0);
        o.WriteLine($"device: {gpu}, {gpu.MultiprocessorCount} SMs, {gpu.TotalMemoryBytes / (1 << 30)} GiB, driver CUDA {CudaDevice.DriverVersion}");
        if (loraOnly)
        {
            Lora(o, gpu, GemmCeiling(gpu));
            return;
        }
        double copyTbs = CopyCeiling(gpu), gemmTflops = GemmCeiling(gpu);
        o.WriteLine($"ceilings: device-to-device copy {copyTbs:F2} TB/s (read + write); cuBLAS bf16 GEMM 8192^3 {gemmTflops:F0} TFLOP/s");
        o.WriteLine();
        o.WriteLine("| kernel | size | µs | GB/s (read + write) | % of copy |");
        o.WriteLine("| --- | --- | ---: | ---: | ---: |");
        MemoryBound(o, gpu, copyTbs);
        o.WriteLine();
        Lora(o, gpu, gemmTflops);
    }

    private static double CopyCeiling(CudaDevice gpu)
    {
        long bytes = 1L << 30;
        using var a = CudaTensors.Empty([(int)(bytes / 4)], DType.F32, gpu);
        using var b = CudaTensors.Empty([(int)(bytes / 4)], DType.F32, gpu);
        CudaTensors.FillBytes(a, 0x3C);
        double ms = CudaTimer.MedianMilliseconds(gpu, () => CudaTensors.CopyBytes(b, a, bytes));
        return 2.0 * bytes / (ms * 1e-3) / 1e12;
    }

    private static double GemmCeiling(CudaDevice gpu)
    {
        const int n = 8192;
        using var a = Random([n, n], DType.BF16, gpu, 1);
        using var b = Random([n, n], DType.BF16, gpu, 2);
        using var c = CudaTensors.Empty([n, n], DType.BF16, gpu);
        double ms = CudaTimer.MedianMilliseconds(gpu, () => CudaBlas.Gemm(false, false, n, n, n, 1f, a, n, b, n, 0f, c, n), repetitions: 20);
        return 2.0 * n * n * n / (ms * 1e-3) / 1e12;
    }

    private static void MemoryBound(TextWriter o, CudaDevice gpu, double copyTbs)
    {
        const int n = 1 << 27; // 128 Mi elements: 512 MiB of f32, ten times the L2
        using (var x = Random([n], DType.F32, gpu, 3))
        {
            Row(o, gpu, copyTbs, "cast_f32_to_bf16", "128 Mi", n * 6L, () => CudaKernels.Cast(x, DType.BF16).Dispose());
            using var h = CudaKernels.Cast(x, DType.BF16);
            Row(o, gpu, copyTbs, "cast_bf16_to_f32", "128 Mi", n * 6L, () => CudaKernels.Cast(h, DType.F32).Dispose());
        }

        const int rows = 8192, cols = 16384; // 128 Mi weights
        var w = Tensor.Randn([rows * cols], new Peft.Core.Random.Generator(5), std: 0.02).ToArray<float>();
        var (packed, absmax) = Nf4.Quantize(w);
        using (var p = Tensor.FromArray(packed).To(gpu.Device))
        using (var s = Tensor.FromArray(absmax).To(gpu.Device))
        {
            long bytesIn = packed.Length + absmax.Length * 4L;
            Row(o, gpu, copyTbs, "dequant_nf4_bf16", "8192×16384", bytesIn + rows * (long)cols * 2, () => CudaKernels.DequantizeNf4(p, s, [rows, cols], DType.BF16).Dispose());
            Row(o, gpu, copyTbs, "dequant_nf4_f32", "8192×16384", bytesIn + rows * (long)cols * 4, () => CudaKernels.DequantizeNf4(p, s, [rows, cols], DType.F32).Dispose());
        }
        var (q, scb) = Int8RowWise.Quantize(w, rows, cols);
        using (var qd = Tensor.FromArray(q, [rows, cols]).To(gpu.Device))
        using (var sd = Tensor.FromArray(scb).To(gpu.Device))
        {
            long bytesIn = q.Length + scb.Length * 4L;
            Row(o, gpu, copyTbs, "dequant_int8_rowwise_bf16", "8192×16384", bytesIn + rows * (long)cols * 2, () => CudaKernels.DequantizeInt8(qd, sd, DType.BF16).Dispose());
            Row(o, gpu, copyTbs, "dequant_int8_rowwise_f32", "8192×16384", bytesIn + rows * (long)cols * 4, () => CudaKernels.DequantizeInt8(qd, sd, DType.F32).Dispose());
        }
        LowRankHadamard(o, gpu, copyTbs);
        MultiTensorAdamW(o, gpu, copyTbs);
    }

    /// <summary>LoHa's ΔW (4096², r = 16, F32), fused (kernels/lycoris.cu) against the composite it replaces, forward and the
    /// backward's element-wise part; bytes are the least each must move (the fused kernel's).</summary>
    private static void LowRankHadamard(TextWriter o, CudaDevice gpu, double copyTbs)
    {
        const int m = 4096, n = 4096, r = 16;
        using var a1 = Random([m, r], DType.F32, gpu, 11);
        using var b1 = Random([r, n], DType.F32, gpu, 12);
        using var a2 = Random([m, r], DType.F32, gpu, 13);
        using var b2 = Random([r, n], DType.F32, gpu, 14);
        using var g = Random([m, n], DType.F32, gpu, 15);
        using var noGrad = Autograd.NoGrad();
        long delta = (long)m * n * 4;
        Row(o, gpu, copyTbs, "loha_delta_f32 (ΔW, fused)", "4096×4096 r16", delta, () => Tensor.LowRankHadamard(a1, b1, a2, b2, 0.5).Dispose());
        Row(o, gpu, copyTbs, "LoHa ΔW composite (2 GEMMs, 2 muls)", "4096×4096 r16", delta, () =>
        {
            using var p1 = a1.MatMul(b1);
            using var p2 = a2.MatMul(b2);
            using var prod = p1.Mul(p2);
            prod.Mul(0.5).Dispose();
        });
        var ops = new CudaOps();
        Row(o, gpu, copyTbs, "loha_delta_bwd_f32 (G1, G2)", "4096×4096 r16", 3 * delta, () =>
        {
            var (g1, g2) = ops.LowRankHadamardBackward(g, a1, b1, a2, b2, 0.5, true, true);
            g1?.Dispose(); g2?.Dispose();
        });
        Row(o, gpu, copyTbs, "LoHa G1, G2 composite (saved P1, P2)", "4096×4096 r16", 3 * delta, () =>
        {
            using var p1 = a1.MatMul(b1);   // what the composite keeps from forward: only the multiplies are its backward
            using var p2 = a2.MatMul(b2);
            using var sg = g.Mul(0.5);
            sg.Mul(p2).Dispose();
            sg.Mul(p1).Dispose();
        });
    }

    /// <summary>An AdamW step over a LoRA model's factors (GPT-2 124M-shaped: 12 layers × 6 targets × A and B, r = 16):
    /// one launch per tensor (a group per parameter) against one adamw_multi_f32 launch for the group. Bytes: p, g, m, v
    /// read and p, m, v written (28 per element).</summary>
    private static void MultiTensorAdamW(TextWriter o, CudaDevice gpu, double copyTbs)
    {
        var shapes = Enumerable.Range(0, 12).SelectMany(_ => new[] { 768, 768, 768, 768, 3072, 768 }.SelectMany((w, i) =>
            new[] { new[] { 16, i == 5 ? 3072 : 768 }, new[] { w, 16 } })).ToList();
        var parameters = shapes.Select((s, i) => Random(s, DType.F32, gpu, 100 + (ulong)i).RequiresGradient()).ToList();
        foreach (var (p, i) in parameters.Select((p, i) => (p, i))) p.Grad = Random(p.Shape, DType.F32, gpu, 500 + (ulong)i).KeepAlive();
        long elements = parameters.Sum(p => p.NumEl);
        using var perTensor = new Peft.Nn.AdamW(parameters.Select(p => new Peft.Nn.ParamGroup([p], 1e-4, 0.01)));
        using var multi = new Peft.Nn.AdamW([new Peft.Nn.ParamGroup(parameters, 1e-4, 0.01)]);
        string size = $"{parameters.Count} tensors, {elements / 1e6:F1} M";
        Row(o, gpu, copyTbs, "adamw_f32, one launch per tensor", size, elements * 28, perTensor.Step);
        Row(o, gpu, copyTbs, "adamw_multi_f32, one launch", size, elements * 28, multi.Step);
        foreach (var p in parameters) { p.Grad?.Dispose(); p.Dispose(); }
    }

    private static void Row(TextWriter o, CudaDevice gpu, double copyTbs, string name, string size, long bytes, Action body)
    {
        double ms = CudaTimer.MedianMilliseconds(gpu, body, warmup: 3, repetitions: 20);
        double gbs = bytes / (ms * 1e-3) / 1e9;
        o.WriteLine($"| {name} | {size} | {ms * 1e3:F1} | {gbs:F0} | {gbs / (copyTbs * 1e3) * 100:F0}% |");
    }

    private static void Lora(TextWriter o, CudaDevice gpu, double gemmTflops)
    {
        const int m = 4096, k = 4096, n = 4096, r = 16;
        const float scale = 2f;
        using var x = Random([m, k], DType.BF16, gpu, 10);
        using var w = Random([n, k], DType.BF16, gpu, 11, 0.02);
        using var a = Random([r, k], DType.BF16, gpu, 12, 0.02);
        using var b = Random([n, r], DType.BF16, gpu, 13, 0.02);
        using var dy = Random([m, n], DType.BF16, gpu, 14);
        using var y = CudaTensors.Empty([m, n], DType.BF16, gpu);
        using var dx = CudaTensors.Empty([m, k], DType.BF16, gpu);
        double Fwd(LoraForwardOrder order, bool kernels) => CudaTimer.MedianMilliseconds(gpu, () =>
        {
            var (yy, tt) = CudaLora.Forward(x, w, a, b, scale, order, kernels);
            yy.Dispose();
            tt.Dispose();
        });
        var (y0, t) = CudaLora.Forward(x, w, a, b, scale);
        y0.Dispose();
        double Bwd(bool overlap, bool kernels) => CudaTimer.MedianMilliseconds(gpu, () =>
        {
            var (gx, ga, gb) = CudaLora.Backward(dy, x, t, w, a, b, scale, overlap: overlap, kernels: kernels);
            gx!.Dispose();
            ga.Dispose();
            gb.Dispose();
        });
        // The GPU's clocks drift between measurements (one run saw the same base GEMM at 0.215 and 0.187 ms): every
        // item is measured once per round, rounds interleave, and each figure is the median over rounds.
        const int rounds = 5;
        var samples = new double[9, rounds];
        for (int round = 0; round < rounds; round++)
        {
            samples[0, round] = CudaTimer.MedianMilliseconds(gpu, () => CudaBlas.Gemm(false, true, m, n, k, 1f, x, k, w, k, 0f, y, n));
            samples[1, round] = Fwd(LoraForwardOrder.AdapterFirst, kernels: true);
            samples[2, round] = Fwd(LoraForwardOrder.BaseFirst, kernels: true);
            samples[3, round] = Fwd(LoraForwardOrder.AdapterFirst, kernels: false);
            samples[4, round] = CudaTimer.MedianMilliseconds(gpu, () => CudaBlas.Gemm(false, false, m, k, n, 1f, dy, n, w, k, 0f, dx, k));
            samples[5, round] = Bwd(overlap: true, kernels: true);
            samples[6, round] = Bwd(overlap: false, kernels: true);
            samples[7, round] = Bwd(overlap: true, kernels: false);
        }
        Breakdown(o, gpu, x, w, a, b, dy, y, dx, t, scale);
        t.Dispose();
        double Median(int item) => Enumerable.Range(0, rounds).Select(r => samples[item, r]).Order().ElementAt(rounds / 2);
        double baseMs = Median(0), adapterFirst = Median(1), baseFirst = Median(2), cublasFwd = Median(3), dxMs = Median(4), bwd = Median(5), bwdSerial = Median(6), cublasBwd = Median(7);
        double tflops = 2.0 * m * n * k / (baseMs * 1e-3) / 1e12;
        o.WriteLine($"LoRA layer, M = K = N = {m}, r = {r}, bf16 (base GEMMs cuBLAS; thin products kernels/lora.cu unless noted; medians of {rounds} interleaved rounds):");
        o.WriteLine("| what | ms | ratio |");
        o.WriteLine("| --- | ---: | ---: |");
        o.WriteLine($"| base GEMM x·Wᵀ | {baseMs:F3} | 1.00 ({tflops:F0} TFLOP/s, {tflops / gemmTflops * 100:F0}% of the 8192³ rate) |");
        o.WriteLine($"| LoRA forward, adapter first, thin products on cuBLAS (the default) | {cublasFwd:F3} | {cublasFwd / baseMs:F2}× base |");
        o.WriteLine($"| LoRA forward, adapter first, thin products on kernels/lora.cu | {adapterFirst:F3} | {adapterFirst / baseMs:F2}× base |");
        o.WriteLine($"| LoRA forward, base first (eager order), kernels/lora.cu | {baseFirst:F3} | {baseFirst / baseMs:F2}× base |");
        o.WriteLine($"| dX GEMM dY·W | {dxMs:F3} | 1.00 |");
        o.WriteLine($"| LoRA backward (dX, dA, dB; no dW), dA/dB on a side stream, cuBLAS (the default) | {cublasBwd:F3} | {cublasBwd / dxMs:F2}× dX GEMM |");
        o.WriteLine($"| LoRA backward, side stream, thin products on kernels/lora.cu | {bwd:F3} | {bwd / dxMs:F2}× dX GEMM |");
        o.WriteLine($"| LoRA backward, one stream, kernels/lora.cu | {bwdSerial:F3} | {bwdSerial / dxMs:F2}× dX GEMM |");
    }

    /// <summary>Each GEMM of the LoRA layer alone, with the bytes it must move at least: where the overhead over the
    /// bare base GEMM goes (printed before the summary table).</summary>
    private static void Breakdown(TextWriter o, CudaDevice gpu, Tensor x, Tensor w, Tensor a, Tensor b, Tensor dy, Tensor y, Tensor dx, Tensor t, float s)
    {
        int m = x.Size(0), k = x.Size(1), n = w.Size(0), r = a.Size(0);
        using var u = CudaTensors.Empty([m, r], DType.BF16, gpu);
        using var da = CudaTensors.Empty([r, k], DType.BF16, gpu);
        using var db = CudaTensors.Empty([n, r], DType.BF16, gpu);
        CudaBlas.Gemm(false, false, m, r, n, 1f, dy, n, b, r, 0f, u, r);
        o.WriteLine("LoRA GEMMs one by one (bytes: the least each must move, bf16; lora_* rows are kernels/lora.cu, the others cuBLAS):");
        o.WriteLine("| GEMM | shape (m × n × k) | µs | MB moved | GB/s |");
        o.WriteLine("| --- | --- | ---: | ---: | ---: |");
        void Row(string what, int mm, int nn, int kk, double mb, Action gemm)
        {
            double ms = CudaTimer.MedianMilliseconds(gpu, gemm);
            o.WriteLine($"| {what} | {mm} × {nn} × {kk} | {ms * 1e3:F1} | {mb:F1} | {mb / 1e3 / (ms * 1e-3):F0} |");
        }
        double MB(long elements) => elements * 2 / 1e6;
        Row("t = x·Aᵀ", m, r, k, MB((long)m * k), () => CudaBlas.Gemm(false, true, m, r, k, 1f, x, k, a, k, 0f, t, r));
        Row("t = x·Aᵀ, lora_shrink_rk", m, r, k, MB((long)m * k), () => LoraKernels.Shrink(x, a, ThinLayout.RK, t, 1f, false, true));
        Row("y = s·t·Bᵀ (β = 0), lora_expand_cr", m, n, r, MB((long)m * n), () => LoraKernels.Expand(t, b, ThinLayout.CR, y, s, 0f, false, true));
        Row("u = dY·B, lora_shrink_kr", m, r, n, MB((long)m * n), () => LoraKernels.Shrink(dy, b, ThinLayout.KR, u, 1f, false, true));
        Row("dX = s·u·A (β = 0), lora_expand_rc", m, k, r, MB((long)m * k), () => LoraKernels.Expand(u, a, ThinLayout.RC, dx, s, 0f, false, true));
        Row("y = s·t·Bᵀ (β = 0)", m, n, r, MB((long)m * n), () => CudaBlas.Gemm(false, true, m, n, r, s, t, r, b, r, 0f, y, n));
        Row("y += s·t·Bᵀ (β = 1)", m, n, r, MB(2L * m * n), () => CudaBlas.Gemm(false, true, m, n, r, s, t, r, b, r, 1f, y, n));
        Row("y = x·Wᵀ (β = 0)", m, n, k, MB((long)m * k + (long)n * k + (long)m * n), () => CudaBlas.Gemm(false, true, m, n, k, 1f, x, k, w, k, 0f, y, n));
        Row("y += x·Wᵀ (β = 1)", m, n, k, MB((long)m * k + (long)n * k + 2L * m * n), () => CudaBlas.Gemm(false, true, m, n, k, 1f, x, k, w, k, 1f, y, n));
        Row("u = dY·B", m, r, n, MB((long)m * n), () => CudaBlas.Gemm(false, false, m, r, n, 1f, dy, n, b, r, 0f, u, r));
        Row("dB = s·dYᵀ·t", n, r, m, MB((long)m * n), () => CudaBlas.Gemm(true, false, n, r, m, s, dy, n, t, r, 0f, db, r));
        Row("dA = s·uᵀ·x", r, k, m, MB((long)m * k), () => CudaBlas.Gemm(true, false, r, k, m, s, u, r, x, k, 0f, da, k));
        Row("dX += s·u·A (β = 1)", m, k, r, MB(2L * m * k), () => CudaBlas.Gemm(false, false, m, k, r, s, u, r, a, k, 1f, dx, k));
        o.WriteLine();
    }

    private static Tensor Random(int[] shape, DType dtype, CudaDevice gpu, ulong seed, double std = 1)
    {
        using var host = Tensor.Randn(shape, new Peft.Core.Random.Generator(seed), std: std);
        using var cast = host.To(dtype);
        return cast.To(gpu.Device);
    }
}
