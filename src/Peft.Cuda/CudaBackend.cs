using Peft.Core;
using Peft.Cuda.Memory;

namespace Peft.Cuda;

/// <summary>Peft.Core's door to CUDA: <c>tensor.To(Device.Cuda(i))</c> and back land here. Registered by its static
/// constructor, which Peft.Core runs when it first needs a CUDA backend.</summary>
public sealed class CudaBackend : IDeviceBackend
{
    static CudaBackend()
    {
        DeviceBackends.RegisterKernels(DeviceType.Cuda, new CudaOps());
        DeviceBackends.Register(DeviceType.Cuda, new CudaBackend());
    }

    private CudaBackend() { }

    /// <inheritdoc/>
    public unsafe Tensor CopyTo(Tensor source, Device target)
    {
        if (source.Device.Type == DeviceType.Cpu && target.Type == DeviceType.Cuda)
        {
            var device = CudaDevice.Get(target.Index);
            using var data = source.ContiguousData();
            var result = CudaTensors.Empty(source.Shape, source.DType, device);
            device.Staging.HostToDeviceQueued(CudaTensors.Address(result), data.Ptr<byte>(), data.NumEl * data.DType.SizeOf());
            return result;
        }
        if (source.Device.Type == DeviceType.Cuda && target.Type == DeviceType.Cpu)
            return ToHost(source);
        if (source.Device.Type == DeviceType.Cuda && target.Type == DeviceType.Cuda)
        {
            using var host = ToHost(source);
            return CopyTo(host, target);
        }
        throw new NotSupportedException($"copy from {source.Device} to {target} is not handled by the CUDA backend");
    }

    /// <summary>Device → host. A strided view copies the span of memory it covers, then gathers on the host.</summary>
    private static unsafe Tensor ToHost(Tensor source)
    {
        var storage = (CudaStorage)source.Storage;
        int size = source.DType.SizeOf();
        if (source.IsContiguous)
        {
            var host = Tensor.Allocate(source.Shape, source.DType, zero: false);
            storage.CudaDevice.Staging.DeviceToHost(host.Ptr<byte>(), storage.DevicePointer + (ulong)(source.Offset * size), source.NumEl * size);
            return host;
        }
        var strides = source.Strides;
        if (strides.Any(s => s < 0)) throw new NotSupportedException("negative strides are not supported on CUDA tensors");
        long extent = 1;
        for (int d = 0; d < strides.Length; d++) extent += (long)(source.Shape[d] - 1) * strides[d];
        using var span = Tensor.Allocate([checked((int)extent)], source.DType, zero: false);
        storage.CudaDevice.Staging.DeviceToHost(span.Ptr<byte>(), storage.DevicePointer + (ulong)(source.Offset * size), extent * size);
        using var view = span.ViewOf(source.Shape, strides, 0);
        return view.ContiguousCopy();
    }
}
