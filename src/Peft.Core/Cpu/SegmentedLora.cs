namespace Peft.Core.Cpu;

/// <summary>
/// A mixed-adapter LoRA batch in one pass (the SGMV contract of kernels/sgmv.cu): every row r with an adapter
/// a = rowAdapter[r] ≥ 0 gets y[r, :] += s_a · (x[r, :]·A_aᵀ)·B_aᵀ, with A_a [r_a, K] and B_a [C, r_a] dense F32; rows
/// with −1 keep the base output. t = x·Aᵀ is accumulated over k in order and rounded to F32, then each output adds
/// s·Σ_j t_j·B[c, j] (j in order) once, as the kernels do (their sums run in another order: tolerance-equal, not bitwise).
/// </summary>
internal static unsafe class SegmentedLora
{
    public static void Apply(float* y, float* x, int rows, int k, int c, int[] rowAdapter, float*[] a, float*[] b, int[] ranks, float[] scales)
    {
        int maxRank = ranks.Length == 0 ? 0 : ranks.Max();
        Parallel.For(0, rows, () => new float[Math.Max(maxRank, 1)], (row, _, t) =>
        {
            int adapter = rowAdapter[row];
            if (adapter < 0) return t;
            int r = ranks[adapter];
            float* xr = x + (long)row * k, ar = a[adapter], br = b[adapter];
            for (int j = 0; j < r; j++)
            {
                float acc = 0;
                float* aj = ar + (long)j * k;
                for (int p = 0; p < k; p++) acc = MathF.FusedMultiplyAdd(xr[p], aj[p], acc);
                t[j] = acc;
            }
            float s = scales[adapter];
            float* yr = y + (long)row * c;
            for (int col = 0; col < c; col++)
            {
                float acc = 0;
                float* bc = br + (long)col * r;
                for (int j = 0; j < r; j++) acc = MathF.FusedMultiplyAdd(t[j], bc[j], acc);
                yr[col] += s * acc;
            }
            return t;
        }, _ => { });
    }
}
