namespace Peft.Core;

// Optimizer steps fused into one kernel on devices (a dozen element-wise launches and temporaries per parameter
// otherwise). The CPU keeps the unfused tensor ops, which the fused kernels reproduce bit for bit.
public sealed partial class Tensor
{
    /// <summary>
    /// AdamW's update of <paramref name="p"/> and its moments in one device pass when all four are dense F32 tensors
    /// on one device other than the CPU; false (nothing done) otherwise, and the caller runs the tensor-op version.
    /// Arguments are torch.optim.AdamW's: lr, betas, eps, weight decay, and the bias corrections 1−β₁ᵗ, 1−β₂ᵗ.
    /// </summary>
    internal static bool TryFusedAdamW(Tensor p, Tensor g, Tensor m, Tensor v, double lr, double beta1, double beta2, double eps, double weightDecay, double bc1, double bc2)
    {
        if (p.Device.Type == DeviceType.Cpu) return false;
        foreach (var t in new[] { p, g, m, v })
            if (t.DType != DType.F32 || !t.IsContiguous || t.Device != p.Device || t.NumEl != p.NumEl) return false;
        var k = DeviceKernels("AdamW", p, g, m, v)!;
        // The factors as the unfused ops see them: each double scalar rounded to F32 once.
        k.AdamW(p, g, m, v, (float)(1 - lr * weightDecay), weightDecay != 0, (float)beta1, (float)(1 - beta1), (float)beta2, (float)(1 - beta2),
            (float)(1 / Math.Sqrt(bc2)), (float)eps, (float)(-lr / bc1));
        return true;
    }

    /// <summary>
    /// <see cref="TryFusedAdamW"/> for a whole parameter group in one device launch: item i is (p, g, m, v) of one
    /// parameter; all dense F32 on one device other than the CPU, else false and nothing done. Same factors, same rounding.
    /// </summary>
    internal static bool TryFusedAdamWMulti(IReadOnlyList<(Tensor P, Tensor G, Tensor M, Tensor V)> items, double lr, double beta1, double beta2, double eps, double weightDecay, double bc1, double bc2)
    {
        if (items.Count == 0 || items[0].P.Device.Type == DeviceType.Cpu) return false;
        var device = items[0].P.Device;
        foreach (var (p, g, m, v) in items)
            foreach (var t in new[] { p, g, m, v })
                if (t.DType != DType.F32 || !t.IsContiguous || t.Device != device || t.NumEl != p.NumEl) return false;
        var k = DeviceKernels("AdamW", items[0].P)!;
        k.AdamWMulti(items.Select(i => i.P).ToArray(), items.Select(i => i.G).ToArray(), items.Select(i => i.M).ToArray(), items.Select(i => i.V).ToArray(),
            (float)(1 - lr * weightDecay), weightDecay != 0, (float)beta1, (float)(1 - beta1), (float)beta2, (float)(1 - beta2),
            (float)(1 / Math.Sqrt(bc2)), (float)eps, (float)(-lr / bc1));
        return true;
    }
}
