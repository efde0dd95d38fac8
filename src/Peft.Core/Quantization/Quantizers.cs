namespace Peft.Core.Quantization;

/// <summary>
/// LLM.int8 weight quantization, row-wise absmax: SCB[i] = max_j |W[i, j]|, q = round(127·W/SCB) ∈ [−127, 127],
/// W ≈ q·SCB/127 (bitsandbytes' Int8Params layout: int8 [out, in] + float SCB [out]). The CPU reference of the
/// dequant_int8_rowwise_* kernels.
/// </summary>
public static class Int8RowWise
{
    /// <summary>Quantizes a row-major [rows, cols] matrix.</summary>
    public static (sbyte[] Q, float[] Scb) Quantize(ReadOnlySpan<float> w, int rows, int cols)
    {
        if (w.Length != rows * cols) throw new ArgumentException($"{w.Length} values do not fill [{rows}, {cols}]");
        var q = new sbyte[w.Length];
        var scb = new float[rows];
        for (int i = 0; i < rows; i++)
        {
            var row = w.Slice(i * cols, cols);
            float max = 0;
            foreach (var v in row) max = Math.Max(max, Math.Abs(v));
            scb[i] = max;
            float scale = max == 0 ? 0 : 127f / max;
            for (int j = 0; j < cols; j++) q[i * cols + j] = (sbyte)Math.Clamp(MathF.Round(row[j] * scale, MidpointRounding.ToEven), -127, 127);
        }
        return (q, scb);
    }

    /// <summary>W ≈ q·SCB/127.</summary>
    public static float[] Dequantize(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scb, int rows, int cols)
    {
        var w = new float[rows * cols];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) w[i * cols + j] = q[i * cols + j] * (scb[i] / 127f);
        return w;
    }
}

/// <summary>
/// QLoRA's NF4: blocks of 64 values, each scaled by its absmax and mapped to the nearest of 16 normal-distribution
/// quantiles; two codes per byte, the first element of a pair in the high nibble (bitsandbytes' packing). The CPU
/// reference of the dequant_nf4_* kernels. Double quantization of the absmax values: <see cref="DoubleQuantizedAbsmax"/>.
/// </summary>
public static class Nf4
{
    /// <summary>Values per absmax block.</summary>
    public const int BlockSize = 64;

    /// <summary>The 16 NF4 levels (bitsandbytes' table).</summary>
    public static readonly float[] Levels =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
        0.7229568362236023f, 1.0f,
    ];

    /// <summary>The code of the level nearest to <paramref name="x"/> ∈ [−1, 1] (ties go to the lower level).</summary>
    public static byte Code(float x)
    {
        int best = 0;
        for (int k = 1; k < 16; k++) if (Math.Abs(x - Levels[k]) < Math.Abs(x - Levels[best])) best = k;
        return (byte)best;
    }

    /// <summary>Quantizes <paramref name="w"/> (any length; the last block may be partial).</summary>
    public static (byte[] Packed, float[] Absmax) Quantize(ReadOnlySpan<float> w)
    {
        int blocks = (w.Length + BlockSize - 1) / BlockSize;
        var absmax = new float[blocks];
        var packed = new byte[(w.Length + 1) / 2];
        for (int b = 0; b < blocks; b++)
        {
            int start = b * BlockSize, end = Math.Min(w.Length, start + BlockSize);
            float max = 0;
            for (int i = start; i < end; i++) max = Math.Max(max, Math.Abs(w[i]));
            absmax[b] = max;
            for (int i = start; i < end; i++)
            {
                byte code = Code(max == 0 ? 0 : w[i] / max);
                packed[i / 2] |= (byte)(i % 2 == 0 ? code << 4 : code);
            }
        }
        return (packed, absmax);
    }

    /// <summary>w[i] = Levels[code(i)]·absmax[i / 64].</summary>
    public static float[] Dequantize(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, int count)
    {
        var w = new float[count];
        for (int i = 0; i < count; i++)
        {
            int code = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 0xF;
            w[i] = Levels[code] * absmax[i / BlockSize];
        }
        return w;
    }
}
