using System.Runtime.CompilerServices;

namespace Peft.Core;

/// <summary>What a device package (Peft.Cuda) provides to Peft.Core: copying tensors to and from its devices.</summary>
public interface IDeviceBackend
{
    /// <summary>A contiguous copy of <paramref name="source"/> on <paramref name="target"/> (one of the two is this backend's device).</summary>
    Tensor CopyTo(Tensor source, Device target);
}

/// <summary>
/// Device backends by device type. Peft.Core knows only the CPU; Peft.Cuda registers itself when loaded. A request
/// for a CUDA tensor loads Peft.Cuda by name when the application references it, so <c>x.To(Device.Cuda(0))</c>
/// works without touching a Peft.Cuda type first.
/// </summary>
public static class DeviceBackends
{
    private static readonly Dictionary<DeviceType, IDeviceBackend> Backends = new() { [DeviceType.Meta] = MetaDevice.Instance };
    private static readonly Dictionary<DeviceType, IDeviceKernels> Kernels = new() { [DeviceType.Meta] = MetaDevice.Instance };

    /// <summary>Registers the backend of <paramref name="type"/> (Peft.Cuda calls this).</summary>
    public static void Register(DeviceType type, IDeviceBackend backend)
    {
        lock (Backends) Backends[type] = backend;
    }

    /// <summary>Registers the op kernels of <paramref name="type"/> (Peft.Cuda's static constructor calls this).</summary>
    internal static void RegisterKernels(DeviceType type, IDeviceKernels kernels)
    {
        lock (Kernels) Kernels[type] = kernels;
    }

    /// <summary>Installs <paramref name="backend"/> and <paramref name="kernels"/> for <paramref name="type"/> until the
    /// result is disposed, which restores what was registered before (tests run the front-ends' device paths on a
    /// host-memory stand-in this way).</summary>
    internal static IDisposable Override(DeviceType type, IDeviceBackend backend, IDeviceKernels kernels)
    {
        IDeviceBackend? oldBackend;
        IDeviceKernels? oldKernels;
        lock (Backends) { Backends.TryGetValue(type, out oldBackend); Backends[type] = backend; }
        lock (Kernels) { Kernels.TryGetValue(type, out oldKernels); Kernels[type] = kernels; }
        return new Restore(() =>
        {
            lock (Backends) { if (oldBackend == null) Backends.Remove(type); else Backends[type] = oldBackend; }
            lock (Kernels) { if (oldKernels == null) Kernels.Remove(type); else Kernels[type] = oldKernels; }
        });
    }

    private sealed class Restore(Action undo) : IDisposable
    {
        private Action? _undo = undo;
        public void Dispose() => Interlocked.Exchange(ref _undo, null)?.Invoke();
    }

    /// <summary>The op kernels of <paramref name="device"/>'s type; <paramref name="op"/> names the operation in the
    /// error when the package is absent.</summary>
    internal static IDeviceKernels KernelsFor(Device device, string op)
    {
        For(device.Type); // loads the package, whose static constructor registers both
        lock (Kernels)
            return Kernels.TryGetValue(device.Type, out var k) ? k
                : throw new NotSupportedException($"{op}: the {device.Type} backend that is loaded runs no tensor ops");
    }

    /// <summary>The backend of <paramref name="type"/>, loading its package when needed; throws with the reason when it is absent.</summary>
    public static IDeviceBackend For(DeviceType type)
    {
        lock (Backends)
            if (Backends.TryGetValue(type, out var backend)) return backend;
        // The name is a literal so that trimming and native AOT see it and keep the type (with its static constructor,
        // which registers the backend) whenever the app references Peft.Cuda.
        if (type == DeviceType.Cuda && Type.GetType("Peft.Cuda.CudaBackend, Peft.Cuda", throwOnError: false) is { } t)
            RuntimeHelpers.RunClassConstructor(t.TypeHandle);
        lock (Backends)
            return Backends.TryGetValue(type, out var backend) ? backend
                : throw new NotSupportedException($"no backend for {type} tensors is loaded: CUDA tensors need the Peft.Cuda package referenced by the application");
    }
}
