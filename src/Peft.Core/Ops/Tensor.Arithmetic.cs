using Peft.Core.Cpu;

namespace Peft.Core;

// Broadcasting arithmetic. Every backward sums broadcast gradients back to the input shape through SumToShape.
public sealed partial class Tensor
{
    /// <summary>Throws unless every tensor is a live CPU F32/F64 tensor of one dtype.</summary>
    internal static void CheckFloatOperands(string op, params Tensor[] ts)
    {
        foreach (var t in ts)
        {
            t.ThrowIfDisposed();
            if (t.Device.Type != DeviceType.Cpu)
                throw new NotSupportedException($"{op} has no {t.Device.Type} implementation yet; move the tensors with .To(Device.Cpu)");
            if (t.DType is not (DType.F32 or DType.F64))
                throw new DTypeMismatchException($"{op} computes in F32 or F64 on the CPU, got {t.DType}; convert with .To(DType.F32)");
            if (t.DType != ts[0].DType)
                throw new DTypeMismatchException($"{op}: dtypes differ ({ts[0].DType} vs {t.DType})");
        }
    }

    internal static Tensor BinaryKernel(BinaryOp op, Tensor a, Tensor b)
    {
        if (a.Device != b.Device && (a.Device.Type == DeviceType.Cpu ? a : b) is { Rank: 0 } hostScalar)
        {
            // A CPU 0-dim tensor combines with a device tensor, as in torch: it is copied over (one element).
            using var moved = hostScalar.To(ReferenceEquals(hostScalar, a) ? b.Device : a.Device);
            return ReferenceEquals(hostScalar, a) ? BinaryKernel(op, moved, b) : BinaryKernel(op, a, moved);
        }
        if ((a.Device.Type != DeviceType.Cpu || b.Device.Type != DeviceType.Cpu) && DeviceKernels(op.ToString(), a, b) is { } k)
        {
            using var da = WidenOnDevice(k, op.ToString(), a);
            using var db = WidenOnDevice(k, op.ToString(), b);
            return k.Binary(op, da ?? a, db ?? b, Shapes.Broadcast(a._shape, b._shape));
        }
        // BF16/F16 operands (frozen low-precision weights) widen exactly to F32, as torch promotes bf16 with f32.
        using var wa = a.DType is DType.BF16 or DType.F16 ? a.ToDTypeNoGrad(DType.F32) : null;
        using var wb = b.DType is DType.BF16 or DType.F16 ? b.ToDTypeNoGrad(DType.F32) : null;
        a = wa ?? a;
        b = wb ?? b;
        CheckFloatOperands(op.ToString(), a, b);
        var o = Allocate(Shapes.Broadcast(a._shape, b._shape), a.DType, zero: false);
        if (a.DType == DType.F64) Elementwise<double>.Binary(op, a, b, o);
        else Elementwise<float>.Binary(op, a, b, o);
        return o;
    }

    /// <summary>Sums a (broadcast) gradient down to <paramref name="shape"/>: leading extra dims and dims that were 1.</summary>
    public Tensor SumToShape(int[] shape)
    {
        if (_shape.AsSpan().SequenceEqual(shape)) return this;
        int extra = Rank - shape.Length;
        if (extra < 0) throw new ShapeMismatchException($"cannot sum {Shapes.Format(_shape)} down to {Shapes.Format(shape)}");
        var dims = new List<int>();
        for (int i = 0; i < Rank; i++)
            if (i < extra || (shape[i - extra] == 1 && _shape[i] != 1)) dims.Add(i);
        using var summed = Sum(dims.ToArray(), keepDim: true);
        return summed.Reshape(shape);
    }

    /// <summary>this + other (broadcast).</summary>
    public Tensor Add(Tensor other)
    {
        var r = BinaryKernel(BinaryOp.Add, this, other);
        int[] sa = _shape, sb = other._shape;
        return Autograd.Record(r, "Add", [this, other], (g, need) => [need[0] ? g.SumToShape(sa) : null, need[1] ? g.SumToShape(sb) : null]);
    }

    /// <summary>this − other (broadcast).</summary>
    public Tensor Sub(Tensor other)
    {
        var r = BinaryKernel(BinaryOp.Sub, this, other);
        int[] sa = _shape, sb = other._shape;
        return Autograd.Record(r, "Sub", [this, other], (g, need) =>
        {
            Tensor? gb = null;
            if (need[1]) { using var ng = g.Neg(); gb = Owned(ng.SumToShape(sb), ng); }
            return [need[0] ? g.SumToShape(sa) : null, gb];
        });
    }

    /// <summary>this ⊙ other (broadcast).</summary>
    public Tensor Mul(Tensor other)
    {
        var r = BinaryKernel(BinaryOp.Mul, this, other);
        int[] sa = _shape, sb = other._shape;
        return Autograd.Record(r, "Mul", [this, other], saved =>
        {
            // Each factor is needed only for the other's gradient.
            var a = other.RequiresGrad ? saved.Save(this) : null;
            var b = RequiresGrad ? saved.Save(other) : null;
            return (g, need) => [need[0] ? ReduceProduct(g, b!, sa) : null, need[1] ? ReduceProduct(g, a!, sb) : null];
        });
    }

    /// <summary>this / other (broadcast).</summary>
    public Tensor Div(Tensor other)
    {
        var r = BinaryKernel(BinaryOp.Div, this, other);
        int[] sa = _shape, sb = other._shape;
        return Autograd.Record(r, "Div", [this, other], saved =>
        {
        var (b, y) = (saved.Save(other), saved.Save(r));
        return (g, need) =>
        {
            Tensor? ga = null, gb = null;
            if (need[0]) { using var q = g.Div(b); ga = Owned(q.SumToShape(sa), q); }
            if (need[1])
            {
                // d(a/b)/db = −(a/b)/b
                using var q = y.Div(b);
                using var p = g.Mul(q);
                using var n = p.Neg();
                gb = Owned(n.SumToShape(sb), n);
            }
            return [ga, gb];
        };
        });
    }

    /// <summary>this ^ exponent, element-wise (broadcast).</summary>
    public Tensor Pow(Tensor exponent)
    {
        var r = BinaryKernel(BinaryOp.Pow, this, exponent);
        return Autograd.Record(r, "Pow", [this, exponent], saved =>
        {
        var (a, b, y) = (saved.Save(this), saved.Save(exponent), saved.Save(r));
        return (g, need) =>
        {
            Tensor? ga = null, gb = null;
            if (need[0])
            {
                using var bm1 = b.Add(-1.0);
                using var pw = a.Pow(bm1);
                using var d = pw.Mul(b);
                ga = ReduceProduct(g, d, a._shape);
            }
            if (need[1])
            {
                using var la = a.Log();
                using var d = y.Mul(la);
                gb = ReduceProduct(g, d, b._shape);
            }
            return [ga, gb];
        };
        });
    }

    /// <summary>Element-wise maximum (gradient goes to the larger input; ties split evenly).</summary>
    public Tensor Maximum(Tensor other) => MinMax(other, BinaryOp.Maximum);

    /// <summary>Element-wise minimum (gradient goes to the smaller input; ties split evenly).</summary>
    public Tensor Minimum(Tensor other) => MinMax(other, BinaryOp.Minimum);

    private Tensor MinMax(Tensor other, BinaryOp op)
    {
        var r = BinaryKernel(op, this, other);
        return Autograd.Record(r, op.ToString(), [this, other], saved =>
        {
            var (a, b) = (saved.Save(this), saved.Save(other));
            return (g, need) =>
            {
                using var wa = Weight(a, b);
                using var wb = Weight(b, a);
                return [need[0] ? ReduceProduct(g, wa, a._shape) : null, need[1] ? ReduceProduct(g, wb, b._shape) : null];
            };
        });
        Tensor Weight(Tensor x, Tensor y)
        {
            // 1 where x wins, 0.5 on ties, 0 where it loses.
            using var win = BinaryKernel(op == BinaryOp.Maximum ? BinaryOp.Greater : BinaryOp.Less, x, y);
            using var tie = BinaryKernel(BinaryOp.Equal, x, y);
            using var half = tie.Mul(0.5);
            return win.Add(half);
        }
    }

    /// <summary>(g ⊙ factor) summed down to <paramref name="shape"/>, as a tensor the caller owns.</summary>
    private static Tensor ReduceProduct(Tensor g, Tensor factor, int[] shape)
    {
        var p = g.Mul(factor);
        var s = p.SumToShape(shape);
        if (!ReferenceEquals(s, p)) p.Dispose();
        return s;
    }

    /// <summary>A tensor holding <paramref name="reduced"/>'s data that stays valid when the caller disposes <paramref name="source"/>.</summary>
    private static Tensor Owned(Tensor reduced, Tensor source) => ReferenceEquals(reduced, source) ? source.Detach() : reduced;

    /// <summary>Element-wise this &gt; other as a U8 mask (no gradient).</summary>
    public Tensor Gt(Tensor other) => CompareMask(BinaryOp.Greater, this, other);

    /// <summary>Element-wise this &lt; other as a U8 mask (no gradient).</summary>
    public Tensor Lt(Tensor other) => CompareMask(BinaryOp.Less, this, other);

    /// <summary>Element-wise this == other as a U8 mask (no gradient).</summary>
    public Tensor Eq(Tensor other) => CompareMask(BinaryOp.Equal, this, other);

    private static Tensor CompareMask(BinaryOp op, Tensor a, Tensor b)
    {
        using var f = BinaryKernel(op, a, b);
        return f.ToDTypeNoGrad(DType.U8);
    }

    /// <summary>A scalar tensor of this tensor's dtype.</summary>
    internal Tensor ScalarLike(double v) => Scalar(v, DType);

    /// <summary>this + s.</summary>
    public Tensor Add(double s) => UnaryOpWithGrad(UnaryOp.AddScalar, s, 0, "AddScalar", (g, x, y) => g);

    /// <summary>this − s.</summary>
    public Tensor Sub(double s) => Add(-s);

    /// <summary>this · s.</summary>
    public Tensor Mul(double s) => UnaryOpWithGrad(UnaryOp.MulScalar, s, 0, "MulScalar", (g, x, y) => g.Mul(s));

    /// <summary>this / s.</summary>
    public Tensor Div(double s) => Mul(1.0 / s);

    /// <summary>this ^ p for a scalar exponent.</summary>
    public Tensor Pow(double p) => UnaryOpWithGrad(UnaryOp.PowScalar, p, 0, "PowScalar", (g, x, y) =>
    {
        using var pm1 = x.Pow(p - 1);
        using var d = pm1.Mul(p);
        return g.Mul(d);
    });

    /// <summary>−this.</summary>
    public Tensor Neg() => UnaryOpWithGrad(UnaryOp.Neg, 0, 0, "Neg", (g, x, y) => g.Neg());

#pragma warning disable CS1591 // operators are documented by the methods they call
    public static Tensor operator +(Tensor a, Tensor b) => a.Add(b);
    public static Tensor operator -(Tensor a, Tensor b) => a.Sub(b);
    public static Tensor operator *(Tensor a, Tensor b) => a.Mul(b);
    public static Tensor operator /(Tensor a, Tensor b) => a.Div(b);
    public static Tensor operator +(Tensor a, double b) => a.Add(b);
    public static Tensor operator -(Tensor a, double b) => a.Add(-b);
    public static Tensor operator *(Tensor a, double b) => a.Mul(b);
    public static Tensor operator *(double b, Tensor a) => a.Mul(b);
    public static Tensor operator /(Tensor a, double b) => a.Div(b);
    public static Tensor operator -(Tensor a) => a.Neg();
#pragma warning restore CS1591
}
