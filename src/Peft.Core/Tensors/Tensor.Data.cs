using System.Globalization;
using System.Text;

namespace Peft.Core;

// Reading elements out, dtype conversion and in-place updates (which never record autograd nodes).
public sealed partial class Tensor
{
    /// <summary>Copies the elements (row-major) into a new array; <typeparamref name="T"/> must match the dtype.</summary>
    public unsafe T[] ToArray<T>() where T : unmanaged
    {
        if (DTypeOf<T>() != DType && !(typeof(T) == typeof(bool) && DType == DType.U8))
            throw new DTypeMismatchException($"ToArray<{typeof(T).Name}>() on a {DType} tensor; convert with To(DType) first or use ToDoubleArray()");
        using var c = HostData();
        return c.Span<T>().ToArray();
    }

    /// <summary>Elements converted to float.</summary>
    public float[] ToFloatArray()
    {
        using var f = DType == DType.F32 ? null : ToDTypeNoGrad(DType.F32);
        return (f ?? this).ToArray<float>();
    }

    /// <summary>Elements converted to double (exact for every dtype but very large I64).</summary>
    public unsafe double[] ToDoubleArray()
    {
        using var c = HostData();
        var r = new double[c.NumEl];
        byte* p = c.Ptr<byte>();
        int e = DType.SizeOf();
        for (long i = 0; i < r.Length; i++) r[i] = Cpu.ElementIO.Read(p + i * e, DType);
        return r;
    }

    /// <summary>The single element of a one-element tensor, as a double.</summary>
    public unsafe double Item()
    {
        if (NumEl != 1) throw new InvalidOperationException($"Item() needs exactly one element, this tensor has shape {Shapes.Format(_shape)}");
        if (Device.Type != DeviceType.Cpu)
        {
            using var host = To(Device.Cpu);
            return host.Item();
        }
        return Cpu.ElementIO.Read(Ptr<byte>(), DType);
    }

    /// <summary>Converts to <paramref name="dtype"/> (round-to-nearest-even for bf16/f16); gradients flow back converted.</summary>
    public Tensor To(DType dtype)
    {
        var result = ToDTypeNoGrad(dtype);
        var from = DType;
        if (!dtype.IsFloatingPoint()) return result;
        return Autograd.Record(result, "To", [this], (g, _) => [g.ToDTypeNoGrad(from)]);
    }

    /// <summary>A contiguous copy on <paramref name="device"/> (this tensor itself, contiguous, when it is already there).
    /// CUDA devices need the Peft.Cuda package. The copy does not record autograd history.</summary>
    public Tensor To(Device device)
    {
        if (device == Device) return Contiguous();
        return DeviceBackends.For(device.Type == DeviceType.Cpu ? Device.Type : device.Type).CopyTo(this, device);
    }

    internal unsafe Tensor ToDTypeNoGrad(DType dtype)
    {
        if (Device.Type != DeviceType.Cpu && DeviceKernels("To(" + dtype + ")", this) is { } k) // the name is built only off the CPU path
        {
            if (dtype == DType) return ContiguousCopy();
            using var dense = ContiguousData();
            return k.Cast(dense, dtype);
        }
        using var c = ContiguousData();
        var r = Allocate(_shape, dtype, zero: false);
        Cpu.Cast.Convert(c.Ptr<byte>(), DType, r.Ptr<byte>(), dtype, NumEl);
        return r;
    }

    /// <summary>Sets every element to <paramref name="value"/> in place.</summary>
    public unsafe Tensor FillInPlace(double value)
    {
        CheckInPlace("FillInPlace");
        using var one = Allocate([], DType, zero: false); // a host scalar: CopyFrom moves it to this tensor's device
        Cpu.ElementIO.Write(one.Ptr<byte>(), DType, value);
        return CopyFrom(one);
    }

    /// <summary>this += <paramref name="other"/> · <paramref name="alpha"/> in place (broadcasting other).</summary>
    public Tensor AddInPlace(Tensor other, double alpha = 1)
    {
        CheckInPlace("AddInPlace");
        using var _ = Autograd.NoGrad();
        using var scaled = alpha == 1 ? null : other.Mul(alpha);
        using var sum = Add(scaled ?? other);
        return CopyFrom(sum);
    }

    /// <summary>this *= <paramref name="factor"/> in place.</summary>
    public Tensor MulInPlace(double factor)
    {
        CheckInPlace("MulInPlace");
        using var _ = Autograd.NoGrad();
        using var prod = Mul(factor);
        return CopyFrom(prod);
    }

    private void CheckInPlace(string op)
    {
        ThrowIfDisposed();
        if (RequiresGrad && Autograd.IsGradEnabled)
            throw new InvalidOperationException($"{op} on a tensor that requires grad would corrupt the autograd graph; run it under Autograd.NoGrad()");
    }

    /// <summary>PyTorch-like text: values (summarised past 6 per dim), shape and dtype.</summary>
    public override string ToString()
    {
        if (IsDisposed) return $"tensor(<disposed>, shape={Shapes.Format(_shape)}, dtype={DType})";
        var v = ToDoubleArray();
        var sb = new StringBuilder("tensor(");
        Format(sb, v, 0, 0, 7);
        sb.Append($", shape={Shapes.Format(_shape)}, dtype={DType}");
        if (RequiresGrad) sb.Append(", requires_grad=True");
        return sb.Append(')').ToString();
    }

    private void Format(StringBuilder sb, double[] v, int dim, long offset, int indent)
    {
        if (Rank == 0) { sb.Append(FormatValue(v[0])); return; }
        long inner = 1;
        for (int d = dim + 1; d < Rank; d++) inner *= _shape[d];
        int n = _shape[dim];
        sb.Append('[');
        for (int i = 0; i < n; i++)
        {
            if (n > 6 && i == 3) { sb.Append("..., "); i = n - 3; }
            if (dim == Rank - 1) sb.Append(FormatValue(v[offset + i]));
            else
            {
                if (i > 0) sb.Append('\n').Append(' ', indent + dim + 1);
                Format(sb, v, dim + 1, offset + i * inner, indent);
            }
            if (i < n - 1) sb.Append(", ");
        }
        sb.Append(']');
    }

    private string FormatValue(double x) => DType.IsFloatingPoint()
        ? x.ToString("0.0000", CultureInfo.InvariantCulture)
        : x.ToString(CultureInfo.InvariantCulture);
}
