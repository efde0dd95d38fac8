using Peft.Core;

namespace Peft.Cuda;

/// <summary>How a LoRA factor is stored, seen from the thin product that uses it (kernels/lora.cu).</summary>
internal enum ThinLayout
{
    /// <summary>Shrink with W [R, K] (lora_A: t = x·Aᵀ).</summary>
    RK,
    /// <summary>Shrink with W [K, R] (lora_B: u = dY·B).</summary>
    KR,
    /// <summary>Expand with W [C, R] (lora_B: y = s·t·Bᵀ).</summary>
    CR,
    /// <summary>Expand with W [R, C] (lora_A: dX = s·u·A).</summary>
    RC,
}

/// <summary>
/// The thin products of a LoRA layer: our tensor-core kernels (kernels/lora.cu) where they apply — bf16, rank 16 or 32,
/// M a multiple of 16, K a multiple of 16 (shrink) or C of 64 (expand), 32-byte aligned — and cuBLAS otherwise (same
/// contract, same results within rounding).
/// </summary>
internal static class LoraKernels
{
    private const uint Block = 256;

    /// <summary>out [M, R] = scale · x [M, K] · W(j, k)ᵀ.</summary>
    internal static void Shrink(Tensor x, Tensor w, ThinLayout layout, Tensor output, float scale, bool side, bool kernels)
    {
        int m = x.Size(0), k = x.Size(1), r = output.Size(1);
        var device = CudaTensors.DeviceOf(x);
        if (kernels && ShrinkApplies(x, w, output))
        {
            string name = $"lora_shrink_{(layout == ThinLayout.RK ? "rk" : "kr")}_r{r}_bf16";
            uint grid = (uint)Math.Min(m / 16, device.MultiprocessorCount * 16);
            device.Kernels.Launch(name, (grid, 1, 1), (Block, 1, 1), 0, side,
                CudaTensors.Address(x), CudaTensors.Address(w), CudaTensors.Address(output), (long)m, (long)k, scale);
            return;
        }
        if (layout == ThinLayout.RK) CudaBlas.Gemm(false, true, m, r, k, scale, x, k, w, k, 0f, output, r, side);
        else CudaBlas.Gemm(false, false, m, r, k, scale, x, k, w, r, 0f, output, r, side);
    }

    /// <summary>out [M, C] = beta · out + scale · t [M, R] · W(c, j)ᵀ (beta 0 or 1).</summary>
    internal static void Expand(Tensor t, Tensor w, ThinLayout layout, Tensor output, float scale, float beta, bool side, bool kernels)
    {
        int m = t.Size(0), r = t.Size(1), c = output.Size(1);
        var device = CudaTensors.DeviceOf(t);
        if (kernels && ExpandApplies(t, w, output))
        {
            string name = $"lora_expand_{(layout == ThinLayout.CR ? "cr" : "rc")}_r{r}_bf16";
            long warpTasks = m / 16 * (c / 64);
            uint grid = (uint)Math.Min((warpTasks + 7) / 8, device.MultiprocessorCount * 16L);
            device.Kernels.Launch(name, (grid, 1, 1), (Block, 1, 1), 0, side,
                CudaTensors.Address(t), CudaTensors.Address(w), CudaTensors.Address(output), (long)m, (long)c, scale, beta);
            return;
        }
        if (layout == ThinLayout.CR) CudaBlas.Gemm(false, true, m, c, r, scale, t, r, w, r, beta, output, c, side);
        else CudaBlas.Gemm(false, false, m, c, r, scale, t, r, w, c, beta, output, c, side);
    }

    /// <summary>Whether <see cref="Shrink"/> runs our kernel for these operands (else cuBLAS).</summary>
    internal static bool ShrinkApplies(Tensor x, Tensor w, Tensor output) =>
        output.Size(1) is 16 or 32 && x.Size(0) % 16 == 0 && x.Size(1) % 16 == 0 && Fits(x, w, output);

    /// <summary>Whether <see cref="Expand"/> runs our kernel for these operands (else cuBLAS).</summary>
    internal static bool ExpandApplies(Tensor t, Tensor w, Tensor output) =>
        t.Size(1) is 16 or 32 && t.Size(0) % 16 == 0 && output.Size(1) % 64 == 0 && Fits(t, w, output);

    private static bool Fits(params Tensor[] tensors) =>
        tensors.All(t => t.DType == DType.BF16 && t.IsContiguous && CudaTensors.Address(t) % 32 == 0);
}
