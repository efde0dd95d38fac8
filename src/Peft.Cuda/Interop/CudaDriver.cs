using System.Runtime.InteropServices;

namespace Peft.Cuda.Interop;

/// <summary>
/// The CUDA driver API calls Peft.Cuda uses, bound to the real exported symbols (<c>cuMemAlloc_v2</c> and friends:
/// cuda.h's unsuffixed names are C macros). Every call returns a CUresult; <see cref="Check"/> turns a failure into a
/// <see cref="CudaException"/> naming the call. Device pointers are <c>ulong</c> (CUdeviceptr is 64-bit).
/// </summary>
internal static unsafe partial class CudaDriver
{
    static CudaDriver() => NativeLibraries.EnsureRegistered();

    private const string Lib = NativeLibraries.Driver;

    internal const int AttrMultiprocessorCount = 16;
    internal const int AttrComputeCapabilityMajor = 75;
    internal const int AttrComputeCapabilityMinor = 76;
    internal const int EventDefault = 0, EventDisableTiming = 2;
    internal const int StreamNonBlocking = 1;

    [LibraryImport(Lib)] internal static partial int cuInit(uint flags);
    [LibraryImport(Lib)] internal static partial int cuDriverGetVersion(out int version);
    [LibraryImport(Lib)] internal static partial int cuDeviceGetCount(out int count);
    [LibraryImport(Lib)] internal static partial int cuDeviceGet(out int device, int ordinal);
    [LibraryImport(Lib)] internal static partial int cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(Lib)] internal static partial int cuDeviceGetAttribute(out int value, int attribute, int device);
    [LibraryImport(Lib)] internal static partial int cuDeviceTotalMem_v2(out nuint bytes, int device);
    [LibraryImport(Lib)] internal static partial int cuDevicePrimaryCtxRetain(out IntPtr context, int device);
    [LibraryImport(Lib)] internal static partial int cuDevicePrimaryCtxRelease_v2(int device);
    [LibraryImport(Lib)] internal static partial int cuCtxSetCurrent(IntPtr context);
    [LibraryImport(Lib)] internal static partial int cuCtxSynchronize();
    [LibraryImport(Lib)] internal static partial int cuMemGetInfo_v2(out nuint free, out nuint total);
    [LibraryImport(Lib)] internal static partial int cuMemAlloc_v2(out ulong pointer, nuint bytes);
    [LibraryImport(Lib)] internal static partial int cuMemFree_v2(ulong pointer);
    [LibraryImport(Lib)] internal static partial int cuMemAllocHost_v2(out void* pointer, nuint bytes);
    [LibraryImport(Lib)] internal static partial int cuMemFreeHost(void* pointer);
    [LibraryImport(Lib)] internal static partial int cuMemcpyHtoDAsync_v2(ulong destination, void* source, nuint bytes, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuMemcpyDtoHAsync_v2(void* destination, ulong source, nuint bytes, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuMemcpyDtoDAsync_v2(ulong destination, ulong source, nuint bytes, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuMemsetD8Async(ulong destination, byte value, nuint count, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuStreamCreate(out IntPtr stream, uint flags);
    [LibraryImport(Lib)] internal static partial int cuStreamDestroy_v2(IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuStreamSynchronize(IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuStreamWaitEvent(IntPtr stream, IntPtr evt, uint flags);
    [LibraryImport(Lib)] internal static partial int cuEventCreate(out IntPtr evt, uint flags);
    [LibraryImport(Lib)] internal static partial int cuEventDestroy_v2(IntPtr evt);
    [LibraryImport(Lib)] internal static partial int cuEventRecord(IntPtr evt, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuEventSynchronize(IntPtr evt);
    [LibraryImport(Lib)] internal static partial int cuEventElapsedTime(out float milliseconds, IntPtr start, IntPtr end);
    [LibraryImport(Lib)] internal static partial int cuModuleLoadData(out IntPtr module, void* image);
    [LibraryImport(Lib)] internal static partial int cuModuleUnload(IntPtr module);
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)] internal static partial int cuModuleGetFunction(out IntPtr function, IntPtr module, string name);
    [LibraryImport(Lib)] internal static partial int cuLaunchKernel(IntPtr function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemBytes, IntPtr stream, void** kernelParams, void** extra);
    [LibraryImport(Lib)] internal static partial int cuGetErrorName(int error, out byte* name);
    [LibraryImport(Lib)] internal static partial int cuGetErrorString(int error, out byte* text);

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="call"/> unless <paramref name="status"/> is CUDA_SUCCESS.</summary>
    internal static void Check(int status, string call)
    {
        if (status != 0) throw new CudaException(call, status, ErrorName(status), ErrorText(status));
    }

    internal static string ErrorName(int status) =>
        cuGetErrorName(status, out var p) == 0 && p != null ? Marshal.PtrToStringUTF8((IntPtr)p) ?? $"CUresult {status}" : $"CUresult {status}";

    internal static string ErrorText(int status) =>
        cuGetErrorString(status, out var p) == 0 && p != null ? Marshal.PtrToStringUTF8((IntPtr)p) ?? "" : "unknown error";
}
