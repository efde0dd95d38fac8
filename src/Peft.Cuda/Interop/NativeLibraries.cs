using System.Reflection;
using System.Runtime.InteropServices;

namespace Peft.Cuda.Interop;

/// <summary>
/// Finds the CUDA libraries at run time. The bindings name logical libraries ("cuda", "cublas"); this resolver maps
/// them to the first file that loads: the driver is always <c>libcuda.so.1</c> (installed by the NVIDIA driver, never
/// by a toolkit); cuBLAS is probed newest first (<c>.13</c>, <c>.12</c>, <c>.11</c>), on the loader's path and then in
/// <c>$CUDA_HOME/lib64</c> and <c>/usr/local/cuda/lib64</c>. <c>PEFT_CUBLAS_PATH</c> overrides the probe, and
/// <c>PEFT_CUDA_DRIVER_PATH</c> the driver (native/emulation's host stand-in for both is selected this way in CI).
/// </summary>
internal static class NativeLibraries
{
    internal const string Driver = "cuda";
    internal const string Cublas = "cublas";

    private static readonly string[] DriverNames = ["libcuda.so.1", "libcuda.so", "nvcuda.dll"];
    private static readonly string[] CublasNames = ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so", "cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"];

    /// <summary>The file each logical library resolved to (for diagnostics and the benchmark header).</summary>
    internal static readonly Dictionary<string, string> Resolved = new();

    private static int _registered;

    /// <summary>Installs the resolver once; the binding classes call it from their static constructors, which run
    /// before their first P/Invoke.</summary>
    internal static void EnsureRegistered()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 0)
            NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        string[] candidates = name switch
        {
            Driver => Environment.GetEnvironmentVariable("PEFT_CUDA_DRIVER_PATH") is { Length: > 0 } d ? [d] : DriverNames,
            Cublas => Environment.GetEnvironmentVariable("PEFT_CUBLAS_PATH") is { Length: > 0 } p ? [p] : WithToolkitFolders(CublasNames),
            _ => [],
        };
        foreach (var candidate in candidates)
            if (NativeLibrary.TryLoad(candidate, out var handle))
            {
                lock (Resolved) Resolved[name] = candidate;
                return handle;
            }
        if (candidates.Length == 0) return IntPtr.Zero;
        throw new DllNotFoundException($"CUDA library '{name}' not found; tried {string.Join(", ", candidates)}. " +
            (name == Driver ? "Is the NVIDIA driver installed?" : "Install the CUDA toolkit's cuBLAS or set PEFT_CUBLAS_PATH."));
    }

    private static string[] WithToolkitFolders(string[] names)
    {
        var folders = new List<string>();
        if (Environment.GetEnvironmentVariable("CUDA_HOME") is { Length: > 0 } home) folders.Add(Path.Combine(home, "lib64"));
        folders.Add("/usr/local/cuda/lib64");
        return [.. names, .. folders.SelectMany(f => names.Where(n => n.StartsWith("lib")).Select(n => Path.Combine(f, n)))];
    }
}
