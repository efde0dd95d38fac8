using System.Runtime.CompilerServices;

namespace Peft.Core.Random;

/// <summary>
/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"): a counter-based generator. Output
/// block i depends only on (key, counter i), so any element can be produced independently — in parallel, on any
/// thread count, and identically by a CUDA kernel using the same counter layout.
/// </summary>
internal static class Philox
{
    private const uint M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85;

    /// <summary>The four 32-bit outputs for 128-bit counter (c0..c3) and 64-bit key (k0, k1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (uint, uint, uint, uint) Block(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (int round = 0; round < 10; round++)
        {
            ulong p0 = (ulong)M0 * c0, p1 = (ulong)M1 * c2;
            uint n0 = (uint)(p1 >> 32) ^ c1 ^ k0;
            uint n2 = (uint)(p0 >> 32) ^ c3 ^ k1;
            c1 = (uint)p1; c3 = (uint)p0; c0 = n0; c2 = n2;
            k0 += W0; k1 += W1;
        }
        return (c0, c1, c2, c3);
    }

    /// <summary>Uniform [0, 1) float from the top 24 bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToUnitFloat(uint x) => (x >> 8) * (1.0f / 16777216f);

    /// <summary>Uniform [0, 1) double from 53 bits of two outputs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double ToUnitDouble(uint hi, uint lo) => (((ulong)hi << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
}

/// <summary>
/// A seeded stream of random numbers. Each draw of n numbers takes the next ⌈n/4⌉ Philox counters, so a run is
/// bit-reproducible from its seed whatever the thread count.
/// </summary>
public sealed class Generator
{
    private long _offset;

    /// <summary>A generator seeded with <paramref name="seed"/>.</summary>
    public Generator(ulong seed) => Seed = seed;

    /// <summary>The process-wide default generator (seed 0 until <see cref="ManualSeed"/>).</summary>
    public static Generator Default { get; } = new(0);

    /// <summary>The seed.</summary>
    public ulong Seed { get; private set; }

    /// <summary>Counters consumed so far (saved in checkpoints to resume the exact stream).</summary>
    public long Offset { get => Interlocked.Read(ref _offset); set => Interlocked.Exchange(ref _offset, value); }

    /// <summary>Reseeds and rewinds.</summary>
    public void ManualSeed(ulong seed)
    {
        Seed = seed;
        Offset = 0;
    }

    /// <summary>Reserves <paramref name="blocks"/> counters and returns the first.</summary>
    internal long Reserve(long blocks)
    {
        long first = Interlocked.Add(ref _offset, blocks) - blocks;
        RngReplay.Note(this, first);
        return first;
    }

    internal uint Key0 => (uint)Seed;
    internal uint Key1 => (uint)(Seed >> 32);

    /// <summary>The four outputs of counter <paramref name="counter"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal (uint, uint, uint, uint) Block(long counter) =>
        Philox.Block((uint)counter, (uint)((ulong)counter >> 32), 0, 0, Key0, Key1);
}
