namespace Peft.Cuda;

/// <summary>A CUDA driver or cuBLAS call failed. The message names the call, the status and its description.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception for <paramref name="call"/> returning <paramref name="status"/>.</summary>
    public CudaException(string call, int status, string statusName, string description)
        : base($"{call} failed: {statusName} ({status}): {description}")
    {
        Call = call;
        Status = status;
        StatusName = statusName;
    }

    /// <summary>The API function that failed, e.g. <c>cuMemAlloc_v2</c>.</summary>
    public string Call { get; }
    /// <summary>The numeric status (CUresult or cublasStatus_t).</summary>
    public int Status { get; }
    /// <summary>The status's symbolic name, e.g. <c>CUDA_ERROR_OUT_OF_MEMORY</c>.</summary>
    public string StatusName { get; }
}
