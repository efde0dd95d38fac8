using Peft.Core;
using Peft.Cuda.Interop;

namespace Peft.Cuda;

/// <summary>
/// torch.matmul's batched product on CUDA tensors as one <c>cublasGemmStridedBatchedEx</c>. Transposed views go in as
/// transpose flags (backward's Aᵀ·G and G·Bᵀ never copy); batch dims that broadcast (a weight shared by every batch
/// element) become stride 0; only a batch layout that no single stride describes is materialised.
/// </summary>
internal static unsafe class CudaMatMul
{
    /// <summary>a [..., M, K] · b [..., K, N] → [batch..., M, N] (<paramref name="outShape"/>): F64 stays F64; F32, BF16
    /// and F16 give F32 (two 16-bit operands multiply in 16 bits with F32 accumulation; a mixed pair widens to F32).</summary>
    internal static Tensor Batched(Tensor a, Tensor b, int[] outShape)
    {
        var device = CudaTensors.DeviceOf(a);
        using var wa = a.DType != b.DType && a.DType is DType.BF16 or DType.F16 ? CastDense(a, DType.F32) : null;
        using var wb = a.DType != b.DType && b.DType is DType.BF16 or DType.F16 ? CastDense(b, DType.F32) : null;
        a = wa ?? a;
        b = wb ?? b;
        var outDType = a.DType == DType.F64 ? DType.F64 : DType.F32;
        var c = CudaTensors.Empty(outShape, outDType, device);
        int m = a.Size(-2), k = a.Size(-1), n = b.Size(-1);
        var batch = outShape[..^2];
        int count = checked((int)Shapes.NumEl(batch));
        if (count == 0 || m == 0 || n == 0) return c;
        if (k == 0)
        {
            CudaTensors.FillBytes(c, 0);
            return c;
        }
        try
        {
            var (ta, opA, lda, strideA) = Operand(a, batch);
            using var _a = ReferenceEquals(ta, a) ? null : ta;
            var (tb, opB, ldb, strideB) = Operand(b, batch);
            using var _b = ReferenceEquals(tb, b) ? null : tb;
            var (type, compute) = CudaBlas.Types(a.DType, device.AllowTf32);
            int cType = outDType == DType.F64 ? CuBlas.R64F : CuBlas.R32F;
            device.MakeCurrent();
            // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ over the same memory: B goes first.
            int status;
            if (outDType == DType.F64)
            {
                double one = 1, zero = 0;
                status = CuBlas.cublasGemmStridedBatchedEx(device.Blas, opB ? CuBlas.OpT : CuBlas.OpN, opA ? CuBlas.OpT : CuBlas.OpN, n, m, k,
                    &one, CudaTensors.Address(tb), type, ldb, strideB, CudaTensors.Address(ta), type, lda, strideA, &zero,
                    CudaTensors.Address(c), cType, n, (long)m * n, count, compute, CuBlas.GemmDefault);
            }
            else
            {
                float one = 1, zero = 0;
                status = CuBlas.cublasGemmStridedBatchedEx(device.Blas, opB ? CuBlas.OpT : CuBlas.OpN, opA ? CuBlas.OpT : CuBlas.OpN, n, m, k,
                    &one, CudaTensors.Address(tb), type, ldb, strideB, CudaTensors.Address(ta), type, lda, strideA, &zero,
                    CudaTensors.Address(c), cType, n, (long)m * n, count, compute, CuBlas.GemmDefault);
            }
            CuBlas.Check(status, $"cublasGemmStridedBatchedEx({a.DType}·{b.DType} → {outDType}, m={m}, n={n}, k={k}, batch={count})");
            return c;
        }
        catch
        {
            c.Dispose();
            throw;
        }
    }

    /// <summary>
    /// How cuBLAS reads one operand: the tensor to pass (the operand itself, or a dense copy when its layout needs
    /// one), whether its matrices are column-major (a transposed view), the leading dimension and the stride between
    /// consecutive matrices of the (broadcast) batch.
    /// </summary>
    private static (Tensor Data, bool Transposed, int Ld, long BatchStride) Operand(Tensor x, int[] batch)
    {
        int rows = x.Size(-2), cols = x.Size(-1);
        var strides = x.Strides;
        long rs = strides[^2], cs = strides[^1];
        bool? transposed = (cs == 1 || cols == 1) && rs >= cols ? false
                         : (rs == 1 || rows == 1) && cs >= rows ? true
                         : null;
        var batchStrides = Shapes.BroadcastStrides(x.Shape[..^2], strides[..^2], batch);
        if (transposed is { } t && UniformStride(batch, batchStrides) is { } stride)
            return (x, t, checked((int)(t ? Math.Max(cs, rows) : Math.Max(rs, cols))), stride);
        // Materialise the broadcast batch densely: stride rows·cols, row-major.
        using var expanded = x.ViewOf([.. batch, rows, cols], [.. batchStrides, rs, cs], x.Offset);
        var dense = expanded.ContiguousCopy();
        return (dense, false, cols, (long)rows * cols);
    }

    /// <summary>The single stride s with offset(batch index i) = i·s, or null when the batch strides are not of that form.</summary>
    private static long? UniformStride(int[] batch, long[] strides)
    {
        long? s = null;
        long inner = 1;
        for (int d = batch.Length - 1; d >= 0; d--)
        {
            if (batch[d] == 1) continue;
            s ??= strides[d];
            if (strides[d] != s * inner) return null;
            inner *= batch[d];
        }
        return s ?? 0;
    }

    private static Tensor CastDense(Tensor x, DType dtype)
    {
        using var dense = x.IsContiguous ? null : x.ContiguousCopy();
        return CudaKernels.Cast(dense ?? x, dtype);
    }
}
