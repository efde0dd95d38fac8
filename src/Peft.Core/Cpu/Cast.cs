using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Peft.Core.Cpu;

/// <summary>Element-type conversion between contiguous buffers. Float→bf16/f16 rounds to nearest even.</summary>
internal static unsafe class Cast
{
    public static void Convert(byte* src, DType from, byte* dst, DType to, long n)
    {
        if (from == to) { Buffer.MemoryCopy(src, dst, n * from.SizeOf(), n * from.SizeOf()); return; }
        int count = checked((int)n);
        switch (from, to)
        {
            case (DType.F32, DType.F64):
                TensorPrimitives.ConvertChecked<float, double>(new ReadOnlySpan<float>(src, count), new Span<double>(dst, count)); return;
            case (DType.F64, DType.F32):
                TensorPrimitives.ConvertTruncating<double, float>(new ReadOnlySpan<double>(src, count), new Span<float>(dst, count)); return;
            case (DType.F32, DType.BF16):
                FloatToBf16((float*)src, (ushort*)dst, n); return;
            case (DType.BF16, DType.F32):
                Bf16ToFloat((ushort*)src, (float*)dst, n); return;
            case (DType.F32, DType.F16):
                TensorPrimitives.ConvertToHalf(new ReadOnlySpan<float>(src, count), new Span<Half>(dst, count)); return;
            case (DType.F16, DType.F32):
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, count), new Span<float>(dst, count)); return;
        }
        // Rare pairs go through double, which holds every value of every supported type exactly except large I64.
        int se = from.SizeOf(), de = to.SizeOf();
        for (long i = 0; i < n; i++) ElementIO.Write(dst + i * de, to, ElementIO.Read(src + i * se, from));
    }

    public static void FloatToBf16(float* src, ushort* dst, long n)
    {
        CpuParallel.For((n + 65535) / 65536, b =>
        {
            long i = b * 65536, end = Math.Min(n, (b + 1) * 65536);
            if (Vector256.IsHardwareAccelerated)
                for (; i + 16 <= end; i += 16)
                {
                    var lo = RoundedBf16Bits(Vector256.Load((uint*)(src + i))) >> 16;
                    var hi = RoundedBf16Bits(Vector256.Load((uint*)(src + i + 8))) >> 16;
                    // Narrow packs lanes in order: the 16 results land contiguously.
                    Vector256.Narrow(lo, hi).Store(dst + i);
                }
            for (; i < end; i++) dst[i] = BFloat16.RoundBits(*(uint*)(src + i));
        });
    }

    /// <summary>Eight floats' bits rounded to bfloat16 in the upper half (ties to even; NaN kept quiet), lower half zero —
    /// the vector form of <see cref="BFloat16.RoundBits"/>.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> RoundedBf16Bits(Vector256<uint> bits)
    {
        var rounded = bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256.Create(1u));
        var nan = Vector256.GreaterThan(bits & Vector256.Create(0x7FFF_FFFFu), Vector256.Create(0x7F80_0000u));
        return Vector256.ConditionalSelect(nan, bits | Vector256.Create(0x0040_0000u), rounded) & Vector256.Create(0xFFFF_0000u);
    }

    /// <summary>Rounds F32 values in place to the nearest BF16 or F16 value (ties to even; F16 overflows to ±∞ as a
    /// real F16 store would), keeping them in F32 storage.</summary>
    public static void RoundInPlace(float* p, long n, DType low)
    {
        const int chunk = 65536;
        CpuParallel.For((n + chunk - 1) / chunk, b =>
        {
            long start = b * chunk;
            int count = (int)Math.Min(chunk, n - start);
            float* q = p + start;
            if (low == DType.BF16)
            {
                int i = 0;
                if (Vector256.IsHardwareAccelerated)
                    for (; i + 8 <= count; i += 8) RoundedBf16Bits(Vector256.Load((uint*)q + i)).Store((uint*)q + i);
                for (; i < count; i++) ((uint*)q)[i] = (uint)BFloat16.RoundBits(((uint*)q)[i]) << 16;
                return;
            }
            var half = new Half[count];
            var span = new Span<float>(q, count);
            TensorPrimitives.ConvertToHalf(span, half);
            TensorPrimitives.ConvertToSingle(half, span);
        });
    }

    public static void Bf16ToFloat(ushort* src, float* dst, long n)
    {
        for (long i = 0; i < n; i++) ((uint*)dst)[i] = (uint)src[i] << 16;
    }
}

/// <summary>Reads and writes one element of any dtype as a double (printing, generic casts, tests).</summary>
internal static unsafe class ElementIO
{
    public static double Read(byte* p, DType t) => t switch
    {
        DType.F64 => *(double*)p,
        DType.F32 => *(float*)p,
        DType.BF16 => new BFloat16(*(ushort*)p).ToSingle(),
        DType.F16 => (double)*(Half*)p,
        DType.I64 => *(long*)p,
        DType.I32 => *(int*)p,
        DType.I8 => *(sbyte*)p,
        DType.U8 => *p,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static void Write(byte* p, DType t, double v)
    {
        switch (t)
        {
            case DType.F64: *(double*)p = v; break;
            case DType.F32: *(float*)p = (float)v; break;
            case DType.BF16: *(ushort*)p = BFloat16.FromSingle((float)v).Bits; break;
            case DType.F16: *(Half*)p = (Half)v; break;
            case DType.I64: *(long*)p = (long)v; break;
            case DType.I32: *(int*)p = (int)v; break;
            case DType.I8: *(sbyte*)p = (sbyte)v; break;
            case DType.U8: *p = (byte)v; break;
            default: throw new ArgumentOutOfRangeException(nameof(t));
        }
    }
}
