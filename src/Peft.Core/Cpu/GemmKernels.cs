using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Peft.Core.Cpu;

// The micro-kernels: C[6×NR] += Apanel[6×kc] · Bpanel[kc×NR]. Twelve independent accumulators hide the FMA
// latency (4 cycles × 2 pipes needs ≥ 8) and stay in registers together with two B vectors and one A broadcast.
internal static unsafe partial class Gemm
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel6x32(int kc, float* a, float* b, float* c, long ldc, bool store)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        PrefetchTile(c, ldc, 2);
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.LoadAligned(b);
            var b1 = Vector512.LoadAligned(b + 16);
            var a0 = Vector512.Create(a[0]);
            c00 = Avx512F.FusedMultiplyAdd(a0, b0, c00); c01 = Avx512F.FusedMultiplyAdd(a0, b1, c01);
            var a1 = Vector512.Create(a[1]);
            c10 = Avx512F.FusedMultiplyAdd(a1, b0, c10); c11 = Avx512F.FusedMultiplyAdd(a1, b1, c11);
            var a2 = Vector512.Create(a[2]);
            c20 = Avx512F.FusedMultiplyAdd(a2, b0, c20); c21 = Avx512F.FusedMultiplyAdd(a2, b1, c21);
            var a3 = Vector512.Create(a[3]);
            c30 = Avx512F.FusedMultiplyAdd(a3, b0, c30); c31 = Avx512F.FusedMultiplyAdd(a3, b1, c31);
            var a4 = Vector512.Create(a[4]);
            c40 = Avx512F.FusedMultiplyAdd(a4, b0, c40); c41 = Avx512F.FusedMultiplyAdd(a4, b1, c41);
            var a5 = Vector512.Create(a[5]);
            c50 = Avx512F.FusedMultiplyAdd(a5, b0, c50); c51 = Avx512F.FusedMultiplyAdd(a5, b1, c51);
            a += 6;
            b += 32;
        }
        Acc512(c, c00, c01, store); Acc512(c + ldc, c10, c11, store); Acc512(c + 2 * ldc, c20, c21, store);
        Acc512(c + 3 * ldc, c30, c31, store); Acc512(c + 4 * ldc, c40, c41, store); Acc512(c + 5 * ldc, c50, c51, store);
    }

    /// <summary>
    /// Asks for the C tile's rows (<paramref name="lines"/> cache lines each) before the k loop, so that their misses
    /// overlap the FMAs instead of stalling the stores at the end: C's rows lie a whole row of C apart, in L3 or
    /// memory once C outgrows L2 (a tied LM head's C is 256 × 50257 floats, 51 MB).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchTile(float* c, long ldc, int lines)
    {
        if (!Sse.IsSupported) return;
        for (int i = 0; i < 6; i++)
            for (int l = 0; l < lines; l++) Sse.Prefetch0(c + i * ldc + 16 * l);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Acc512(float* row, Vector512<float> lo, Vector512<float> hi, bool store)
    {
        if (!store) { lo += Vector512.Load(row); hi += Vector512.Load(row + 16); }
        Vector512.Store(lo, row);
        Vector512.Store(hi, row + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel6x16(int kc, float* a, float* b, float* c, long ldc, bool store)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        PrefetchTile(c, ldc, 1);
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            var a0 = Vector256.Create(a[0]); c00 = Fmadd(a0, b0, c00); c01 = Fmadd(a0, b1, c01);
            var a1 = Vector256.Create(a[1]); c10 = Fmadd(a1, b0, c10); c11 = Fmadd(a1, b1, c11);
            var a2 = Vector256.Create(a[2]); c20 = Fmadd(a2, b0, c20); c21 = Fmadd(a2, b1, c21);
            var a3 = Vector256.Create(a[3]); c30 = Fmadd(a3, b0, c30); c31 = Fmadd(a3, b1, c31);
            var a4 = Vector256.Create(a[4]); c40 = Fmadd(a4, b0, c40); c41 = Fmadd(a4, b1, c41);
            var a5 = Vector256.Create(a[5]); c50 = Fmadd(a5, b0, c50); c51 = Fmadd(a5, b1, c51);
            a += 6;
            b += 16;
        }
        Acc256(c, c00, c01, store); Acc256(c + ldc, c10, c11, store); Acc256(c + 2 * ldc, c20, c21, store);
        Acc256(c + 3 * ldc, c30, c31, store); Acc256(c + 4 * ldc, c40, c41, store); Acc256(c + 5 * ldc, c50, c51, store);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Fmadd(Vector256<float> a, Vector256<float> b, Vector256<float> c) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Acc256(float* row, Vector256<float> lo, Vector256<float> hi, bool store)
    {
        if (!store) { lo += Vector256.Load(row); hi += Vector256.Load(row + 8); }
        Vector256.Store(lo, row);
        Vector256.Store(hi, row + 8);
    }

    /// <summary>F64 GEMM for gradient checks and small problems: C[i,:] += α·A[i,k]·B[k,:] rows, vectorised by
    /// TensorPrimitives. op(B) is first made row-major so every inner update is unit-stride.</summary>
    public static void Dgemm(int m, int n, int k, double alpha, double* a, long lda, bool transA, double* b, long ldb, bool transB, double beta, double* c, long ldc)
    {
        double[]? bt = null;
        if (transB)
        {
            bt = new double[(long)k * n];
            for (int j = 0; j < n; j++) for (int p = 0; p < k; p++) bt[(long)p * n + j] = b[j * ldb + p];
        }
        fixed (double* btp = bt)
        {
            double* bb = transB ? btp : b;
            long ldbb = transB ? n : ldb;
            CpuParallel.For(m, i =>
            {
                var row = new Span<double>(c + i * ldc, n);
                if (beta == 0) row.Clear(); else if (beta != 1) System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
                for (int p = 0; p < k; p++)
                {
                    double av = alpha * (transA ? a[p * lda + i] : a[i * lda + p]);
                    if (av == 0) continue;
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(new ReadOnlySpan<double>(bb + p * ldbb, n), av, row, row);
                }
            });
        }
    }
}
