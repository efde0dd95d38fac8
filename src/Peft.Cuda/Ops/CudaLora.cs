using Peft.Core;

namespace Peft.Cuda;

/// <summary>How the LoRA forward orders its products (both compute y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ; the benchmark compares them).</summary>
public enum LoraForwardOrder
{
    /// <summary>y = s·t·Bᵀ first (a write of y), then the base GEMM accumulates into it: its β = 1 read of y rides in the
    /// GEMM's epilogue, which measured free on an H100 (194 µs with β = 1 against 196 µs without).</summary>
    AdapterFirst,
    /// <summary>y = x·Wᵀ, then y += s·t·Bᵀ (eager PEFT's order: a separate pass reads and writes y).</summary>
    BaseFirst,
}

/// <summary>
/// A LoRA linear layer's forward and backward on CUDA, with the frozen weight's gradient never formed:
/// forward y = x·Wᵀ + s·t·Bᵀ with t = x·Aᵀ; backward u = dY·B, dX = dY·W + s·u·A, dB = s·dYᵀ·t, dA = s·uᵀ·x.
/// x [M, K], W [N, K], A [r, K], B [N, r], all one dtype (f32, bf16, f16), float32 accumulation.
/// The GEMMs are cuBLAS's by default; the thin x·Aᵀ, dY·B, t·Bᵀ and u·A products can run on kernels/lora.cu (bf16,
/// r ∈ {16, 32}; opt-in until they beat cuBLAS). The ordering (thin products first, accumulation through β = 1 in the
/// big GEMM's epilogue, dA/dB beside the dX GEMM on a side stream) is ours.
/// </summary>
public static class CudaLora
{
    /// <summary>Forward: returns y [M, N] and t = x·Aᵀ [M, r] (kept for the backward). <paramref name="kernels"/> runs
    /// the thin products on kernels/lora.cu instead of cuBLAS. It is off by default because it measured slower on an
    /// H100 (27-39 µs per thin product against cuBLAS's 17-25 µs at 4096² × 16; BENCHMARKS.md).</summary>
    public static (Tensor Y, Tensor T) Forward(Tensor x, Tensor w, Tensor a, Tensor b, float scale, LoraForwardOrder order = LoraForwardOrder.AdapterFirst, bool kernels = false)
    {
        var (m, k, n, r) = Check(x, w, a, b);
        var device = CudaTensors.DeviceOf(x);
        var t = CudaTensors.Empty([m, r], x.DType, device);
        var y = CudaTensors.Empty([m, n], x.DType, device);
        LoraKernels.Shrink(x, a, ThinLayout.RK, t, 1f, side: false, kernels);                   // t = x·Aᵀ
        if (order == LoraForwardOrder.AdapterFirst)
        {
            LoraKernels.Expand(t, b, ThinLayout.CR, y, scale, 0f, side: false, kernels);        // y = s·t·Bᵀ
            CudaBlas.Gemm(false, true, m, n, k, 1f, x, k, w, k, 1f, y, n);                      // y += x·Wᵀ
        }
        else
        {
            CudaBlas.Gemm(false, true, m, n, k, 1f, x, k, w, k, 0f, y, n);                      // y = x·Wᵀ
            LoraKernels.Expand(t, b, ThinLayout.CR, y, scale, 1f, side: false, kernels);        // y += s·t·Bᵀ
        }
        return (y, t);
    }

    /// <summary>Backward: (dX or null when <paramref name="inputGrad"/> is false, dA [r, K], dB [N, r]). No dW.
    /// u = dY·B comes first; dX = s·u·A is written before the dX GEMM accumulates into it (β = 1, free in its epilogue);
    /// with <paramref name="overlap"/> dB and dA (memory-bound, cuBLAS) run on a side stream beside the compute-bound dX GEMM.</summary>
    public static (Tensor? DX, Tensor DA, Tensor DB) Backward(Tensor dy, Tensor x, Tensor t, Tensor w, Tensor a, Tensor b, float scale,
        bool inputGrad = true, bool overlap = true, bool kernels = false)
    {
        var (m, k, n, r) = Check(x, w, a, b);
        if (dy.Rank != 2 || dy.Size(0) != m || dy.Size(1) != n) throw new ArgumentException($"LoRA backward: dY must be [{m}, {n}], got {Shapes.Format(dy.Shape)}");
        if (t.Rank != 2 || t.Size(0) != m || t.Size(1) != r) throw new ArgumentException($"LoRA backward: t must be [{m}, {r}], got {Shapes.Format(t.Shape)}");
        CudaTensors.RequireSameDevice("LoRA backward", dy, x, t, w);
        CudaTensors.RequireContiguous(dy, "LoRA backward (dY)");
        CudaTensors.RequireContiguous(t, "LoRA backward (t)");
        var device = CudaTensors.DeviceOf(x);
        using var u = CudaTensors.Empty([m, r], x.DType, device);
        var db = CudaTensors.Empty([n, r], x.DType, device);
        var da = CudaTensors.Empty([r, k], x.DType, device);
        Tensor? dx = inputGrad ? CudaTensors.Empty([m, k], x.DType, device) : null;
        LoraKernels.Shrink(dy, b, ThinLayout.KR, u, 1f, side: false, kernels);                 // u = dY·B
        bool side = overlap && inputGrad;
        if (side) device.Fork();                                                               // u is ready for the side lane
        CudaBlas.Gemm(true, false, n, r, m, scale, dy, n, t, r, 0f, db, r, side);              // dB = s·dYᵀ·t
        CudaBlas.Gemm(true, false, r, k, m, scale, u, r, x, k, 0f, da, k, side);               // dA = s·uᵀ·x
        if (dx != null)
        {
            LoraKernels.Expand(u, a, ThinLayout.RC, dx, scale, 0f, side: false, kernels);      // dX = s·u·A
            CudaBlas.Gemm(false, false, m, k, n, 1f, dy, n, w, k, 1f, dx, k);                  // dX += dY·W
        }
        if (side) device.Join();
        return (dx, da, db);
    }

    private static (int M, int K, int N, int R) Check(Tensor x, Tensor w, Tensor a, Tensor b)
    {
        CudaTensors.RequireSameDevice("LoRA", x, w, a, b);
        foreach (var (t, name) in new[] { (x, "x"), (w, "W"), (a, "A"), (b, "B") })
        {
            if (t.Rank != 2) throw new ArgumentException($"LoRA: {name} must be 2-D, got {Shapes.Format(t.Shape)}");
            CudaTensors.RequireContiguous(t, $"LoRA ({name})");
            if (t.DType != x.DType) throw new ArgumentException($"LoRA: {name} is {t.DType}, x is {x.DType}");
        }
        int m = x.Size(0), k = x.Size(1), n = w.Size(0), r = a.Size(0);
        if (w.Size(1) != k || a.Size(1) != k || b.Size(0) != n || b.Size(1) != r)
            throw new ArgumentException($"LoRA: shapes do not fit: x {Shapes.Format(x.Shape)}, W {Shapes.Format(w.Shape)}, A {Shapes.Format(a.Shape)}, B {Shapes.Format(b.Shape)} (want W [N, K], A [r, K], B [N, r])");
        return (m, k, n, r);
    }
}
