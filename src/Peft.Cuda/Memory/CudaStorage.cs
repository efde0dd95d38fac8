using Peft.Core;

namespace Peft.Cuda.Memory;

/// <summary>
/// Device memory behind a CUDA tensor: one block of the device's <see cref="CudaAllocator"/>. Freeing returns the
/// block to the allocator's cache; that needs no CUDA context, so the finalizer safety net is allowed to do it.
/// </summary>
public sealed class CudaStorage : Storage
{
    private readonly CudaDevice _device;
    private readonly long _classBytes;
    private ulong _ptr;

    internal CudaStorage(CudaDevice device, long byteLength) : base(byteLength)
    {
        _device = device;
        _ptr = device.Allocator.Allocate(byteLength, out _classBytes);
    }

    /// <inheritdoc/>
    public override Device Device => _device.Device;

    /// <summary>The CUDA device this memory is on.</summary>
    public CudaDevice CudaDevice => _device;

    /// <summary>Device address of the first byte.</summary>
    public ulong DevicePointer => IsReleased ? throw new ObjectDisposedException("tensor", "tensor memory was already released (the tensor or its scope was disposed)") : _ptr;

    /// <inheritdoc/>
    public override unsafe byte* Pointer => throw new InvalidOperationException(
        $"this tensor lives on {Device}: the operation has no CUDA implementation yet; move the tensor with .To(Device.Cpu) first");

    /// <inheritdoc/>
    protected override void Free()
    {
        _device.Allocator.Return(_ptr, _classBytes);
        _ptr = 0;
    }

    /// <summary>Safety net only: a tensor never disposed still returns its block to the cache.</summary>
    ~CudaStorage()
    {
        if (_ptr != 0) _device.Allocator.Return(_ptr, _classBytes);
    }
}
