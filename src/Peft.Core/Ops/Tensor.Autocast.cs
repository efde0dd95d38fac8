namespace Peft.Core;

// The matrix product under Autocast: low-precision operands, F32 accumulation, a low-precision result — and the same
// rounding in the two gradient products, so F16's underflow and overflow happen where they would on a GPU.
public sealed partial class Tensor
{
    private static Tensor AutocastMatMul(Tensor a, Tensor b, DType low)
    {
        CheckMatMulOperands(a, b);
        var a16 = a.DType == low ? a : a.ToDTypeNoGrad(low);
        var b16 = b.DType == low ? b : b.ToDTypeNoGrad(low);
        Tensor r;
        try
        {
            r = MatMulKernel(a16, b16);
            RoundToLowPrecision(r, low);
        }
        catch
        {
            if (!ReferenceEquals(a16, a)) a16.Dispose();
            if (!ReferenceEquals(b16, b)) b16.Dispose();
            throw;
        }
        int[] sa = a._shape, sb = b._shape;
        bool recorded = false;
        r = Autograd.Record(r, "MatMul(" + low + ")", [a, b], saved =>
        {
            recorded = true;
            // Only the low-precision copies are kept (half the bytes of F32 inputs); each feeds the other's gradient.
            var ka = b.RequiresGrad ? Keep(saved, a16, a) : null;
            var kb = a.RequiresGrad ? Keep(saved, b16, b) : null;
            if (ka == null && !ReferenceEquals(a16, a)) a16.Dispose();
            if (kb == null && !ReferenceEquals(b16, b)) b16.Dispose();
            return (g, need) =>
            {
                using var g16 = g.ToDTypeNoGrad(low);
                Tensor? ga = null, gb = null;
                if (need[0])
                {
                    using var bt = kb!.Transpose(-1, -2);
                    using var full = MatMulKernel(g16, bt);
                    RoundToLowPrecision(full, low);
                    ga = Owned(full.SumToShape(sa), full);
                }
                if (need[1])
                {
                    using var at = ka!.Transpose(-1, -2);
                    using var full = MatMulKernel(at, g16);
                    RoundToLowPrecision(full, low);
                    gb = Owned(full.SumToShape(sb), full);
                }
                return [ga, gb];
            };
        });
        if (!recorded)
        {
            if (!ReferenceEquals(a16, a)) a16.Dispose();
            if (!ReferenceEquals(b16, b)) b16.Dispose();
        }
        return r;
    }

    /// <summary>Saves the low-precision operand for backward: a copy made here is owned by the node, an operand that
    /// already had the dtype is saved by reference.</summary>
    private static Tensor Keep(SavedTensors saved, Tensor low, Tensor original) =>
        ReferenceEquals(low, original) ? saved.Save(original) : saved.Own(low);

    private static unsafe void RoundToLowPrecision(Tensor f32, DType low)
    {
        if (f32.Device.Type != DeviceType.Cpu && DeviceKernels("MatMul(" + low + ")", f32) is { } k)
        {
            using var narrow = k.Cast(f32, low);
            using var back = k.Cast(narrow, DType.F32);
            k.Copy(f32, back);
            return;
        }
        Cpu.Cast.RoundInPlace(f32.Ptr<float>(), f32.NumEl, low);
    }
}
