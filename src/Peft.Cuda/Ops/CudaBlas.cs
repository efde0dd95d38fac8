using Peft.Core;
using Peft.Cuda.Interop;

namespace Peft.Cuda;

/// <summary>
/// Matrix products on CUDA tensors through cuBLAS, in row-major terms (cuBLAS is column-major: a row-major C = A·B is
/// computed as the column-major Cᵀ = Bᵀ·Aᵀ, which is the same memory). float32 runs in full precision unless the
/// device allows TF32; bf16/f16 take 16-bit operands with float32 accumulation.
/// </summary>
public static class CudaBlas
{
    /// <summary><c>x·wᵀ</c> for x [..., K] and w [N, K] (a Linear layer without bias): [..., N].</summary>
    public static Tensor Linear(Tensor x, Tensor w)
    {
        CudaTensors.RequireSameDevice("Linear", x, w);
        CudaTensors.RequireContiguous(x, "Linear");
        CudaTensors.RequireContiguous(w, "Linear");
        if (w.Rank != 2 || x.Size(-1) != w.Size(1))
            throw new ArgumentException($"Linear: x {Shapes.Format(x.Shape)} and weight {Shapes.Format(w.Shape)} do not fit (weight must be [N, K] with K = x's last size)");
        int k = x.Size(-1), n = w.Size(0);
        int m = checked((int)(x.NumEl / k));
        var shape = x.Shape;
        shape[^1] = n;
        var y = CudaTensors.Empty(shape, x.DType, CudaTensors.DeviceOf(x));
        Gemm(false, true, m, n, k, 1f, x, k, w, k, 0f, y, n);
        return y;
    }

    /// <summary><c>a·b</c> for 2-D a [M, K] and b [K, N] (set <paramref name="transposeB"/> for b given as [N, K]).</summary>
    public static Tensor MatMul(Tensor a, Tensor b, bool transposeB = false)
    {
        CudaTensors.RequireSameDevice("MatMul", a, b);
        CudaTensors.RequireContiguous(a, "MatMul");
        CudaTensors.RequireContiguous(b, "MatMul");
        if (a.Rank != 2 || b.Rank != 2) throw new ArgumentException("MatMul on CUDA takes 2-D tensors");
        int m = a.Size(0), k = a.Size(1), n = transposeB ? b.Size(0) : b.Size(1);
        if ((transposeB ? b.Size(1) : b.Size(0)) != k)
            throw new ArgumentException($"MatMul: {Shapes.Format(a.Shape)} · {(transposeB ? "transposed " : "")}{Shapes.Format(b.Shape)} do not fit");
        var c = CudaTensors.Empty([m, n], a.DType, CudaTensors.DeviceOf(a));
        Gemm(false, transposeB, m, n, k, 1f, a, k, b, b.Size(1), 0f, c, n);
        return c;
    }

    /// <summary>
    /// Row-major GEMM into existing memory: C[m×n] = α·op(A)[m×k]·op(B)[k×n] + β·C. A is stored [m, k] (or [k, m] when
    /// <paramref name="transA"/>) with leading dimension <paramref name="lda"/>; likewise B; C has leading dimension
    /// <paramref name="ldc"/>. All three share one dtype; the tensors only supply device, dtype and base address.
    /// </summary>
    public static void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, Tensor a, int lda, Tensor b, int ldb, float beta, Tensor c, int ldc) =>
        Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, side: false);

    /// <summary><see cref="Gemm(bool, bool, int, int, int, float, Tensor, int, Tensor, int, float, Tensor, int)"/> queued on the
    /// device's side lane when <paramref name="side"/> (between <see cref="CudaDevice.Fork"/> and <see cref="CudaDevice.Join"/>).</summary>
    internal static unsafe void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, Tensor a, int lda, Tensor b, int ldb, float beta, Tensor c, int ldc, bool side)
    {
        CudaTensors.RequireSameDevice("Gemm", a, b, c);
        if (a.DType != b.DType || a.DType != c.DType)
            throw new ArgumentException($"Gemm: operands must share a dtype (got {a.DType}, {b.DType}, {c.DType})");
        var device = CudaTensors.DeviceOf(a);
        var (type, compute) = Types(a.DType, device.AllowTf32);
        device.MakeCurrent();
        if (a.DType == DType.F64)
        {
            double al = alpha, be = beta;
            Call(side ? device.SideBlas : device.Blas, transA, transB, m, n, k, &al, a, lda, b, ldb, &be, c, ldc, type, compute);
        }
        else Call(side ? device.SideBlas : device.Blas, transA, transB, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc, type, compute);
    }

    private static unsafe void Call(IntPtr handle, bool transA, bool transB, int m, int n, int k, void* alpha, Tensor a, int lda, Tensor b, int ldb,
        void* beta, Tensor c, int ldc, int type, int compute) =>
        CuBlas.Check(CuBlas.cublasGemmEx(handle, transB ? CuBlas.OpT : CuBlas.OpN, transA ? CuBlas.OpT : CuBlas.OpN, n, m, k,
            alpha, CudaTensors.Address(b), type, ldb, CudaTensors.Address(a), type, lda, beta, CudaTensors.Address(c), type, ldc, compute, CuBlas.GemmDefault),
            $"cublasGemmEx({c.DType}, m={m}, n={n}, k={k})");

    /// <summary>Batched row-major GEMM over <paramref name="batch"/> equally strided matrices (strides in elements).</summary>
    public static unsafe void GemmStridedBatched(bool transA, bool transB, int m, int n, int k, float alpha, Tensor a, int lda, long strideA,
        Tensor b, int ldb, long strideB, float beta, Tensor c, int ldc, long strideC, int batch)
    {
        CudaTensors.RequireSameDevice("GemmStridedBatched", a, b, c);
        var device = CudaTensors.DeviceOf(a);
        var (type, compute) = Types(a.DType, device.AllowTf32);
        if (a.DType == DType.F64) throw new NotSupportedException("GemmStridedBatched: F64 is not wired");
        device.MakeCurrent();
        CuBlas.Check(CuBlas.cublasGemmStridedBatchedEx(device.Blas, transB ? CuBlas.OpT : CuBlas.OpN, transA ? CuBlas.OpT : CuBlas.OpN, n, m, k,
            &alpha, CudaTensors.Address(b), type, ldb, strideB, CudaTensors.Address(a), type, lda, strideA, &beta,
            CudaTensors.Address(c), type, ldc, strideC, batch, compute, CuBlas.GemmDefault), $"cublasGemmStridedBatchedEx({c.DType}, m={m}, n={n}, k={k}, batch={batch})");
    }

    /// <summary>The cuBLAS data and compute types for operands of <paramref name="dtype"/> (F32 as TF32 when allowed).</summary>
    internal static (int Type, int Compute) Types(DType dtype, bool tf32) => dtype switch
    {
        DType.F32 => (CuBlas.R32F, tf32 ? CuBlas.Compute32FFastTf32 : CuBlas.Compute32F), // 32F without TF32 math mode is full float32
        DType.BF16 => (CuBlas.R16BF, CuBlas.Compute32F),
        DType.F16 => (CuBlas.R16F, CuBlas.Compute32F),
        DType.F64 => (CuBlas.R64F, CuBlas.Compute64F),
        _ => throw new NotSupportedException($"cuBLAS GEMM does not take {dtype}"),
    };
}
