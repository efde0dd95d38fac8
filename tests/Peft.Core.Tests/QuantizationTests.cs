using Peft.Core.Quantization;

namespace Peft.Core.Tests;

[TestFixture]
public class QuantizationTests
{
    private static float[] Random(int n, int seed, float scale = 1)
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
