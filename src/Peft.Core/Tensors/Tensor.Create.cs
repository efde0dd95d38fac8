using System.Runtime.InteropServices;
using Peft.Core.Random;

namespace Peft.Core;

// Factories. Shapes are int[] so collection expressions read naturally: Tensor.Zeros([2, 3]).
public sealed partial class Tensor
{
    [ThreadStatic] private static bool _metaDefault;

    /// <summary>
    /// Until disposed, on this thread, the factories that take no device (Zeros, Ones, Full, Scalar, Eye, Arange,
    /// FromArray, Rand, Randn) make meta tensors — shapes without memory — so whole models can be built and counted
    /// without allocating them (accelerate's init_empty_weights). Only <see cref="Device.Meta"/> is accepted.
    /// </summary>
    /// <example><code>using (Tensor.DefaultDevice(Device.Meta))
    ///     Console.WriteLine(AutoModel.Create(HfConfig.Load("llama-70b")).CountParameters());</code></example>
    public static IDisposable DefaultDevice(Device device)
    {
        if (device.Type != DeviceType.Meta) throw new NotSupportedException($"DefaultDevice supports Device.Meta (model sizing), not {device}");
        bool outer = _metaDefault;
        _metaDefault = true;
        return new OnDispose(() => _metaDefault = outer);
    }

    /// <summary>A meta tensor when <see cref="DefaultDevice"/> is active, else null.</summary>
    private static Tensor? MetaDefault(int[] shape, DType dtype) => _metaDefault ? MetaDevice.Instance.Empty(shape, dtype, Device.Meta) : null;

    /// <summary>A tensor of zeros.</summary>
    public static Tensor Zeros(int[] shape, DType dtype = DType.F32) => MetaDefault(shape, dtype) ?? Allocate(shape, dtype);

    /// <summary>A tensor of ones.</summary>
    public static Tensor Ones(int[] shape, DType dtype = DType.F32) => Full(shape, 1.0, dtype);

    /// <summary>The <paramref name="n"/>×<paramref name="n"/> identity matrix (torch.eye).</summary>
    public static Tensor Eye(int n, DType dtype = DType.F32)
    {
        if (MetaDefault([n, n], dtype) is { } meta) return meta;
        var data = new double[n * n];
        for (int i = 0; i < n; i++) data[i * n + i] = 1;
        using var eye = FromArray(data, [n, n]);
        return eye.To(dtype);
    }

    /// <summary>The identity matrix on <paramref name="device"/> (built on the host, copied).</summary>
    public static Tensor Eye(int n, DType dtype, Device device)
    {
        var eye = Eye(n, dtype);
        if (device.Type == DeviceType.Cpu) return eye;
        using (eye) return eye.To(device);
    }

    /// <summary>A tensor filled with <paramref name="value"/>.</summary>
    public static Tensor Full(int[] shape, double value, DType dtype = DType.F32)
    {
        if (MetaDefault(shape, dtype) is { } meta) return meta;
        var t = Allocate(shape, dtype, zero: value == 0);
        if (value != 0) t.FillInPlace(value);
        return t;
    }

    /// <summary>A tensor of zeros on <paramref name="device"/> (torch.zeros(..., device=)).</summary>
    public static Tensor Zeros(int[] shape, DType dtype, Device device) => Full(shape, 0, dtype, device);

    /// <summary>A tensor filled with <paramref name="value"/> on <paramref name="device"/>.</summary>
    public static Tensor Full(int[] shape, double value, DType dtype, Device device)
    {
        if (device.Type == DeviceType.Cpu) return Full(shape, value, dtype);
        var k = DeviceBackends.KernelsFor(device, "Full");
        var t = k.Empty(shape, dtype, device);
        try { return t.FillInPlace(value); }
        catch { t.Dispose(); throw; }
    }

    /// <summary>Zeros with the shape and dtype of <paramref name="like"/>.</summary>
    public static Tensor ZerosLike(Tensor like) => FullLike(like, 0);

    /// <summary>Ones with the shape and dtype of <paramref name="like"/>.</summary>
    public static Tensor OnesLike(Tensor like) => FullLike(like, 1);

    /// <summary><paramref name="value"/> everywhere, with the shape, dtype and device of <paramref name="like"/>.</summary>
    public static Tensor FullLike(Tensor like, double value)
    {
        like.ThrowIfDisposed();
        return Full(like._shape, value, like.DType, like.Device);
    }

    /// <summary>A 0-dimensional tensor holding <paramref name="value"/>.</summary>
    public static Tensor Scalar(double value, DType dtype = DType.F32) => Full([], value, dtype);

    /// <summary>[start, start+step, ...) up to but excluding <paramref name="end"/>.</summary>
    public static unsafe Tensor Arange(double start, double end, double step = 1, DType dtype = DType.I64)
    {
        if (step == 0) throw new ArgumentException("Arange step must not be 0", nameof(step));
        int n = Math.Max(0, (int)Math.Ceiling((end - start) / step));
        if (MetaDefault([n], dtype) is { } meta) return meta;
        var t = Allocate([n], dtype, zero: false);
        byte* p = t.Ptr<byte>();
        int e = dtype.SizeOf();
        for (int i = 0; i < n; i++) Cpu.ElementIO.Write(p + (long)i * e, dtype, start + i * step);
        return t;
    }

    /// <summary>[0, 1, ..., end-1] as I64.</summary>
    public static Tensor Arange(int end) => Arange(0, end);

    /// <summary>A tensor that copies <paramref name="data"/> (row-major) into the given shape; one entry may be −1
    /// and is inferred, as in <see cref="Reshape"/>.</summary>
    public static unsafe Tensor FromArray<T>(T[] data, int[]? shape = null) where T : unmanaged
    {
        var dtype = DTypeOf<T>();
        shape = shape == null ? [data.Length] : Shapes.InferReshape(shape, data.Length);
        if (MetaDefault(shape, dtype) is { } meta) return meta;
        var t = Allocate(shape, dtype, zero: false);
        MemoryMarshal.AsBytes(data.AsSpan()).CopyTo(new Span<byte>(t.Ptr<byte>(), data.Length * sizeof(T)));
        return t;
    }

    /// <summary>The dtype that holds elements of type <typeparamref name="T"/>.</summary>
    public static DType DTypeOf<T>() where T : unmanaged =>
        typeof(T) == typeof(float) ? DType.F32 :
        typeof(T) == typeof(double) ? DType.F64 :
        typeof(T) == typeof(BFloat16) ? DType.BF16 :
        typeof(T) == typeof(Half) ? DType.F16 :
        typeof(T) == typeof(long) ? DType.I64 :
        typeof(T) == typeof(int) ? DType.I32 :
        typeof(T) == typeof(sbyte) ? DType.I8 :
        typeof(T) == typeof(byte) || typeof(T) == typeof(bool) ? DType.U8 :
        throw new DTypeMismatchException($"no tensor dtype holds {typeof(T).Name}");

    /// <summary>Uniform samples in [<paramref name="low"/>, <paramref name="high"/>).</summary>
    public static unsafe Tensor Rand(int[] shape, Generator? generator = null, DType dtype = DType.F32, double low = 0, double high = 1)
    {
        if (MetaDefault(shape, dtype) is { } meta) return meta;
        var gen = generator ?? Generator.Default;
        var t = Allocate(shape, DType.F64, zero: false);
        long n = t.NumEl;
        long first = gen.Reserve((n + 3) / 4);
        double* p = t.Ptr<double>();
        double span = high - low;
        Cpu.CpuParallel.For((n + 4095) / 4096, chunk =>
        {
            long end = Math.Min(n, (chunk + 1) * 4096);
            for (long i = chunk * 4096; i < end; i += 4)
            {
                var (a, b, c, d) = gen.Block(first + i / 4);
                p[i] = low + span * Philox.ToUnitDouble(a, b);
                if (i + 1 < end) p[i + 1] = low + span * Philox.ToUnitDouble(b, c);
                if (i + 2 < end) p[i + 2] = low + span * Philox.ToUnitDouble(c, d);
                if (i + 3 < end) p[i + 3] = low + span * Philox.ToUnitDouble(d, a);
            }
        });
        return ConvertOwned(t, dtype);
    }

    /// <summary>Standard normal samples (Box–Muller on Philox uniforms), scaled by <paramref name="std"/> around <paramref name="mean"/>.</summary>
    public static unsafe Tensor Randn(int[] shape, Generator? generator = null, DType dtype = DType.F32, double mean = 0, double std = 1)
    {
        if (MetaDefault(shape, dtype) is { } meta) return meta;
        var gen = generator ?? Generator.Default;
        var t = Allocate(shape, DType.F64, zero: false);
        long n = t.NumEl;
        long first = gen.Reserve((n + 1) / 2);
        double* p = t.Ptr<double>();
        Cpu.CpuParallel.For((n + 4095) / 4096, chunk =>
        {
            long end = Math.Min(n, (chunk + 1) * 4096);
            for (long i = chunk * 4096; i < end; i += 2)
            {
                // One counter per pair: its four words give two 53-bit uniforms.
                var (a, b, c, d) = gen.Block(first + i / 2);
                double u1 = 1.0 - Philox.ToUnitDouble(a, b); // (0, 1]: log is finite
                double u2 = Philox.ToUnitDouble(c, d);
                double r = Math.Sqrt(-2.0 * Math.Log(u1));
                p[i] = mean + std * r * Math.Cos(2 * Math.PI * u2);
                if (i + 1 < end) p[i + 1] = mean + std * r * Math.Sin(2 * Math.PI * u2);
            }
        });
        return ConvertOwned(t, dtype);
    }

    /// <summary>Seeded convenience overload of <see cref="Rand(int[], Generator?, DType, double, double)"/>.</summary>
    public static Tensor Rand(int[] shape, ulong seed, DType dtype = DType.F32) => Rand(shape, new Generator(seed), dtype);

    /// <summary>Seeded convenience overload of <see cref="Randn(int[], Generator?, DType, double, double)"/>.</summary>
    public static Tensor Randn(int[] shape, ulong seed, DType dtype = DType.F32) => Randn(shape, new Generator(seed), dtype);

    /// <summary>The inverted-dropout mask: 1/(1−p) where a uniform draw is ≥ p, else 0; one Philox counter per four
    /// elements, written directly in <paramref name="dtype"/> (F32 or F64).</summary>
    internal static Tensor DropoutMask(int[] shape, double p, Generator gen, DType dtype) =>
        DropoutMaskAt(shape, p, gen.Key0, gen.Key1, gen.Reserve((Shapes.NumEl(shape) + 3) / 4), dtype);

    /// <summary>The mask from counter <paramref name="first"/> of the stream keyed (<paramref name="key0"/>,
    /// <paramref name="key1"/>): the CPU reference of kernels/random.cu's dropout_mask_f32.</summary>
    internal static unsafe Tensor DropoutMaskAt(int[] shape, double p, uint key0, uint key1, long first, DType dtype)
    {
        var t = Allocate(shape, dtype, zero: false);
        long n = t.NumEl;
        double scale = 1.0 / (1.0 - p);
        byte* basePtr = t.Ptr<byte>();
        Cpu.CpuParallel.For((n + 16383) / 16384, chunk =>
        {
            long end = Math.Min(n, (chunk + 1) * 16384);
            for (long i = chunk * 16384; i < end; i += 4)
            {
                long counter = first + i / 4;
                var (a, b, c, d) = Philox.Block((uint)counter, (uint)((ulong)counter >> 32), 0, 0, key0, key1);
                for (int j = 0; j < 4 && i + j < end; j++)
                {
                    uint word = j switch { 0 => a, 1 => b, 2 => c, _ => d }; // no per-block array on this hot loop
                    double keep = Philox.ToUnitFloat(word) >= p ? scale : 0;
                    if (dtype == DType.F64) ((double*)basePtr)[i + j] = keep;
                    else ((float*)basePtr)[i + j] = (float)keep;
                }
            }
        });
        return t;
    }

    private static Tensor ConvertOwned(Tensor t, DType dtype)
    {
        if (dtype == t.DType) return t;
        var r = t.ToDTypeNoGrad(dtype);
        t.Dispose();
        return r;
    }
}
