namespace Peft.Core;

// Routing an op to its device. Every front-end asks DeviceKernels first: null means "all on the CPU, run the CPU
// kernels here"; otherwise the device package's kernels run it. Mixing devices is an error naming the op, as torch's.
public sealed partial class Tensor
{
    /// <summary>The kernels of the device the operands share, or null when all are CPU tensors.</summary>
    internal static IDeviceKernels? DeviceKernels(string op, params Tensor?[] operands)
    {
        Device? device = null;
        foreach (var t in operands)
        {
            if (t == null) continue;
            t.ThrowIfDisposed();
            if (device == null) device = t.Device;
            else if (t.Device != device)
                throw new ArgumentException($"{op}: operands are on different devices ({string.Join(", ", operands.OfType<Tensor>().Select(x => x.Device))}); move them with .To(device) first");
        }
        return device is { Type: not DeviceType.Cpu } d ? DeviceBackends.KernelsFor(d, op) : null;
    }

    /// <summary>An F32 version of a device tensor for kernels that compute in F32 (16-bit floats widen exactly);
    /// null when it already is F32. Other dtypes are an error naming the op.</summary>
    private static Tensor? WidenOnDevice(IDeviceKernels k, string op, Tensor t) => t.DType switch
    {
        DType.F32 => null,
        DType.BF16 or DType.F16 => k.Cast(t, DType.F32),
        _ => throw new DTypeMismatchException($"{op} on {t.Device} computes in F32 (BF16/F16 widen to it), got {t.DType}"),
    };

    /// <summary>This tensor's elements on the host (a copy for device tensors, a view for CPU ones).</summary>
    internal Tensor HostData() => Device.Type == DeviceType.Cpu ? ContiguousData() : To(Device.Cpu);
}
