using System.Runtime.InteropServices;

namespace Peft.Core;

/// <summary>
/// A block of element memory shared by a tensor and all its views. Reference counted: every <see cref="Tensor"/>
/// object that points at it holds one reference, and the memory goes back when the last one is disposed.
/// Memory is released by <see cref="Release"/>, not by the GC; the finalizer exists only as a leak safety net.
/// </summary>
public abstract class Storage
{
    private int _refCount = 1;

    /// <summary>Bytes held.</summary>
    public long ByteLength { get; }

    /// <summary>The device this memory belongs to.</summary>
    public abstract Device Device { get; }

    /// <summary>True once the memory has been given back.</summary>
    public bool IsReleased => Volatile.Read(ref _refCount) <= 0;

    /// <summary>Creates storage of the given size with one reference.</summary>
    protected Storage(long byteLength) => ByteLength = byteLength;

    /// <summary>Host address of the first byte (CPU storages only).</summary>
    public abstract unsafe byte* Pointer { get; }

    internal void AddRef()
    {
        if (Interlocked.Increment(ref _refCount) <= 1)
            throw new ObjectDisposedException(nameof(Storage), "tensor memory was already released");
    }

    /// <summary>Drops one reference; frees the memory when it was the last.</summary>
    public void Release()
    {
        int left = Interlocked.Decrement(ref _refCount);
        if (left == 0)
        {
            Free();
            GC.SuppressFinalize(this);
        }
    }

    /// <summary>Gives the memory back; called exactly once.</summary>
    protected abstract void Free();
}

/// <summary>64-byte aligned native host memory (the alignment lets AVX-512 loads never split cache lines).</summary>
public sealed unsafe class CpuStorage : Storage
{
    /// <summary>Alignment in bytes of every CPU allocation.</summary>
    public const int Alignment = 64;
    private byte* _ptr;
    private readonly long _reserved;

    /// <summary>Allocates <paramref name="byteLength"/> bytes through <see cref="CpuAllocator"/>; zero-filled when <paramref name="zero"/>.</summary>
    public CpuStorage(long byteLength, bool zero = true) : base(byteLength)
    {
        if (byteLength < 0) throw new ArgumentOutOfRangeException(nameof(byteLength));
        MemoryStats.CheckLimit(byteLength);
        _ptr = CpuAllocator.Allocate(byteLength, out _reserved);
        if (zero) NativeMemory.Clear(_ptr, (nuint)byteLength);
        MemoryStats.OnAlloc(byteLength);
    }

    /// <inheritdoc/>
    public override Device Device => Device.Cpu;

    /// <inheritdoc/>
    public override byte* Pointer => IsReleased ? throw new ObjectDisposedException("tensor", "tensor memory was already released (the tensor or its scope was disposed)") : _ptr;

    /// <inheritdoc/>
    protected override void Free()
    {
        CpuAllocator.Release(_ptr, _reserved);
        _ptr = null;
        MemoryStats.OnFree(ByteLength);
    }

    /// <summary>Safety net only: a tensor that was never disposed still gives its memory back eventually.</summary>
    ~CpuStorage()
    {
        if (_ptr != null) { CpuAllocator.Release(_ptr, _reserved); MemoryStats.OnFree(ByteLength); }
    }
}

/// <summary>
/// Memory that belongs to someone else (a memory-mapped safetensors file) and is kept alive by an owner object
/// that is disposed with the last reference. Used for zero-copy tensor views.
/// </summary>
public sealed unsafe class ExternalStorage : Storage
{
    private readonly byte* _ptr;
    private readonly IDisposable _owner;

    /// <summary>Wraps <paramref name="byteLength"/> bytes at <paramref name="ptr"/>, owned by <paramref name="owner"/>.</summary>
    public ExternalStorage(byte* ptr, long byteLength, IDisposable owner) : base(byteLength)
    {
        _ptr = ptr;
        _owner = owner;
    }

    /// <inheritdoc/>
    public override Device Device => Device.Cpu;

    /// <inheritdoc/>
    public override byte* Pointer => IsReleased ? throw new ObjectDisposedException("tensor", "tensor memory was already released") : _ptr;

    /// <inheritdoc/>
    protected override void Free() => _owner.Dispose();
}

/// <summary>Process-wide counters of native tensor memory: prove that nothing leaks.</summary>
public static class MemoryStats
{
    private static long _liveBytes, _liveAllocations, _peakBytes, _totalAllocations;

    /// <summary>Bytes of CPU tensor memory currently allocated.</summary>
    public static long LiveBytes => Interlocked.Read(ref _liveBytes);

    /// <summary>Number of CPU tensor allocations currently alive.</summary>
    public static long LiveAllocations => Interlocked.Read(ref _liveAllocations);

    /// <summary>Highest <see cref="LiveBytes"/> seen since start or the last <see cref="ResetPeak"/>.</summary>
    public static long PeakBytes => Interlocked.Read(ref _peakBytes);

    /// <summary>Allocations made since the process started.</summary>
    public static long TotalAllocations => Interlocked.Read(ref _totalAllocations);

    /// <summary>Sets the peak to the current live figure.</summary>
    public static void ResetPeak() => Interlocked.Exchange(ref _peakBytes, LiveBytes);

    /// <summary>
    /// Most bytes of CPU tensor memory the process may hold: an allocation that would pass it throws
    /// <see cref="InsufficientMemoryException"/> naming the sizes, instead of letting the OS kill the process when the
    /// pages are touched (Linux overcommits, so malloc itself rarely fails). Default: 80% of the memory the runtime sees
    /// as available to the process (physical memory, or a container's limit; the rest is the runtime's and the OS's).
    /// Set to <see cref="long.MaxValue"/> to turn the check off (e.g. with swap).
    /// </summary>
    public static long Limit { get; set; } = DefaultLimit();

    private static long DefaultLimit()
    {
        long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return total > 0 ? total / 5 * 4 : long.MaxValue;
    }

    internal static void CheckLimit(long bytes)
    {
        long live = LiveBytes;
        if (bytes > Limit - live)
            throw new InsufficientMemoryException(
                $"allocating a {bytes / 1048576.0:N1} MiB tensor with {live / 1048576.0:N1} MiB of tensors alive would pass the {Limit / 1048576.0:N0} MiB " +
                "this process may use (MemoryStats.Limit: 80% of the machine's memory); a model or batch this size does not fit here");
    }

    internal static void OnAlloc(long bytes)
    {
        long live = Interlocked.Add(ref _liveBytes, bytes);
        Interlocked.Increment(ref _liveAllocations);
        Interlocked.Increment(ref _totalAllocations);
        long peak;
        while (live > (peak = Interlocked.Read(ref _peakBytes)) && Interlocked.CompareExchange(ref _peakBytes, live, peak) != peak) { }
    }

    internal static void OnFree(long bytes)
    {
        Interlocked.Add(ref _liveBytes, -bytes);
        Interlocked.Decrement(ref _liveAllocations);
    }
}
