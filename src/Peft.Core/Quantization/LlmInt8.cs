namespace Peft.Core.Quantization;

/// <summary>
/// LLM.int8's activation side (bitsandbytes' <c>int8_vectorwise_quant</c> with a threshold): elements with
/// |x| ≥ threshold are outliers; their whole feature columns are left to a 16-bit matmul, and every row of the rest is
/// quantized to int8 by its absmax (taken with the outliers set aside). The int8 product with the int8 weight is then
/// rescaled by rowStat·SCB/127². A threshold of 0 disables the decomposition (every column goes through int8).
/// </summary>
public static class LlmInt8
{
    /// <summary>1/127², the factor bitsandbytes applies to the int32 product (its constant 6.200124e-05).</summary>
    public const float ProductScale = 1f / (127f * 127f);

    /// <summary>The int8 codes (as floats: exact integers in [−127, 127], zero in outlier columns when there is more than
    /// one row), each row's absmax and the outlier columns in increasing order.</summary>
    public static (float[] Codes, float[] RowStats, int[] OutlierColumns) QuantizeActivations(ReadOnlySpan<float> x, int rows, int cols, double threshold)
    {
        if (x.Length != (long)rows * cols) throw new ArgumentException($"{x.Length} values do not fill [{rows}, {cols}]");
        var outlier = new bool[cols];
        if (threshold > 0)
            for (int i = 0; i < x.Length; i++)
                if (Math.Abs(x[i]) >= threshold) outlier[i % cols] = true;
        var codes = new float[x.Length];
        var stats = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = x.Slice(r * cols, cols);
            float max = 0;
            foreach (var v in row) if (!(threshold > 0 && Math.Abs(v) >= threshold)) max = Math.Max(max, Math.Abs(v));
            stats[r] = max;
            // An all-zero row has no scale; its codes stay 0 (bitsandbytes would divide by zero here).
            float scale = max == 0 ? 0 : 127f / max;
            for (int j = 0; j < cols; j++)
            {
                float v = row[j];
                if (threshold > 0 && Math.Abs(v) >= threshold) continue;   // the outlier element itself is 0
                if (rows > 1 && outlier[j]) continue;                      // its whole column goes to the 16-bit part
                codes[r * cols + j] = MathF.Round(v * scale, MidpointRounding.ToEven);
            }
        }
        var columns = Enumerable.Range(0, cols).Where(j => outlier[j]).ToArray();
        return (codes, stats, columns);
    }
}
