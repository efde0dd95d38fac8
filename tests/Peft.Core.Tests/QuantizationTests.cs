using Peft.Core.Quantization;

namespace Peft.Core.Tests;

[TestFixture]
public class QuantizationTests
{
    internal static float[] Random(int n, int seed, float scale = 1)
    {
        var r = new System.Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();
    }

    [Test]
    public void Int8RowWiseErrorIsWithinHalfAStepPerRow()
    {
        int rows = 16, cols = 37;
        var w = Random(rows * cols, 1, 3);
        for (int j = 0; j < cols; j++) w[5 * cols + j] = 0; // an all-zero row must not divide by zero
        var (q, scb) = Int8RowWise.Quantize(w, rows, cols);
        var back = Int8RowWise.Dequantize(q, scb, rows, cols);
        Assert.That(scb[5], Is.EqualTo(0));
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                Assert.That(Math.Abs(back[i * cols + j] - w[i * cols + j]), Is.LessThanOrEqualTo(scb[i] / 254 * 1.0001 + 1e-7), $"[{i},{j}]");
        Assert.That(q.Max(), Is.LessThanOrEqualTo((sbyte)127));
        Assert.That(q.Min(), Is.GreaterThanOrEqualTo((sbyte)-127));
        // The row maximum is represented exactly (q = ±127).
        int argmax = Enumerable.Range(0, cols).OrderByDescending(j => Math.Abs(w[j])).First();
        Assert.That(back[argmax], Is.EqualTo(w[argmax]).Within(1e-6));
    }

    [Test]
    public void Nf4ErrorIsWithinHalfTheWidestGapTimesTheBlockAbsmax()
    {
        var w = Random(64 * 5 + 17, 2, 2);   // a partial last block and an odd length
        var (packed, absmax) = Nf4.Quantize(w);
        Assert.That(absmax, Has.Length.EqualTo(6));
        Assert.That(packed, Has.Length.EqualTo((w.Length + 1) / 2));
        var back = Nf4.Dequantize(packed, absmax, w.Length);
        double widest = Enumerable.Range(0, 15).Max(k => Nf4.Levels[k + 1] - Nf4.Levels[k]) / 2; // ≈ 0.1385
        for (int i = 0; i < w.Length; i++)
            Assert.That(Math.Abs(back[i] - w[i]), Is.LessThanOrEqualTo(widest * absmax[i / 64] + 1e-6), $"[{i}]");
    }

    [Test]
    public void Nf4LevelsRoundTripExactlyAndPackTheFirstElementInTheHighNibble()
    {
        var levels = Nf4.Levels.Select(l => l * 2.5f).ToArray(); // one block whose absmax is 2.5
        var (packed, absmax) = Nf4.Quantize(levels);
        Assert.That(absmax[0], Is.EqualTo(2.5f));
        Assert.That(Nf4.Dequantize(packed, absmax, 16), Is.EqualTo(levels).Within(1e-6));
        Assert.That(packed[0], Is.EqualTo((byte)0x01), "codes 0 and 1: first element in the high nibble");
        Assert.That(packed[7], Is.EqualTo((byte)0xEF), "codes 14 and 15");
        Assert.That(Nf4.Code(0), Is.EqualTo(7), "zero is exact");
    }
}

[TestFixture]
public class DoubleQuantizationTests
{
    private static float[] Random(int n, int seed, float scale = 1) => QuantizationTests.Random(n, seed, scale);

    [Test]
    public void TheDynamicMapHasBitsandbytesShape()
    {
        var code = Blockwise8.Code;
        Assert.That(code, Has.Length.EqualTo(256));
        Assert.That(code, Is.Ordered.And.Unique);
        Assert.That(code.Count(v => v > 0), Is.EqualTo(128), "127 positive levels and 1.0");
        Assert.That(code.Count(v => v < 0), Is.EqualTo(127));
        Assert.That(code[^1], Is.EqualTo(1f));
        Assert.That(code[0], Is.EqualTo(-code[^2]), "the negative end mirrors the largest level below 1");
        // The first exponent (10⁻⁶) has one midpoint: (0.1 + 1) / 2.
        Assert.That(code.Where(v => v > 0).Min(), Is.EqualTo(5.5e-7f).Within(1e-12));
        // The last exponent (10⁰) has 64 midpoints of linspace(0.1, 1, 65): the largest is (1 - 0.9/128).
        Assert.That(code[^2], Is.EqualTo(1 - 0.9f / 128).Within(1e-6));
        foreach (var v in code) Assert.That(Blockwise8.Code[Blockwise8.Nearest(v)], Is.EqualTo(v), "every level codes to itself");
    }

    [Test]
    public void Blockwise8ErrorIsWithinHalfTheLocalGapTimesTheBlockAbsmax()
    {
        var v = Random(256 * 3 + 40, 3, 5);
        var (codes, absmax) = Blockwise8.Quantize(v);
        Assert.That(absmax, Has.Length.EqualTo(4));
        var back = Blockwise8.Dequantize(codes, absmax);
        var code = Blockwise8.Code;
        for (int i = 0; i < v.Length; i++)
        {
            float a = absmax[i / 256], x = v[i] / a;
            // The nearest level is at most half the gap between the levels around x away.
            // Below the lowest level (−0.99297…; x can reach −1) the error is the distance to it.
            int hi = Array.FindIndex(code, c => c >= x);
            double bound = hi <= 0 ? code[0] - x : (code[hi] - code[hi - 1]) / 2;
            Assert.That(Math.Abs(back[i] - v[i]), Is.LessThanOrEqualTo(bound * a * 1.0001 + 1e-7), $"[{i}]");
        }
    }

    [Test]
    public void DoubleQuantizedAbsmaxStaysCloseAndNf4StillMeetsItsBound()
    {
        var w = Random(64 * 600, 4, 0.05f);          // 600 NF4 blocks → 3 nested blocks
        var (packed, absmax) = Nf4.Quantize(w);
        var dq = DoubleQuantizedAbsmax.From(absmax);
        Assert.That(dq.Codes, Has.Length.EqualTo(600));
        Assert.That(dq.NestedAbsmax, Has.Length.EqualTo(3));
        Assert.That(dq.Offset, Is.EqualTo(absmax.Average()).Within(1e-6));
        var decoded = dq.Dequantize();
        for (int b = 0; b < absmax.Length; b++)
            Assert.That(Math.Abs(decoded[b] - absmax[b]), Is.LessThanOrEqualTo(dq.NestedAbsmax[b / 256] * (0.9 / 128) * 1.0001 + 1e-7), $"block {b}");
        var single = Nf4.Dequantize(packed, absmax, w.Length);
        var doubled = Nf4.Dequantize(packed, decoded, w.Length);
        double err1 = 0, err2 = 0, norm = 0;
        for (int i = 0; i < w.Length; i++) { err1 += Math.Pow(single[i] - w[i], 2); err2 += Math.Pow(doubled[i] - w[i], 2); norm += w[i] * w[i]; }
        TestContext.Out.WriteLine($"NF4 relative error: {Math.Sqrt(err1 / norm):E3} single, {Math.Sqrt(err2 / norm):E3} double-quantized");
        Assert.That(Math.Sqrt(err2 / norm), Is.LessThan(Math.Sqrt(err1 / norm) * 1.05), "double quantization adds under 5% to NF4's error");
    }

    [Test]
    public void LlmInt8SetsOutlierColumnsAsideAndQuantizesTheRestByRow()
    {
        float[] x = [1f, 8f, -0.5f, 0.25f, 1f, 2f];
        var (codes, stats, columns) = LlmInt8.QuantizeActivations(x, 2, 3, threshold: 6.0);
        Assert.That(columns, Is.EqualTo(new[] { 1 }));
        Assert.That(stats, Is.EqualTo(new[] { 1f, 2f }), "row 0's absmax leaves the outlier 8 out");
        Assert.That(codes, Is.EqualTo(new[] { 127f, 0f, -64f, 16f, 0f, 127f }), "round half to even: -63.5 → -64; 15.875 → 16; column 1 zero");
        var (all, allStats, none) = LlmInt8.QuantizeActivations(x, 2, 3, threshold: 0);
        Assert.That(none, Is.Empty);
        Assert.That(allStats, Is.EqualTo(new[] { 8f, 2f }));
        Assert.That(all[1], Is.EqualTo(127f));
        var (zeros, zeroStats, _) = LlmInt8.QuantizeActivations(new float[3], 1, 3, 6.0);
        Assert.That(zeros, Is.All.EqualTo(0f), "an all-zero row has no scale and codes to zeros");
        Assert.That(zeroStats[0], Is.EqualTo(0f));
    }
}
