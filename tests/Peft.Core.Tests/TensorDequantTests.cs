using Peft.Core.Quantization;

namespace Peft.Core.Tests;

/// <summary>The tensor forms of the quantization references (<see cref="Dequant"/>, the tensor
/// <see cref="LlmInt8.QuantizeActivations(Tensor, double)"/>) — what quantized layers run on any device — against the
/// array references element for element.</summary>
[TestFixture]
public class TensorDequantTests
{
    private static float[] WithOutliers(int rows, int cols, int seed)
    {
        var x = QuantizationTests.Random(rows * cols, seed, 3);
        if (rows > 2)
        {
            x[1 * cols + 4] = 7.5f;     // an outlier: its column leaves the int8 part
            x[2 * cols + 9] = -9f;
            x[0 * cols + 11] = 6f;      // exactly the threshold counts as an outlier (|x| ≥ 6)
            for (int j = 0; j < cols; j++) x[(rows - 1) * cols + j] = 0;   // an all-zero row keeps zero codes
        }
        else x[3] = 12f;
        return x;
    }

    [TestCase(7, 33, 6.0)]
    [TestCase(1, 20, 6.0)]
    [TestCase(5, 16, 0.0)]
    [TestCase(6, 24, 100.0)]
    public void TheTensorActivationQuantizerEqualsTheArrayOne(int rows, int cols, double threshold)
    {
        var x = WithOutliers(rows, cols, rows * 100 + cols);
        var (codes, stats, outliers) = LlmInt8.QuantizeActivations(x, rows, cols, threshold);
        using var xt = Tensor.FromArray(x, [rows, cols]);
        var (tc, ts, to) = LlmInt8.QuantizeActivations(xt, threshold);
        using (tc)
        using (ts)
        {
            Assert.That(tc.Shape, Is.EqualTo(new[] { rows, cols }));
            Assert.That(tc.ToArray<float>(), Is.EqualTo(codes), "codes");
            Assert.That(ts.ToArray<float>(), Is.EqualTo(stats), "row absmax");
            Assert.That(to, Is.EqualTo(outliers), "outlier columns");
        }
        if (threshold == 6.0 && rows > 1) Assert.That(outliers, Is.EqualTo(new[] { 4, 9, 11 }), "the case really has outliers");
    }

    [Test]
    public void DequantizingTensorsEqualsTheArrayReferences()
    {
        int rows = 9, cols = 70;
        var w = QuantizationTests.Random(rows * cols, 5, 2);
        var (q, scb) = Int8RowWise.Quantize(w, rows, cols);
        using (var qt = Tensor.FromArray(q, [rows, cols]))
        using (var st = Tensor.FromArray(scb))
        using (var back = Dequant.Int8(qt, st))
            Assert.That(back.ToArray<float>(), Is.EqualTo(Int8RowWise.Dequantize(q, scb, rows, cols)));

        var (packed, absmax) = Nf4.Quantize(w);
        using (var pt = Tensor.FromArray(packed))
        using (var at = Tensor.FromArray(absmax))
        using (var back = Dequant.Nf4(pt, at, [rows, cols]))
        {
            Assert.That(back.Shape, Is.EqualTo(new[] { rows, cols }));
            Assert.That(back.ToArray<float>(), Is.EqualTo(Nf4.Dequantize(packed, absmax, w.Length)));
        }

        var dq = DoubleQuantizedAbsmax.From(QuantizationTests.Random(600, 6, 0.5f).Select(Math.Abs).ToArray());
        using (var ct = Tensor.FromArray(dq.Codes))
        using (var nt = Tensor.FromArray(dq.NestedAbsmax))
        using (var back = Dequant.Nf4Absmax(ct, nt, dq.Offset))
            Assert.That(back.ToArray<float>(), Is.EqualTo(dq.Dequantize()));
    }

    [Test]
    public void MismatchedQuantizedBuffersAreRefusedByName()
    {
        using var q = Tensor.Zeros([4, 8], DType.I8);
        using var scb = Tensor.Zeros([3]);
        Assert.That(() => Dequant.Int8(q, scb), Throws.ArgumentException.With.Message.Contains("SCB must be F32 with one scale per row (4)"));
        using var packed = Tensor.Zeros([10], DType.U8);
        using var absmax = Tensor.Zeros([1]);
        Assert.That(() => Dequant.Nf4(packed, absmax, [4, 8]), Throws.ArgumentException.With.Message.Contains("16 bytes for [4, 8]"));
        using var codes = Tensor.Zeros([300], DType.U8);
        Assert.That(() => Dequant.Nf4Absmax(codes, absmax, 0), Throws.ArgumentException.With.Message.Contains("(2 for 300)"));
    }

    [Test]
    public void RoundGoesHalfToEvenAsTorchRound()
    {
        float[] x = [0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 2.4999998f, 3.5000002f, 1e8f, -7.25f, float.NaN, float.PositiveInfinity];
        using var t = Tensor.FromArray(x);
        using var r = t.Round();
        Assert.That(r.ToArray<float>(), Is.EqualTo(x.Select(v => MathF.Round(v, MidpointRounding.ToEven)).ToArray()));
        Assert.That(r.ToArray<float>()[..6], Is.EqualTo(new[] { 0f, 2f, 2f, -0f, -2f, -2f }));
    }
}
