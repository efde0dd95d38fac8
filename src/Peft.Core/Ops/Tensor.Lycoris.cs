namespace Peft.Core;

// Fused ops of the LyCORIS methods (LoHa), one autograd node each, on the CPU and on devices.
public sealed partial class Tensor
{
    /// <summary>
    /// LoHa's weight delta s·(a1·b1) ⊙ (a2·b2) for a1, a2 [M, R] and b1, b2 [R, N], as one op: neither rank-R product is
    /// stored, forward or for backward (which recomputes them element by element and saves only the four factors), so
    /// building ΔW writes M·N values once instead of three times. On CUDA this is kernels/lycoris.cu. F32 operands (F64
    /// too on the CPU); under autocast, with other dtypes or with different ranks it is the composite
    /// <c>(a1.MatMul(b1) * a2.MatMul(b2)) * s</c>, which it equals up to F32 rounding.
    /// </summary>
    public static Tensor LowRankHadamard(Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale)
    {
        const string op = "LowRankHadamard";
        if (a1.Rank != 2 || b1.Rank != 2 || a2.Rank != 2 || b2.Rank != 2)
            throw new ShapeMismatchException($"{op} takes 2-D factors, got {Shapes.Format(a1._shape)}, {Shapes.Format(b1._shape)}, {Shapes.Format(a2._shape)}, {Shapes.Format(b2._shape)}");
        int m = a1.Size(0), r = a1.Size(1), n = b1.Size(1);
        if (b1.Size(0) != r || a2.Size(0) != m || b2.Size(1) != n || b2.Size(0) != a2.Size(1))
            throw new ShapeMismatchException($"{op}: a1 {Shapes.Format(a1._shape)}·b1 {Shapes.Format(b1._shape)} and a2 {Shapes.Format(a2._shape)}·b2 {Shapes.Format(b2._shape)} must both be [M, N] products");
        var device = DeviceKernels(op, a1, b1, a2, b2);
        var dtype = a1.DType;
        bool fused = Autocast.Current == null && a2.Size(1) == r && b1.DType == dtype && a2.DType == dtype && b2.DType == dtype
                     && (dtype == DType.F32 || (dtype == DType.F64 && device == null));
        if (!fused)
        {
            using var p1 = a1.MatMul(b1);
            using var p2 = a2.MatMul(b2);
            using var prod = p1.Mul(p2);
            return prod.Mul(scale);
        }
        using var c1 = a1.ContiguousData();
        using var d1 = b1.ContiguousData();
        using var c2 = a2.ContiguousData();
        using var d2 = b2.ContiguousData();
        var delta = device?.LowRankHadamard(c1, d1, c2, d2, scale) ?? CpuLowRankHadamard(c1, d1, c2, d2, scale);
        return Autograd.Record(delta, op, [a1, b1, a2, b2], saved =>
        {
            var (sa1, sb1, sa2, sb2) = (saved.Save(c1), saved.Save(d1), saved.Save(c2), saved.Save(d2));
            return (g, need) =>
            {
                bool want1 = need[0] || need[1], want2 = need[2] || need[3];
                using var gc = g.ContiguousData();
                var (g1, g2) = device?.LowRankHadamardBackward(gc, sa1, sb1, sa2, sb2, scale, want1, want2)
                               ?? CpuLowRankHadamardBackward(gc, sa1, sb1, sa2, sb2, scale, want1, want2);
                using (g1)
                using (g2)
                    return [need[0] ? TimesT(g1!, sb1) : null, need[1] ? TTimes(sa1, g1!) : null,
                            need[2] ? TimesT(g2!, sb2) : null, need[3] ? TTimes(sa2, g2!) : null];
            };
        });
    }

    /// <summary>x·yᵀ (d a = G·bᵀ) and xᵀ·y (d b = aᵀ·G), through transposed views.</summary>
    private static Tensor TimesT(Tensor x, Tensor y) { using var yt = y.Transpose(0, 1); return x.MatMul(yt); }

    private static Tensor TTimes(Tensor x, Tensor y) { using var xt = x.Transpose(0, 1); return xt.MatMul(y); }

    private static unsafe Tensor CpuLowRankHadamard(Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale)
    {
        int m = a1.Size(0), r = a1.Size(1), n = b1.Size(1);
        var delta = Allocate([m, n], a1.DType, zero: false);
        if (a1.DType == DType.F64)
            Cpu.LowRankHadamard.Forward(a1.Ptr<double>(), b1.Ptr<double>(), a2.Ptr<double>(), b2.Ptr<double>(), delta.Ptr<double>(), m, n, r, scale);
        else
            Cpu.LowRankHadamard.Forward(a1.Ptr<float>(), b1.Ptr<float>(), a2.Ptr<float>(), b2.Ptr<float>(), delta.Ptr<float>(), m, n, r, (float)scale);
        return delta;
    }

    private static unsafe (Tensor? G1, Tensor? G2) CpuLowRankHadamardBackward(Tensor g, Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale, bool want1, bool want2)
    {
        int m = a1.Size(0), r = a1.Size(1), n = b1.Size(1);
        var g1 = want1 ? Allocate([m, n], a1.DType, zero: false) : null;
        var g2 = want2 ? Allocate([m, n], a1.DType, zero: false) : null;
        if (a1.DType == DType.F64)
            Cpu.LowRankHadamard.Backward(g.Ptr<double>(), a1.Ptr<double>(), b1.Ptr<double>(), a2.Ptr<double>(), b2.Ptr<double>(),
                g1 == null ? null : g1.Ptr<double>(), g2 == null ? null : g2.Ptr<double>(), m, n, r, scale);
        else
            Cpu.LowRankHadamard.Backward(g.Ptr<float>(), a1.Ptr<float>(), b1.Ptr<float>(), a2.Ptr<float>(), b2.Ptr<float>(),
                g1 == null ? null : g1.Ptr<float>(), g2 == null ? null : g2.Ptr<float>(), m, n, r, (float)scale);
        return (g1, g2);
    }
}
