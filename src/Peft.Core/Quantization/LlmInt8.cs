using Peft.Core.Cpu;

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

    /// <summary>
    /// The same decomposition of an F32 [rows, cols] tensor on its own device (no gradient): the codes (F32 holding
    /// the integers), each row's absmax and the outlier columns (read back to the host: their count decides the shape
    /// of the 16-bit part). Equals the array version element for element (the threshold compares in F32, exact for
    /// transformers' 6.0).
    /// </summary>
    public static (Tensor Codes, Tensor RowStats, int[] OutlierColumns) QuantizeActivations(Tensor x, double threshold)
    {
        if (x.Rank != 2 || x.DType != DType.F32) throw new ArgumentException($"LlmInt8.QuantizeActivations: x must be an F32 [rows, cols] tensor, got {x.DType} {Shapes.Format(x.Shape)}");
        using var _ = Autograd.NoGrad();
        int rows = x.Size(0), cols = x.Size(1);
        using var zero = x.ScalarLike(0);
        using var a = x.Abs();
        int[] columns = [];
        Tensor? drop = null;        // U8: the codes zeroed (outlier elements, and with more than one row their columns)
        Tensor? inliers = null;     // |x| with the outlier elements set aside, for the row absmax
        try
        {
            if (threshold > 0)
            {
                using var t = x.ScalarLike(threshold);
                using var gt = Tensor.BinaryKernel(BinaryOp.Greater, a, t);
                using var eq = Tensor.BinaryKernel(BinaryOp.Equal, a, t);
                using var isOutlier = gt.Add(eq);                                   // 1 where |x| ≥ threshold
                using var columnHas = isOutlier.Max(0, keepDim: true);              // [1, cols]
                var flags = columnHas.ToArray<float>();
                columns = Enumerable.Range(0, cols).Where(j => flags[j] > 0).ToArray();
                using var outlierMask = isOutlier.Gt(zero);
                inliers = a.MaskedFill(outlierMask, 0);
                if (rows > 1)
                {
                    using var dropF = isOutlier.Maximum(columnHas);
                    drop = dropF.Gt(zero);
                }
                else drop = outlierMask.Clone();
            }
            var stats = (inliers ?? a).Max(1);
            // 127 / absmax per row; an all-zero row has no scale and keeps zero codes (bitsandbytes would divide by zero).
            using var noScale = stats.Eq(zero);
            using var c127 = x.ScalarLike(127);
            using var inv = c127.Div(stats);
            using var scale = inv.MaskedFill(noScale, 0);
            using var column = scale.Unsqueeze(1);
            using var scaled = x.Mul(column);
            var codes = scaled.Round();
            if (drop != null)
            {
                using var all = codes;
                codes = all.MaskedFill(drop, 0);
            }
            return (codes, stats, columns);
        }
        finally
        {
            drop?.Dispose();
            inliers?.Dispose();
        }
    }
}
