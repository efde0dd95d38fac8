using Peft.Core;
using Peft.Cuda.Interop;
using Peft.Cuda.Memory;

namespace Peft.Cuda;

/// <summary>Creating CUDA tensors and reading their placement.</summary>
public static class CudaTensors
{
    /// <summary>An uninitialised contiguous tensor on <paramref name="device"/> (kernels write every element before it is read).</summary>
    public static Tensor Empty(ReadOnlySpan<int> shape, DType dtype, CudaDevice device)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        var storage = new CudaStorage(device, n * dtype.SizeOf());
        return new Tensor(storage, shape.ToArray(), Shapes.ContiguousStrides(shape.ToArray()), 0, dtype);
    }

    /// <summary>Every byte of <paramref name="tensor"/>'s memory set to <paramref name="value"/> (0xFF poisons floats with NaN in tests).</summary>
    public static void FillBytes(Tensor tensor, byte value)
    {
        RequireContiguous(tensor, nameof(FillBytes));
        var device = DeviceOf(tensor);
        device.MakeCurrent();
        CudaDriver.Check(CudaDriver.cuMemsetD8Async(Address(tensor), value, (nuint)(tensor.NumEl * tensor.DType.SizeOf()), device.Stream), "cuMemsetD8Async");
    }

    /// <summary>Queues a device-to-device copy of <paramref name="bytes"/> bytes between two CUDA tensors' memory (the benchmarks' bandwidth probe).</summary>
    public static void CopyBytes(Tensor destination, Tensor source, long bytes)
    {
        var device = CudaTensors.DeviceOf(source);
        device.MakeCurrent();
        CudaDriver.Check(CudaDriver.cuMemcpyDtoDAsync_v2(CudaTensors.Address(destination), CudaTensors.Address(source), (nuint)bytes, device.Stream), "cuMemcpyDtoDAsync_v2");
    }

    /// <summary>A zero-filled tensor on <paramref name="device"/>.</summary>
    public static Tensor Zeros(ReadOnlySpan<int> shape, DType dtype, CudaDevice device)
    {
        var t = Empty(shape, dtype, device);
        FillBytes(t, 0);
        return t;
    }

    /// <summary>The CUDA device <paramref name="tensor"/> lives on; throws when it is not a CUDA tensor.</summary>
    public static CudaDevice DeviceOf(Tensor tensor) => tensor.Storage is CudaStorage s
        ? s.CudaDevice
        : throw new ArgumentException($"expected a CUDA tensor, got one on {tensor.Device}", nameof(tensor));

    /// <summary>Device address of the tensor's first element.</summary>
    internal static ulong Address(Tensor tensor) => tensor.Storage is CudaStorage s
        ? s.DevicePointer + (ulong)(tensor.Offset * tensor.DType.SizeOf())
        : throw new ArgumentException($"expected a CUDA tensor, got one on {tensor.Device}", nameof(tensor));

    internal static void RequireContiguous(Tensor t, string op)
    {
        if (!t.IsContiguous) throw new ArgumentException($"{op} needs a contiguous CUDA tensor (strides [{string.Join(", ", t.Strides)}])");
    }

    internal static void RequireSameDevice(string op, params Tensor[] tensors)
    {
        var first = tensors[0].Device;
        foreach (var t in tensors)
            if (t.Device != first || t.Device.Type != DeviceType.Cuda)
                throw new ArgumentException($"{op}: all tensors must be on the same CUDA device (got {string.Join(", ", tensors.Select(x => x.Device))})");
    }
}
