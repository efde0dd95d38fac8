using System.Runtime.CompilerServices;

namespace Peft.Core;

/// <summary>
/// bfloat16: the upper 16 bits of an IEEE float32. .NET 10 has no such type, so the project owns one.
/// Conversion from float rounds to nearest, ties to even (what PyTorch and CUDA's __float2bfloat16 do); NaN stays NaN.
/// </summary>
public readonly struct BFloat16 : IEquatable<BFloat16>
{
    /// <summary>The raw 16 bits.</summary>
    public readonly ushort Bits;

    /// <summary>Wraps raw bits.</summary>
    public BFloat16(ushort bits) => Bits = bits;

    /// <summary>Rounds a float to the nearest bfloat16 (ties to even).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static BFloat16 FromSingle(float value) => new(RoundBits(BitConverter.SingleToUInt32Bits(value)));

    /// <summary>Rounding on raw float32 bits: add 0x7FFF plus the lowest kept bit, then truncate.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort RoundBits(uint bits)
    {
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u) return (ushort)((bits >> 16) | 0x0040); // quiet NaN, sign kept
        uint lsb = (bits >> 16) & 1u;
        return (ushort)((bits + 0x7FFFu + lsb) >> 16);
    }

    /// <summary>Exact widening to float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float ToSingle() => BitConverter.UInt32BitsToSingle((uint)Bits << 16);

    /// <summary>Explicit narrowing conversion.</summary>
    public static explicit operator BFloat16(float value) => FromSingle(value);

    /// <summary>Exact widening conversion.</summary>
    public static implicit operator float(BFloat16 value) => value.ToSingle();

    /// <inheritdoc/>
    public bool Equals(BFloat16 other) => Bits == other.Bits;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is BFloat16 b && Equals(b);

    /// <inheritdoc/>
    public override int GetHashCode() => Bits;

    /// <inheritdoc/>
    public override string ToString() => ToSingle().ToString("G4", System.Globalization.CultureInfo.InvariantCulture);
}
