namespace Peft.Core;

/// <summary>Kind of memory a tensor lives in.</summary>
public enum DeviceType
{
    /// <summary>Host memory, computed by the managed SIMD backend.</summary>
    Cpu,
    /// <summary>NVIDIA GPU memory, computed by the Peft.Cuda backend.</summary>
    Cuda,
    /// <summary>No memory at all: shapes and dtypes only (torch's "meta" device). Ops give results of the right shape
    /// without computing; reading elements is an error. For sizing models without allocating them.</summary>
    Meta,
}

/// <summary>Where a tensor lives: the CPU or one CUDA device.</summary>
/// <example><code>var x = Tensor.Randn([2, 3]);            // Device.Cpu
/// var y = x.To(Device.Cuda(0));                    // needs Peft.Cuda</code></example>
public readonly record struct Device(DeviceType Type, int Index)
{
    /// <summary>The host.</summary>
    public static readonly Device Cpu = new(DeviceType.Cpu, 0);

    /// <summary>CUDA device number <paramref name="index"/>.</summary>
    public static Device Cuda(int index = 0) => new(DeviceType.Cuda, index);

    /// <summary>The shape-only device (see <see cref="DeviceType.Meta"/>).</summary>
    public static readonly Device Meta = new(DeviceType.Meta, 0);

    /// <inheritdoc/>
    public override string ToString() => Type switch { DeviceType.Cpu => "cpu", DeviceType.Meta => "meta", _ => $"cuda:{Index}" };
}
