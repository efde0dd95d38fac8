using Peft.Cuda.Interop;

namespace Peft.Cuda.Memory;

/// <summary>Counters of one device's allocator.</summary>
/// <param name="AllocatedBytes">Bytes handed out and not yet returned (rounded to the block's size class).</param>
/// <param name="ReservedBytes">Bytes held from the driver: handed out plus cached for reuse.</param>
/// <param name="PeakAllocatedBytes">Highest <paramref name="AllocatedBytes"/> since start or the last ResetPeak.</param>
/// <param name="DriverAllocations">cuMemAlloc calls made so far (a cache hit makes none).</param>
/// <param name="LiveBlocks">Blocks handed out and not yet returned.</param>
public readonly record struct CudaMemoryStats(long AllocatedBytes, long ReservedBytes, long PeakAllocatedBytes, long DriverAllocations, long LiveBlocks);

/// <summary>
/// A caching allocator: device memory from <c>cuMemAlloc</c> is kept after its tensor dies and handed to the next request
/// of the same size class, because cuMemAlloc/cuMemFree synchronise the device and cost tens of microseconds each — a
/// training step would pay that for every activation. Size classes: multiples of 512 B below 1 MiB; above, steps of
/// 2^k/8 between 2^(k−1) and 2^k (at most 25% rounding waste). One stream per device today, so a returned block is safe to
/// reuse at once: any later use is ordered after the work that read it. Returning a block never calls the driver, so
/// it is safe from a finalizer thread; only <see cref="EmptyCache"/> (and an out-of-memory retry) frees.
/// </summary>
public sealed class CudaAllocator
{
    private const long SmallLimit = 1 << 20, SmallGranule = 512;
    private readonly object _lock = new();
    private readonly Dictionary<long, Stack<ulong>> _free = new();
    private readonly CudaDevice _device;
    private long _allocated, _reserved, _peak, _driverAllocations, _live;

    internal CudaAllocator(CudaDevice device) => _device = device;

    /// <summary>The size class a request of <paramref name="bytes"/> is served from.</summary>
    public static long SizeClass(long bytes)
    {
        if (bytes <= 0) return SmallGranule;
        if (bytes <= SmallLimit) return (bytes + SmallGranule - 1) / SmallGranule * SmallGranule;
        long pow = 1L << (64 - (int)long.LeadingZeroCount(bytes - 1)); // smallest 2^k ≥ bytes, so bytes > 2^(k−1)
        long step = pow / 8;                                             // classes 2^(k−1)·{1.25, 1.5, 1.75, 2}
        return (bytes + step - 1) / step * step;
    }

    /// <summary>A block of at least <paramref name="bytes"/> bytes; its size class is returned in <paramref name="classBytes"/>.</summary>
    internal ulong Allocate(long bytes, out long classBytes)
    {
        classBytes = SizeClass(bytes);
        lock (_lock)
        {
            if (_free.TryGetValue(classBytes, out var stack) && stack.Count > 0)
            {
                OnHandOut(classBytes);
                return stack.Pop();
            }
        }
        _device.MakeCurrent();
        int status = CudaDriver.cuMemAlloc_v2(out ulong ptr, (nuint)classBytes);
        if (status == 2 /* CUDA_ERROR_OUT_OF_MEMORY */)
        {
            EmptyCache();
            status = CudaDriver.cuMemAlloc_v2(out ptr, (nuint)classBytes);
        }
        CudaDriver.Check(status, $"cuMemAlloc_v2({classBytes} bytes on {_device})");
        lock (_lock)
        {
            _reserved += classBytes;
            _driverAllocations++;
            OnHandOut(classBytes);
        }
        return ptr;
    }

    /// <summary>Takes a block back into the cache (no driver call).</summary>
    internal void Return(ulong ptr, long classBytes)
    {
        lock (_lock)
        {
            if (!_free.TryGetValue(classBytes, out var stack)) _free[classBytes] = stack = new Stack<ulong>();
            stack.Push(ptr);
            _allocated -= classBytes;
            _live--;
        }
    }

    /// <summary>Frees every cached block back to the driver (blocks in use stay). Waits for the device first.</summary>
    public void EmptyCache()
    {
        List<(ulong Ptr, long Bytes)> blocks;
        lock (_lock)
        {
            blocks = _free.SelectMany(kv => kv.Value.Select(p => (p, kv.Key))).ToList();
            _free.Clear();
            _reserved -= blocks.Sum(b => b.Bytes);
        }
        if (blocks.Count == 0) return;
        _device.Synchronize();
        foreach (var (ptr, _) in blocks) CudaDriver.Check(CudaDriver.cuMemFree_v2(ptr), "cuMemFree_v2");
    }

    /// <summary>The counters now.</summary>
    public CudaMemoryStats Stats
    {
        get { lock (_lock) return new CudaMemoryStats(_allocated, _reserved, _peak, _driverAllocations, _live); }
    }

    /// <summary>Sets the peak to the bytes allocated now.</summary>
    public void ResetPeak()
    {
        lock (_lock) _peak = _allocated;
    }

    private void OnHandOut(long classBytes)
    {
        _allocated += classBytes;
        _live++;
        if (_allocated > _peak) _peak = _allocated;
    }
}
