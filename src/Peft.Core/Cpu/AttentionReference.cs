namespace Peft.Core.Cpu;

/// <summary>
/// The contract of the fused attention kernels (kernels/attention.cu), written as plain loops in double precision:
/// for head bh = b·H + h and query i, s_ij = scale·q_i·k_j with keys hidden where mask[b, j] == 0 or (causal)
/// j &gt; i + offset; o_i = Σ softmax(s_i)_j v_j, lse_i = log Σ_j exp s_ij (−∞ and o_i = 0 for a fully masked row); the
/// backward from lse: p = exp(s − lse), ds = p·(do·v − do·o), dq = scale Σ ds k, dk = scale Σ ds q, dv = Σ p do. Dense
/// row-major q/o [BH, Tq, D], k/v [BH, Tk, D], mask [B, Tk] or null. The reference the device paths are tested against.
/// With dropout on the probabilities, pair (i, j) is kept with factor <see cref="AttentionDropout.Keep"/> (the mask the
/// composite's Dropout would draw over [B, H, Tq, Tk]): o_i = Σ p_ij·keep_ij·v_j, ds = p·(keep·do·v − do·o), dv = Σ p·keep·do.
/// </summary>
internal static class AttentionReference
{
    public static (float[] O, float[] Lse) Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<byte> mask,
        int bh, int heads, int tq, int tk, int d, bool causal, long offset, double scale, AttentionDropout? dropout = null)
    {
        var o = new float[(long)bh * tq * d];
        var lse = new float[(long)bh * tq];
        var s = new double[tk];
        for (int h = 0; h < bh; h++)
            for (int i = 0; i < tq; i++)
            {
                double max = double.NegativeInfinity;
                for (int j = 0; j < tk; j++)
                {
                    s[j] = Visible(mask, h / heads, tk, j, causal, i, offset) ? scale * Dot(q, ((long)h * tq + i) * d, k, ((long)h * tk + j) * d, d) : double.NegativeInfinity;
                    max = Math.Max(max, s[j]);
                }
                long row = (long)h * tq + i;
                if (double.IsNegativeInfinity(max)) { lse[row] = float.NegativeInfinity; continue; }
                double sum = 0;
                for (int j = 0; j < tk; j++) sum += Math.Exp(s[j] - max);
                for (int j = 0; j < tk; j++)
                {
                    double p = Math.Exp(s[j] - max) / sum;
                    if (dropout is { } drop) p *= drop.Keep(h, i, j, tq, tk);
                    if (p == 0) continue;
                    for (int c = 0; c < d; c++) o[row * d + c] += (float)(p * v[(int)(((long)h * tk + j) * d + c)]);
                }
                lse[row] = (float)(max + Math.Log(sum));
            }
        return (o, lse);
    }

    public static (float[] Dq, float[] Dk, float[] Dv) Backward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> o,
        ReadOnlySpan<float> g, ReadOnlySpan<float> lse, ReadOnlySpan<byte> mask, int bh, int heads, int tq, int tk, int d, bool causal, long offset, double scale,
        AttentionDropout? dropout = null)
    {
        var dq = new double[(long)bh * tq * d];
        var dk = new double[(long)bh * tk * d];
        var dv = new double[(long)bh * tk * d];
        for (int h = 0; h < bh; h++)
            for (int i = 0; i < tq; i++)
            {
                long row = (long)h * tq + i;
                if (float.IsNegativeInfinity(lse[(int)row])) continue;
                double delta = Dot(g, row * d, o, row * d, d);
                for (int j = 0; j < tk; j++)
                {
                    if (!Visible(mask, h / heads, tk, j, causal, i, offset)) continue;
                    long key = (long)h * tk + j;
                    double p = Math.Exp(scale * Dot(q, row * d, k, key * d, d) - lse[(int)row]);
                    double keep = dropout is { } drop ? drop.Keep(h, i, j, tq, tk) : 1;
                    double ds = p * (keep * Dot(g, row * d, v, key * d, d) - delta);
                    p *= keep;
                    for (int c = 0; c < d; c++)
                    {
                        dq[row * d + c] += scale * ds * k[(int)(key * d + c)];
                        dk[key * d + c] += scale * ds * q[(int)(row * d + c)];
                        dv[key * d + c] += p * g[(int)(row * d + c)];
                    }
                }
            }
        return (Floats(dq), Floats(dk), Floats(dv));
    }

    private static bool Visible(ReadOnlySpan<byte> mask, int b, int tk, int j, bool causal, int i, long offset) =>
        (mask.IsEmpty || mask[b * tk + j] != 0) && (!causal || j <= i + offset);

    private static double Dot(ReadOnlySpan<float> a, long ia, ReadOnlySpan<float> b, long ib, int d)
    {
        double s = 0;
        for (int c = 0; c < d; c++) s += (double)a[(int)(ia + c)] * b[(int)(ib + c)];
        return s;
    }

    private static float[] Floats(double[] x) => Array.ConvertAll(x, v => (float)v);
}

/// <summary>
/// Dropout on the attention probabilities inside the fused kernels, drawing exactly the mask the composite's
/// <see cref="Tensor.Dropout"/> draws over the [B, H, Tq, Tk] probabilities: element (bh, i, j) is element
/// (bh·Tq + i)·Tk + j of the Philox stream keyed (<paramref name="Key0"/>, <paramref name="Key1"/>) from counter
/// <paramref name="First"/> (four elements per counter), kept with factor 1/(1−p) in F32 where its draw is ≥ p.
/// </summary>
internal readonly record struct AttentionDropout(double P, uint Key0, uint Key1, long First)
{
    /// <summary>The mask value of pair (i, j) of head <paramref name="bh"/>: 1/(1−p) as F32, or 0.</summary>
    public float Keep(long bh, long i, long j, long tq, long tk)
    {
        long index = (bh * tq + i) * tk + j, counter = First + index / 4;
        var (a, b, c, d) = Random.Philox.Block((uint)counter, (uint)((ulong)counter >> 32), 0, 0, Key0, Key1);
        uint word = (index % 4) switch { 0 => a, 1 => b, 2 => c, _ => d };
        return Random.Philox.ToUnitFloat(word) >= P ? (float)(1.0 / (1.0 - P)) : 0f;
    }
}
