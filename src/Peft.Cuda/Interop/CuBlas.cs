using System.Runtime.InteropServices;

namespace Peft.Cuda.Interop;

/// <summary>
/// cuBLAS calls (column-major, as cuBLAS is): handle management and the mixed-precision GEMMs <c>cublasGemmEx</c> /
/// <c>cublasGemmStridedBatchedEx</c> with an explicit compute type. Statuses become <see cref="CudaException"/>s.
/// </summary>
internal static unsafe partial class CuBlas
{
    static CuBlas() => NativeLibraries.EnsureRegistered();

    private const string Lib = NativeLibraries.Cublas;

    internal const int OpN = 0, OpT = 1;
    /// <summary>cudaDataType values.</summary>
    internal const int R32F = 0, R64F = 1, R16F = 2, R16BF = 14;
    /// <summary>cublasComputeType_t values.</summary>
    internal const int Compute32F = 68, Compute32FPedantic = 69, Compute64F = 70, Compute32FFastTf32 = 77;
    internal const int GemmDefault = -1;
    internal const int PointerModeHost = 0;

    [LibraryImport(Lib)] internal static partial int cublasCreate_v2(out IntPtr handle);
    [LibraryImport(Lib)] internal static partial int cublasDestroy_v2(IntPtr handle);
    [LibraryImport(Lib)] internal static partial int cublasGetVersion_v2(IntPtr handle, out int version);
    [LibraryImport(Lib)] internal static partial int cublasSetStream_v2(IntPtr handle, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cublasSetWorkspace_v2(IntPtr handle, ulong workspace, nuint bytes);
    [LibraryImport(Lib)] internal static partial IntPtr cublasGetStatusString(int status);

    [LibraryImport(Lib)] internal static partial int cublasGemmEx(IntPtr handle, int transA, int transB, int m, int n, int k,
        void* alpha, ulong a, int aType, int lda, ulong b, int bType, int ldb, void* beta, ulong c, int cType, int ldc, int computeType, int algo);

    [LibraryImport(Lib)] internal static partial int cublasGemmStridedBatchedEx(IntPtr handle, int transA, int transB, int m, int n, int k,
        void* alpha, ulong a, int aType, int lda, long strideA, ulong b, int bType, int ldb, long strideB, void* beta,
        ulong c, int cType, int ldc, long strideC, int batchCount, int computeType, int algo);

    internal static void Check(int status, string call)
    {
        if (status == 0) return;
        string name = "CUBLAS_STATUS_" + status;
        try { name = Marshal.PtrToStringUTF8(cublasGetStatusString(status)) ?? name; } catch (EntryPointNotFoundException) { }
        throw new CudaException(call, status, name, "cuBLAS call failed");
    }
}
