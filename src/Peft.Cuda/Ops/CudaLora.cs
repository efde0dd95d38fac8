using Peft.Core;

namespace Peft.Cuda;

/// <summary>How the LoRA forward orders its GEMMs (both compute y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ; the benchmark compares them).</summary>
public enum LoraForwardOrder
{
    /// <summary>y = s·t·Bᵀ first (a thin write of y), then the base GEMM accumulates into it (β = 1: the read of y rides
    /// in the GEMM's epilogue instead of a separate read-modify-write pass).</summary>
    AdapterFirst,
    /// <summary>y = x·Wᵀ, then y += s·t·Bᵀ (eager PEFT's order: a separate pass reads and writes y).</summary>
    BaseFirst,
    /// <summary>As <see cref="BaseFirst"/>, with t = x·Aᵀ (memory-bound) on a side stream beside the compute-bound base GEMM.</summary>
    Overlapped,
}

/// <summary>
/// A LoRA linear layer's forward and backward on CUDA, with the frozen weight's gradient never formed:
/// forward y = x·Wᵀ + s·t·Bᵀ with t = x·Aᵀ; backward u = dY·B, dX = dY·W + s·u·A, dB = s·dYᵀ·t, dA = s·uᵀ·x.
/// x [M, K], W [N, K], A [r, K], B [N, r], all one dtype (f32, bf16, f16), float32 accumulation.
/// The GEMMs are cuBLAS's; the ordering (thin products first, accumulation through β = 1) is ours.
/// </summary>
public static class CudaLora
{
    /// <summary>Forward: returns y [M, N] and t = x·Aᵀ [M, r] (kept for the backward).</summary>
    public static (Tensor Y, Tensor T) Forward(Tensor x, Tensor w, Tensor a, Tensor b, float scale, LoraForwardOrder order = LoraForwardOrder.AdapterFirst)
    {
        var (m, k, n, r) = Check(x, w, a, b);
        var device = CudaTensors.DeviceOf(x);
        var t = CudaTensors.Empty([m, r], x.DType, device);
        var y = CudaTensors.Empty([m, n], x.DType, device);
        if (order == LoraForwardOrder.Overlapped)
        {
            device.Fork();
            CudaBlas.Gemm(false, true, m, r, k, 1f, x, k, a, k, 0f, t, r, side: true);  // t = x·Aᵀ        (side)
            CudaBlas.Gemm(false, true, m, n, k, 1f, x, k, w, k, 0f, y, n);              // y = x·Wᵀ        (main)
            device.Join();
            CudaBlas.Gemm(false, true, m, n, r, scale, t, r, b, r, 1f, y, n);           // y += s·t·Bᵀ
            return (y, t);
        }
        CudaBlas.Gemm(false, true, m, r, k, 1f, x, k, a, k, 0f, t, r);                 // t = x·Aᵀ
        if (order == LoraForwardOrder.AdapterFirst)
        {
            CudaBlas.Gemm(false, true, m, n, r, scale, t, r, b, r, 0f, y, n);           // y = s·t·Bᵀ
            CudaBlas.Gemm(false, true, m, n, k, 1f, x, k, w, k, 1f, y, n);              // y += x·Wᵀ
        }
        else
        {
            CudaBlas.Gemm(false, true, m, n, k, 1f, x, k, w, k, 0f, y, n);              // y = x·Wᵀ
            CudaBlas.Gemm(false, true, m, n, r, scale, t, r, b, r, 1f, y, n);           // y += s·t·Bᵀ
        }
        return (y, t);
    }

    /// <summary>Backward: (dX or null when <paramref name="inputGrad"/> is false, dA [r, K], dB [N, r]). No dW.
    /// With <paramref name="overlap"/> the thin, memory-bound products (u, dB, dA) run on a side stream beside the
    /// compute-bound dX GEMM; the result is the same.</summary>
    public static (Tensor? DX, Tensor DA, Tensor DB) Backward(Tensor dy, Tensor x, Tensor t, Tensor w, Tensor a, Tensor b, float scale, bool inputGrad = true, bool overlap = true)
    {
        var (m, k, n, r) = Check(x, w, a, b);
        if (dy.Rank != 2 || dy.Size(0) != m || dy.Size(1) != n) throw new ArgumentException($"LoRA backward: dY must be [{m}, {n}], got {Shapes.Format(dy.Shape)}");
        if (t.Rank != 2 || t.Size(0) != m || t.Size(1) != r) throw new ArgumentException($"LoRA backward: t must be [{m}, {r}], got {Shapes.Format(t.Shape)}");
        CudaTensors.RequireSameDevice("LoRA backward", dy, x, t, w);
        var device = CudaTensors.DeviceOf(x);
        using var u = CudaTensors.Empty([m, r], x.DType, device);
        var db = CudaTensors.Empty([n, r], x.DType, device);
        var da = CudaTensors.Empty([r, k], x.DType, device);
        Tensor? dx = inputGrad ? CudaTensors.Empty([m, k], x.DType, device) : null;
        bool side = overlap && inputGrad;
        if (side) device.Fork();
        CudaBlas.Gemm(false, false, m, r, n, 1f, dy, n, b, r, 0f, u, r, side);            // u = dY·B
        CudaBlas.Gemm(true, false, n, r, m, scale, dy, n, t, r, 0f, db, r, side);         // dB = s·dYᵀ·t
        CudaBlas.Gemm(true, false, r, k, m, scale, u, r, x, k, 0f, da, k, side);          // dA = s·uᵀ·x
        if (dx != null)
        {
            CudaBlas.Gemm(false, false, m, k, n, 1f, dy, n, w, k, 0f, dx, k);             // dX = dY·W      (main)
            if (side) device.Join();                                                     // u is ready
            CudaBlas.Gemm(false, false, m, k, r, scale, u, r, a, k, 1f, dx, k);           // dX += s·u·A
        }
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
