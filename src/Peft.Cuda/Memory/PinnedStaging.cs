using Peft.Cuda.Interop;

namespace Peft.Cuda.Memory;

/// <summary>
/// Host↔device copies through two page-locked staging buffers. Copies from pageable memory are staged by the driver
/// anyway, one synchronous chunk at a time; with two of our own buffers the host memcpy of chunk i+1 overlaps the DMA
/// of chunk i, and the DMA runs at the full PCIe/NVLink rate. One copy at a time per device (a lock).
/// </summary>
internal sealed unsafe class PinnedStaging
{
    internal const int ChunkBytes = 8 << 20;
    private readonly CudaDevice _device;
    private readonly byte*[] _buffers = new byte*[2];
    private readonly IntPtr[] _done = new IntPtr[2];
    private readonly object _lock = new();

    /// <summary>Bytes up to which a host → device copy is queued without waiting (token ids, targets, scalars).</summary>
    internal const int QueuedMaxBytes = 64 << 10;
    private const int Slots = 64;                      // 4 MiB of pinned memory in all
    private readonly byte*[] _slots = new byte*[Slots];
    private readonly IntPtr[] _slotDone = new IntPtr[Slots];
    private int _nextSlot;

    internal PinnedStaging(CudaDevice device)
    {
        _device = device;
        device.MakeCurrent();
        for (int i = 0; i < 2; i++)
        {
            CudaDriver.Check(CudaDriver.cuMemAllocHost_v2(out void* p, ChunkBytes), "cuMemAllocHost_v2");
            _buffers[i] = (byte*)p;
            CudaDriver.Check(CudaDriver.cuEventCreate(out _done[i], CudaDriver.EventDefault), "cuEventCreate");
        }
        CudaDriver.Check(CudaDriver.cuMemAllocHost_v2(out void* ring, (nuint)Slots * QueuedMaxBytes), "cuMemAllocHost_v2");
        for (int i = 0; i < Slots; i++)
        {
            _slots[i] = (byte*)ring + (long)i * QueuedMaxBytes;
            CudaDriver.Check(CudaDriver.cuEventCreate(out _slotDone[i], CudaDriver.EventDefault), "cuEventCreate");
        }
    }

    /// <summary>
    /// Host → device without waiting for the GPU: a copy of at most <see cref="QueuedMaxBytes"/> is taken into one slot
    /// of a pinned ring and queued on the stream, so kernels queued after it see the data and the host goes on at once
    /// (a step's token ids and targets no longer drain the GPU's queue). The slot is reused only once the event recorded
    /// after its copy has completed. Larger copies go through <see cref="HostToDevice"/>, which waits.
    /// </summary>
    internal void HostToDeviceQueued(ulong destination, byte* source, long bytes)
    {
        if (bytes > QueuedMaxBytes)
        {
            HostToDevice(destination, source, bytes);
            return;
        }
        if (bytes == 0) return;
        lock (_lock)
        {
            _device.MakeCurrent();
            int s = _nextSlot;
            _nextSlot = (s + 1) % Slots;
            CudaDriver.Check(CudaDriver.cuEventSynchronize(_slotDone[s]), "cuEventSynchronize"); // its last copy has been read
            Buffer.MemoryCopy(source, _slots[s], QueuedMaxBytes, bytes);
            CudaDriver.Check(CudaDriver.cuMemcpyHtoDAsync_v2(destination, _slots[s], (nuint)bytes, _device.Stream), "cuMemcpyHtoDAsync_v2");
            CudaDriver.Check(CudaDriver.cuEventRecord(_slotDone[s], _device.Stream), "cuEventRecord");
        }
    }

    /// <summary>Copies <paramref name="bytes"/> from host <paramref name="source"/> to device <paramref name="destination"/>; returns when the data is on the device.</summary>
    internal void HostToDevice(ulong destination, byte* source, long bytes)
    {
        lock (_lock)
        {
            _device.MakeCurrent();
            for (long done = 0, chunk = 0; done < bytes; done += ChunkBytes, chunk++)
            {
                int b = (int)(chunk & 1);
                long n = Math.Min(ChunkBytes, bytes - done);
                CudaDriver.Check(CudaDriver.cuEventSynchronize(_done[b]), "cuEventSynchronize");  // buffer b's previous DMA finished
                Buffer.MemoryCopy(source + done, _buffers[b], ChunkBytes, n);
                CudaDriver.Check(CudaDriver.cuMemcpyHtoDAsync_v2(destination + (ulong)done, _buffers[b], (nuint)n, _device.Stream), "cuMemcpyHtoDAsync_v2");
                CudaDriver.Check(CudaDriver.cuEventRecord(_done[b], _device.Stream), "cuEventRecord");
            }
            CudaDriver.Check(CudaDriver.cuStreamSynchronize(_device.Stream), "cuStreamSynchronize");
        }
    }

    /// <summary>Copies <paramref name="bytes"/> from device <paramref name="source"/> to host <paramref name="destination"/> (waits for queued work first, through stream order).</summary>
    internal void DeviceToHost(byte* destination, ulong source, long bytes)
    {
        lock (_lock)
        {
            _device.MakeCurrent();
            int previousBuffer = -1;                                // the chunk still to copy out, and where from
            long previous = 0, previousBytes = 0;
            for (long done = 0, chunk = 0; done < bytes; done += ChunkBytes, chunk++)
            {
                int b = (int)(chunk & 1);
                long n = Math.Min(ChunkBytes, bytes - done);
                CudaDriver.Check(CudaDriver.cuMemcpyDtoHAsync_v2(_buffers[b], source + (ulong)done, (nuint)n, _device.Stream), "cuMemcpyDtoHAsync_v2");
                CudaDriver.Check(CudaDriver.cuEventRecord(_done[b], _device.Stream), "cuEventRecord");
                if (previousBuffer >= 0) Drain(previousBuffer, destination + previous, previousBytes); // overlaps this chunk's DMA
                (previousBuffer, previous, previousBytes) = (b, done, n);
            }
            if (previousBuffer >= 0) Drain(previousBuffer, destination + previous, previousBytes);
        }
    }

    private void Drain(int b, byte* destination, long n)
    {
        CudaDriver.Check(CudaDriver.cuEventSynchronize(_done[b]), "cuEventSynchronize");
        Buffer.MemoryCopy(_buffers[b], destination, n, n);
    }
}
