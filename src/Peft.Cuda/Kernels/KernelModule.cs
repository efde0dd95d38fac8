using System.Collections.Concurrent;
using Peft.Cuda.Interop;

namespace Peft.Cuda.Kernels;

/// <summary>One kernel argument: 8 bytes holding a device pointer, an int64, an int32 or a float32 (little-endian,
/// so a 4-byte parameter reads the low half).</summary>
internal readonly struct KernelArg
{
    internal readonly ulong Bits;
    private KernelArg(ulong bits) => Bits = bits;
    public static implicit operator KernelArg(ulong devicePointer) => new(devicePointer);
    public static implicit operator KernelArg(long value) => new((ulong)value);
    public static implicit operator KernelArg(int value) => new((uint)value);
    public static implicit operator KernelArg(float value) => new(BitConverter.SingleToUInt32Bits(value));
    public static implicit operator KernelArg(uint value) => new(value);
    public static implicit operator KernelArg(double value) => new(BitConverter.DoubleToUInt64Bits(value));
}

/// <summary>
/// The module nvcc built from kernels/*.cu (peft_kernels.fatbin, embedded in this assembly; <c>PEFT_KERNELS_FATBIN</c>
/// names another file), loaded once per device with cuModuleLoadData; functions are looked up by their extern "C" name.
/// </summary>
internal sealed unsafe class KernelModule
{
    private readonly CudaDevice _device;
    private readonly IntPtr _module;
    private readonly ConcurrentDictionary<string, IntPtr> _functions = new();

    private KernelModule(CudaDevice device, IntPtr module)
    {
        _device = device;
        _module = module;
    }

    internal static KernelModule Load(CudaDevice device)
    {
        byte[] image = ReadImage();
        device.MakeCurrent();
        fixed (byte* p = image)
        {
            CudaDriver.Check(CudaDriver.cuModuleLoadData(out var module, p), $"cuModuleLoadData(peft_kernels.fatbin, {image.Length} bytes)");
            return new KernelModule(device, module);
        }
    }

    /// <summary>The fatbin bytes, or an exception saying how to build them.</summary>
    internal static byte[] ReadImage()
    {
        if (Environment.GetEnvironmentVariable("PEFT_KERNELS_FATBIN") is { Length: > 0 } file) return File.ReadAllBytes(file);
        using var stream = typeof(KernelModule).Assembly.GetManifestResourceStream("peft_kernels.fatbin")
            ?? throw new InvalidOperationException("Peft.Cuda was built without its kernels (build/kernels/peft_kernels.fatbin was missing at build time): " +
                                                   "install nvcc, run `cmake -S . -B build && cmake --build build`, then rebuild, or set PEFT_KERNELS_FATBIN");
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>True when the kernels were embedded at build time.</summary>
    internal static bool Embedded => typeof(KernelModule).Assembly.GetManifestResourceInfo("peft_kernels.fatbin") != null;

    internal IntPtr Function(string name) => _functions.GetOrAdd(name, n =>
    {
        CudaDriver.Check(CudaDriver.cuModuleGetFunction(out var f, _module, n), $"cuModuleGetFunction({n})");
        return f;
    });

    /// <summary>Queues kernel <paramref name="name"/> on the device's stream.</summary>
    internal void Launch(string name, uint grid, uint block, params ReadOnlySpan<KernelArg> args) =>
        Launch(name, (grid, 1, 1), (block, 1, 1), 0, args);

    internal void Launch(string name, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, uint sharedBytes, params ReadOnlySpan<KernelArg> args) =>
        Launch(name, grid, block, sharedBytes, side: false, args);

    /// <summary>Queues kernel <paramref name="name"/> on the main stream, or on the side lane when <paramref name="side"/>.</summary>
    internal void Launch(string name, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, uint sharedBytes, bool side, params ReadOnlySpan<KernelArg> args) =>
        Launch(name, grid, block, sharedBytes, side, null, args);

    /// <summary>Queues a kernel whose last parameter is a struct passed by value (<paramref name="byValue"/> points at
    /// it; cuLaunchKernel copies it before returning, so a stack address is fine).</summary>
    internal void Launch(string name, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, uint sharedBytes, bool side, void* byValue, params ReadOnlySpan<KernelArg> args)
    {
        var function = Function(name);
        int count = args.Length + (byValue == null ? 0 : 1);
        ulong* values = stackalloc ulong[Math.Max(1, args.Length)];
        void** pointers = stackalloc void*[Math.Max(1, count)];
        for (int i = 0; i < args.Length; i++)
        {
            values[i] = args[i].Bits;
            pointers[i] = &values[i];
        }
        if (byValue != null) pointers[args.Length] = byValue;
        _device.MakeCurrent();
        CudaDriver.Check(CudaDriver.cuLaunchKernel(function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, side ? _device.SideStream : _device.Stream, pointers, null),
            $"cuLaunchKernel({name}, grid {grid}, block {block})");
    }

    /// <summary>A grid-stride launch size: enough blocks to fill the device a few times over, never more than the work needs.</summary>
    internal uint GridFor(long work, uint block)
    {
        long needed = (work + block - 1) / block;
        long fill = (long)_device.MultiprocessorCount * 8;
        return (uint)Math.Clamp(Math.Min(needed, fill), 1, int.MaxValue);
    }
}
