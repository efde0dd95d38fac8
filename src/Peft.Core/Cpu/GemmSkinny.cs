using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Peft.Core.Cpu;

// Products with one dimension of at most 16 — LoRA's thin factors: x·Aᵀ and dY·B (N = r), t·Bᵀ and dt·A (K = r),
// and its weight gradients xᵀ·dt and dYᵀ·t (N = r, A a transposed view, K = tokens).
// The packed GEMM pads such an N to its 32-wide register tile and packs a multi-megabyte operand to multiply it by a
// 16 × K one, so it ran them at 7-23% of the FMA peak; these loops read the large operand once, in place.
// Each output element is computed by one thread in a fixed order, so results do not depend on the thread count.
internal static unsafe partial class Gemm
{
    /// <summary>The largest thin dimension handled here.</summary>
    private const int Thin = 16;

    /// <summary>Whether thin products take these loops (on by default; the GEMM benchmark turns it off to time the
    /// packed path on the same shapes).</summary>
    internal static bool ThinLoops = true;

    /// <summary>Computes C = op(A)·op(B) (α = 1, β = 0, F32) when N or K is thin and A is row-major; false otherwise.</summary>
    private static bool TryThin(int m, int n, int k, Operand a, Operand b, float* c, long ldc, int threads)
    {
        if (!ThinLoops || !a.IsF32 || !b.IsF32 || m < 8) return false;
        if (n <= Thin && !a.Trans && k >= 32) { ThinN(m, n, k, a, b, c, ldc, threads); return true; }
        if (n <= Thin && a.Trans && k >= 32 && m >= 16) { ThinNTransposedA(m, n, k, a, b, c, ldc, threads); return true; }
        if (k <= Thin && n >= 32) { ThinK(m, n, k, a, b, c, ldc, threads); return true; }
        return false;
    }

    /// <summary>op(B) [K, N] as rows of contiguous floats: its N columns as rows ([N, K], <paramref name="columns"/>) or
    /// its K rows ([K, N]). Read in place when B is stored that way (Wᵀ views are [N, K] already), else copied into a
    /// pinned array (at most 16 × K or K × 16 floats here) that the caller keeps alive while it reads.</summary>
    private static float* RowsOf(Operand b, int k, int n, bool columns, out long ld, out float[]? copy)
    {
        copy = null;
        if (b.Trans == columns) { ld = b.Ld; return (float*)b.Ptr; }
        copy = GC.AllocateUninitializedArray<float>(k * n, pinned: true);
        float* src = (float*)b.Ptr;
        fixed (float* dst = copy)
        {
            // op(B)[p, j] is src[j·ld + p] when B is a transposed view, src[p·ld + j] otherwise.
            if (columns) for (int p = 0; p < k; p++) for (int j = 0; j < n; j++) dst[(long)j * k + p] = src[p * b.Ld + j];
            else for (int j = 0; j < n; j++) for (int p = 0; p < k; p++) dst[(long)p * n + j] = src[j * b.Ld + p];
        }
        ld = columns ? k : n;
        return (float*)Unsafe.AsPointer(ref copy[0]);
    }

    /// <summary>Runs <paramref name="body"/> on the row blocks [t·rowsPerTask, (t + 1)·rowsPerTask) — the same blocks
    /// whatever the thread count (a body may size buffers by the block; results must not depend on threads) — in
    /// parallel when there are threads to use.</summary>
    private static void ForRowBlocks(int m, int rowsPerTask, int threads, Action<int, int> body)
    {
        int tasks = (m + rowsPerTask - 1) / rowsPerTask;
        if (threads == 1 || tasks == 1)
        {
            for (int t = 0; t < tasks; t++) body(t * rowsPerTask, Math.Min(m, (t + 1) * rowsPerTask));
            return;
        }
        CpuParallel.For(tasks, t => body(t * rowsPerTask, Math.Min(m, (t + 1) * rowsPerTask)));
    }

    /// <summary>
    /// N ≤ 16: C[i, j] = A[i, :]·B(:, j) as dot products along K. B is brought to [N, K] rows (a copy of N·K floats
    /// unless it is a transposed view already, as Wᵀ is), then 4 × 4 blocks of dots share their loads: 8 vector loads
    /// per 16 FMAs.
    /// </summary>
    private static void ThinN(int m, int n, int k, Operand a, Operand b, float* c, long ldc, int threads)
    {
        float* rows = RowsOf(b, k, n, columns: true, out long ldr, out var copy);
        float* pa = (float*)a.Ptr;
        long lda = a.Ld;
        ForRowBlocks(m, Math.Max(4, 32768 / Math.Max(k, 1) / 4 * 4), threads, (r0, r1) =>
        {
            for (int i = r0; i < r1; i += 4)
                for (int j = 0; j < n; j += 4)
                    Dot4x4(pa, lda, i, Math.Min(4, r1 - i), rows, ldr, j, Math.Min(4, n - j), k, c, ldc);
        });
        GC.KeepAlive(copy);
    }

    /// <summary>A 4 × 4 block of dot products of length K; rows or columns past the edge repeat the last valid one
    /// (their results are not stored).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x4(float* a, long lda, int i, int mi, float* b, long ldb, int j, int nj, int k, float* c, long ldc)
    {
        float* a0 = a + i * lda, a1 = a + (i + Math.Min(1, mi - 1)) * lda, a2 = a + (i + Math.Min(2, mi - 1)) * lda, a3 = a + (i + Math.Min(3, mi - 1)) * lda;
        float* b0 = b + j * ldb, b1 = b + (j + Math.Min(1, nj - 1)) * ldb, b2 = b + (j + Math.Min(2, nj - 1)) * ldb, b3 = b + (j + Math.Min(3, nj - 1)) * ldb;
        Vector256<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default;
        Vector256<float> c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var y0 = Vector256.Load(b0 + p); var y1 = Vector256.Load(b1 + p); var y2 = Vector256.Load(b2 + p); var y3 = Vector256.Load(b3 + p);
            var x = Vector256.Load(a0 + p);
            c00 = Fmadd(x, y0, c00); c01 = Fmadd(x, y1, c01); c02 = Fmadd(x, y2, c02); c03 = Fmadd(x, y3, c03);
            x = Vector256.Load(a1 + p);
            c10 = Fmadd(x, y0, c10); c11 = Fmadd(x, y1, c11); c12 = Fmadd(x, y2, c12); c13 = Fmadd(x, y3, c13);
            x = Vector256.Load(a2 + p);
            c20 = Fmadd(x, y0, c20); c21 = Fmadd(x, y1, c21); c22 = Fmadd(x, y2, c22); c23 = Fmadd(x, y3, c23);
            x = Vector256.Load(a3 + p);
            c30 = Fmadd(x, y0, c30); c31 = Fmadd(x, y1, c31); c32 = Fmadd(x, y2, c32); c33 = Fmadd(x, y3, c33);
        }
        float* acc = stackalloc float[16];
        acc[0] = Vector256.Sum(c00); acc[1] = Vector256.Sum(c01); acc[2] = Vector256.Sum(c02); acc[3] = Vector256.Sum(c03);
        acc[4] = Vector256.Sum(c10); acc[5] = Vector256.Sum(c11); acc[6] = Vector256.Sum(c12); acc[7] = Vector256.Sum(c13);
        acc[8] = Vector256.Sum(c20); acc[9] = Vector256.Sum(c21); acc[10] = Vector256.Sum(c22); acc[11] = Vector256.Sum(c23);
        acc[12] = Vector256.Sum(c30); acc[13] = Vector256.Sum(c31); acc[14] = Vector256.Sum(c32); acc[15] = Vector256.Sum(c33);
        float** ar = stackalloc float*[4];
        float** br = stackalloc float*[4];
        ar[0] = a0; ar[1] = a1; ar[2] = a2; ar[3] = a3;
        br[0] = b0; br[1] = b1; br[2] = b2; br[3] = b3;
        for (int r = 0; r < mi; r++)
            for (int q = 0; q < nj; q++)
            {
                float s = acc[r * 4 + q];
                for (int t = p; t < k; t++) s += ar[r][t] * br[q][t];
                c[(i + r) * ldc + j + q] = s;
            }
    }

    /// <summary>
    /// N ≤ 16 with A a transposed view (A = Sᵀ, S row-major [K, M]: a weight gradient xᵀ·dt): C[i, j] = Σ_p S[p, i]·B[p, j]
    /// as rank-1 updates along K. A 16-row block of C's column chunk (two vectors × up to 8 columns: 16 accumulators)
    /// reads one 64-byte line of S and 8 broadcasts of B per step of K. B is brought to [K, N] rows when it is a
    /// transposed view.
    /// </summary>
    private static void ThinNTransposedA(int m, int n, int k, Operand a, Operand b, float* c, long ldc, int threads)
    {
        float* rows = RowsOf(b, k, n, columns: false, out long ldr, out var copy);
        float* ps = (float*)a.Ptr;
        long lds = a.Ld;
        // Tasks own 64-row blocks of C (fixed by the shape), so each element has one writer. K is walked in chunks of
        // 256 rows of S: a chunk's lines (the task's 64 columns of 256 rows) stay in L2 and within the TLB's reach
        // while every row block and column chunk of the task consumes them, instead of each 16-row block striding
        // through all of S (measured 2.3 GB/s that way).
        const int rowsPerTask = 64, chunk = 256;
        ForRowBlocks(m, rowsPerTask, threads, (r0, r1) =>
        {
            int blocks = (r1 - r0 + 15) / 16, chunks = (n + 7) / 8;
            float* tiles = stackalloc float[rowsPerTask / 16 * ((Thin + 7) / 8) * 128];
            new Span<float>(tiles, blocks * chunks * 128).Clear();
            for (int p0 = 0; p0 < k; p0 += chunk)
            {
                int kc = Math.Min(chunk, k - p0);
                for (int bi = 0; bi < blocks; bi++)
                {
                    int i = r0 + bi * 16, mi = Math.Min(16, r1 - i);
                    for (int cj = 0; cj < chunks; cj++)
                    {
                        int j = cj * 8, nj = Math.Min(8, n - j);
                        float* tile = tiles + (bi * chunks + cj) * 128;
                        if (mi == 16) Outer16x8(ps + p0 * lds + i, lds, rows + p0 * ldr + j, ldr, nj, kc, tile);
                        else OuterScalar(ps + p0 * lds + i, lds, mi, rows + p0 * ldr + j, ldr, nj, kc, tile);
                    }
                }
            }
            for (int bi = 0; bi < blocks; bi++)
                for (int cj = 0; cj < chunks; cj++)
                {
                    int i = r0 + bi * 16, mi = Math.Min(16, r1 - i), j = cj * 8, nj = Math.Min(8, n - j);
                    float* tile = tiles + (bi * chunks + cj) * 128;
                    for (int r = 0; r < mi; r++)
                        for (int q = 0; q < nj; q++) c[(i + r) * ldc + j + q] = tile[q * 16 + r];
                }
        });
        GC.KeepAlive(copy);
    }

    /// <summary>tile[q·16 + r] += Σ_p s[p·lds + r]·b[p·ldb + q] for r &lt; 16, q &lt; nj ≤ 8 (missing columns repeat the
    /// last one and are not read back).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Outer16x8(float* s, long lds, float* b, long ldb, int nj, int k, float* tile)
    {
        Vector256<float> l0 = Vector256.Load(tile), h0 = Vector256.Load(tile + 8), l1 = Vector256.Load(tile + 16), h1 = Vector256.Load(tile + 24);
        Vector256<float> l2 = Vector256.Load(tile + 32), h2 = Vector256.Load(tile + 40), l3 = Vector256.Load(tile + 48), h3 = Vector256.Load(tile + 56);
        Vector256<float> l4 = Vector256.Load(tile + 64), h4 = Vector256.Load(tile + 72), l5 = Vector256.Load(tile + 80), h5 = Vector256.Load(tile + 88);
        Vector256<float> l6 = Vector256.Load(tile + 96), h6 = Vector256.Load(tile + 104), l7 = Vector256.Load(tile + 112), h7 = Vector256.Load(tile + 120);
        int q1 = Math.Min(1, nj - 1), q2 = Math.Min(2, nj - 1), q3 = Math.Min(3, nj - 1), q4 = Math.Min(4, nj - 1), q5 = Math.Min(5, nj - 1), q6 = Math.Min(6, nj - 1), q7 = Math.Min(7, nj - 1);
        for (int p = 0; p < k; p++)
        {
            float* srow = s + p * lds;
            float* brow = b + p * ldb;
            var lo = Vector256.Load(srow);
            var hi = Vector256.Load(srow + 8);
            var w = Vector256.Create(brow[0]); l0 = Fmadd(lo, w, l0); h0 = Fmadd(hi, w, h0);
            w = Vector256.Create(brow[q1]); l1 = Fmadd(lo, w, l1); h1 = Fmadd(hi, w, h1);
            w = Vector256.Create(brow[q2]); l2 = Fmadd(lo, w, l2); h2 = Fmadd(hi, w, h2);
            w = Vector256.Create(brow[q3]); l3 = Fmadd(lo, w, l3); h3 = Fmadd(hi, w, h3);
            w = Vector256.Create(brow[q4]); l4 = Fmadd(lo, w, l4); h4 = Fmadd(hi, w, h4);
            w = Vector256.Create(brow[q5]); l5 = Fmadd(lo, w, l5); h5 = Fmadd(hi, w, h5);
            w = Vector256.Create(brow[q6]); l6 = Fmadd(lo, w, l6); h6 = Fmadd(hi, w, h6);
            w = Vector256.Create(brow[q7]); l7 = Fmadd(lo, w, l7); h7 = Fmadd(hi, w, h7);
        }
        Vector256.Store(l0, tile); Vector256.Store(h0, tile + 8); Vector256.Store(l1, tile + 16); Vector256.Store(h1, tile + 24);
        Vector256.Store(l2, tile + 32); Vector256.Store(h2, tile + 40); Vector256.Store(l3, tile + 48); Vector256.Store(h3, tile + 56);
        Vector256.Store(l4, tile + 64); Vector256.Store(h4, tile + 72); Vector256.Store(l5, tile + 80); Vector256.Store(h5, tile + 88);
        Vector256.Store(l6, tile + 96); Vector256.Store(h6, tile + 104); Vector256.Store(l7, tile + 112); Vector256.Store(h7, tile + 120);
    }

    /// <summary>The ragged last row block of <see cref="ThinNTransposedA"/> (fewer than 16 rows), element by element,
    /// accumulated like <see cref="Outer16x8"/>.</summary>
    private static void OuterScalar(float* s, long lds, int mi, float* b, long ldb, int nj, int k, float* tile)
    {
        for (int q = 0; q < nj; q++)
            for (int r = 0; r < mi; r++)
            {
                float sum = tile[q * 16 + r];
                for (int p = 0; p < k; p++) sum += s[p * lds + r] * b[p * ldb + q];
                tile[q * 16 + r] = sum;
            }
    }

    /// <summary>
    /// K ≤ 16: C[i, :] = Σ_p A[i, p]·B(p, :) as K broadcast multiply-adds per 32 outputs. B is brought to [K, N] rows
    /// (a copy of K·N floats unless it is row-major already); A may be a transposed view (its K values per row are
    /// gathered once).
    /// </summary>
    private static void ThinK(int m, int n, int k, Operand a, Operand b, float* c, long ldc, int threads)
    {
        float* rows = RowsOf(b, k, n, columns: false, out long ldr, out var copy);
        float* pa = (float*)a.Ptr;
        long lda = a.Ld;
        bool aTrans = a.Trans;
        ForRowBlocks(m, Math.Max(2, 65536 / Math.Max(n, 1) / 2 * 2), threads, (r0, r1) =>
        {
            float* coef = stackalloc float[2 * Thin];
            for (int i = r0; i < r1; i += 2)
            {
                bool pair = i + 1 < r1;
                for (int p = 0; p < k; p++)
                {
                    coef[p] = aTrans ? pa[p * lda + i] : pa[i * lda + p];
                    if (pair) coef[Thin + p] = aTrans ? pa[p * lda + i + 1] : pa[(i + 1) * lda + p];
                }
                if (pair) ExpandRows2(coef, coef + Thin, k, rows, ldr, n, c + i * ldc, c + (i + 1) * ldc);
                else ExpandRow(coef, k, rows, ldr, n, c + i * ldc);
            }
        });
        GC.KeepAlive(copy);
    }

    /// <summary>Two rows of <see cref="ExpandRow"/> at once: each loaded B vector feeds both (6 loads per 8 FMAs).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ExpandRows2(float* coef0, float* coef1, int k, float* b, long ldb, int n, float* out0, float* out1)
    {
        int o = 0;
        for (; o + 32 <= n; o += 32)
        {
            Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default, t0 = default, t1 = default, t2 = default, t3 = default;
            for (int p = 0; p < k; p++)
            {
                var w = Vector256.Create(coef0[p]);
                var v = Vector256.Create(coef1[p]);
                float* row = b + p * ldb + o;
                var b0 = Vector256.Load(row); var b1 = Vector256.Load(row + 8); var b2 = Vector256.Load(row + 16); var b3 = Vector256.Load(row + 24);
                s0 = Fmadd(w, b0, s0); s1 = Fmadd(w, b1, s1); s2 = Fmadd(w, b2, s2); s3 = Fmadd(w, b3, s3);
                t0 = Fmadd(v, b0, t0); t1 = Fmadd(v, b1, t1); t2 = Fmadd(v, b2, t2); t3 = Fmadd(v, b3, t3);
            }
            Vector256.Store(s0, out0 + o); Vector256.Store(s1, out0 + o + 8); Vector256.Store(s2, out0 + o + 16); Vector256.Store(s3, out0 + o + 24);
            Vector256.Store(t0, out1 + o); Vector256.Store(t1, out1 + o + 8); Vector256.Store(t2, out1 + o + 16); Vector256.Store(t3, out1 + o + 24);
        }
        if (o < n)
        {
            // The ragged end (fewer than 32 outputs): the one-row loop, which gives the same sums element for element.
            ExpandTail(coef0, k, b, ldb, o, n, out0);
            ExpandTail(coef1, k, b, ldb, o, n, out1);
        }
    }

    /// <summary>out[0..n) = Σ_p coef[p]·B[p, 0..n), 32 outputs at a time in four accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ExpandRow(float* coef, int k, float* b, long ldb, int n, float* output)
    {
        int o = 0;
        for (; o + 32 <= n; o += 32)
        {
            Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
            for (int p = 0; p < k; p++)
            {
                var w = Vector256.Create(coef[p]);
                float* row = b + p * ldb + o;
                s0 = Fmadd(w, Vector256.Load(row), s0); s1 = Fmadd(w, Vector256.Load(row + 8), s1);
                s2 = Fmadd(w, Vector256.Load(row + 16), s2); s3 = Fmadd(w, Vector256.Load(row + 24), s3);
            }
            Vector256.Store(s0, output + o); Vector256.Store(s1, output + o + 8);
            Vector256.Store(s2, output + o + 16); Vector256.Store(s3, output + o + 24);
        }
        ExpandTail(coef, k, b, ldb, o, n, output);
    }

    /// <summary>Outputs [o, n) of <see cref="ExpandRow"/>: 8 at a time, then one by one.</summary>
    private static void ExpandTail(float* coef, int k, float* b, long ldb, int o, int n, float* output)
    {
        for (; o + 8 <= n; o += 8)
        {
            Vector256<float> s = default;
            for (int p = 0; p < k; p++) s = Fmadd(Vector256.Create(coef[p]), Vector256.Load(b + p * ldb + o), s);
            Vector256.Store(s, output + o);
        }
        for (; o < n; o++)
        {
            float s = 0;
            for (int p = 0; p < k; p++) s += coef[p] * b[p * ldb + o];
            output[o] = s;
        }
    }
}
