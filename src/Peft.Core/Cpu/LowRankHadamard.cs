using System.Numerics;
using System.Runtime.CompilerServices;

namespace Peft.Core.Cpu;

/// <summary>
/// LoHa's weight delta without its two rank-r products stored: ΔW[i, j] = s·P1[i, j]·P2[i, j] with
/// P1 = A1·B1 and P2 = A2·B2 (A [M, R], B [R, N], all dense), and its backward's element-wise part
/// G1 = s·g ⊙ P2, G2 = s·g ⊙ P1 (the factor gradients are then GEMMs of G1 and G2). P1 and P2 are accumulated
/// over k = 0 … R−1 in that order, with fused multiply-adds in F32 — the contract kernels/lycoris.cu keeps.
/// F32 runs a register-blocked SIMD loop (four vectors of columns, both products, in eight accumulators); F64 (the
/// gradient checks) a scalar one. Rows are split over threads.
/// </summary>
internal static unsafe class LowRankHadamard
{
    /// <summary>output = s·(a1·b1) ⊙ (a2·b2).</summary>
    public static void Forward(float* a1, float* b1, float* a2, float* b2, float* output, int m, int n, int r, float scale) =>
        Rows(m, n, r, i => RowF32(a1 + (long)i * r, b1, a2 + (long)i * r, b2, null, output + (long)i * n, null, n, r, scale));

    /// <summary>g1 = s·g ⊙ (a2·b2) and g2 = s·g ⊙ (a1·b1); either output may be null (not wanted).</summary>
    public static void Backward(float* g, float* a1, float* b1, float* a2, float* b2, float* g1, float* g2, int m, int n, int r, float scale) =>
        Rows(m, n, r, i => RowF32(a1 + (long)i * r, b1, a2 + (long)i * r, b2, g + (long)i * n,
            g1 == null ? null : g1 + (long)i * n, g2 == null ? null : g2 + (long)i * n, n, r, scale));

    /// <inheritdoc cref="Forward(float*, float*, float*, float*, float*, int, int, int, float)"/>
    public static void Forward(double* a1, double* b1, double* a2, double* b2, double* output, int m, int n, int r, double scale) =>
        Rows(m, n, r, i =>
        {
            for (int j = 0; j < n; j++)
            {
                var (p1, p2) = Products(a1 + (long)i * r, b1, a2 + (long)i * r, b2, j, n, r);
                output[(long)i * n + j] = scale * p1 * p2;
            }
        });

    /// <inheritdoc cref="Backward(float*, float*, float*, float*, float*, float*, float*, int, int, int, float)"/>
    public static void Backward(double* g, double* a1, double* b1, double* a2, double* b2, double* g1, double* g2, int m, int n, int r, double scale) =>
        Rows(m, n, r, i =>
        {
            for (int j = 0; j < n; j++)
            {
                var (p1, p2) = Products(a1 + (long)i * r, b1, a2 + (long)i * r, b2, j, n, r);
                long at = (long)i * n + j;
                if (g1 != null) g1[at] = scale * g[at] * p2;
                if (g2 != null) g2[at] = scale * g[at] * p1;
            }
        });

    private static (double P1, double P2) Products(double* a1Row, double* b1, double* a2Row, double* b2, int j, int n, int r)
    {
        double p1 = 0, p2 = 0;
        for (int k = 0; k < r; k++)
        {
            p1 += a1Row[k] * b1[(long)k * n + j];
            p2 += a2Row[k] * b2[(long)k * n + j];
        }
        return (p1, p2);
    }

    /// <summary>Runs <paramref name="row"/> for every row, rows split over threads when the work pays for them.</summary>
    private static void Rows(int m, int n, int r, Action<int> row)
    {
        long work = (long)m * n * Math.Max(r, 1);
        if (work < 1 << 18 || m == 1) { for (int i = 0; i < m; i++) row(i); return; }
        int chunk = Math.Max(1, m / (CpuParallel.Threads * 4));
        CpuParallel.For((m + chunk - 1) / chunk, c =>
        {
            for (int i = c * chunk, end = Math.Min(m, i + chunk); i < end; i++) row(i);
        });
    }

    /// <summary>One row. Forward (g null): out = s·p1·p2. Backward: g1 = s·g·p2, g2 = s·g·p1 (null ones skipped).</summary>
    // Fully optimised from the first call: at tier 0 the SIMD loop ran 8× slower, and a training step's few hundred
    // calls finish before tiering promotes it.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowF32(float* a1Row, float* b1, float* a2Row, float* b2, float* g, float* out1, float* out2, int n, int r, float scale)
    {
        int w = Vector<float>.Count, j = 0;
        var s = new Vector<float>(scale);
        for (; j + 4 * w <= n; j += 4 * w)
        {
            Vector<float> p10 = default, p11 = default, p12 = default, p13 = default;
            Vector<float> p20 = default, p21 = default, p22 = default, p23 = default;
            for (int k = 0; k < r; k++)
            {
                float* x1 = b1 + (long)k * n + j, x2 = b2 + (long)k * n + j;
                var c1 = new Vector<float>(a1Row[k]);
                var c2 = new Vector<float>(a2Row[k]);
                p10 = Vector.FusedMultiplyAdd(c1, Vector.Load(x1), p10);
                p11 = Vector.FusedMultiplyAdd(c1, Vector.Load(x1 + w), p11);
                p12 = Vector.FusedMultiplyAdd(c1, Vector.Load(x1 + 2 * w), p12);
                p13 = Vector.FusedMultiplyAdd(c1, Vector.Load(x1 + 3 * w), p13);
                p20 = Vector.FusedMultiplyAdd(c2, Vector.Load(x2), p20);
                p21 = Vector.FusedMultiplyAdd(c2, Vector.Load(x2 + w), p21);
                p22 = Vector.FusedMultiplyAdd(c2, Vector.Load(x2 + 2 * w), p22);
                p23 = Vector.FusedMultiplyAdd(c2, Vector.Load(x2 + 3 * w), p23);
            }
            Emit(j, p10, p20); Emit(j + w, p11, p21); Emit(j + 2 * w, p12, p22); Emit(j + 3 * w, p13, p23);
        }
        for (; j < n; j++)
        {
            float p1 = 0, p2 = 0;
            for (int k = 0; k < r; k++)
            {
                p1 = MathF.FusedMultiplyAdd(a1Row[k], b1[(long)k * n + j], p1);
                p2 = MathF.FusedMultiplyAdd(a2Row[k], b2[(long)k * n + j], p2);
            }
            if (g == null) out1[j] = scale * p1 * p2;
            else
            {
                if (out1 != null) out1[j] = scale * g[j] * p2;
                if (out2 != null) out2[j] = scale * g[j] * p1;
            }
        }

        // The same rounding order as the scalar tail: (s·p1)·p2 forward, (s·g)·p backward.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        void Emit(int at, Vector<float> p1, Vector<float> p2)
        {
            if (g == null) { Vector.Store(s * p1 * p2, out1 + at); return; }
            var sg = s * Vector.Load(g + at);
            if (out1 != null) Vector.Store(sg * p2, out1 + at);
            if (out2 != null) Vector.Store(sg * p1, out2 + at);
        }
    }
}
