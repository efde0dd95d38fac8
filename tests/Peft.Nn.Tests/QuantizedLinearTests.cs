using Peft.Core.Quantization;
using Peft.Core.Random;
using Peft.Nn;

namespace Peft.Nn.Tests;

/// <summary>LLM.int8 (with its outlier decomposition) and NF4 (with double quantization) layers against float
/// references and hand-computed formulas.</summary>
[TestFixture]
public class QuantizedLinearTests
{
    private static double RelErr(float[] a, float[] b)
    {
        double n = 0, d = 0;
        for (int i = 0; i < a.Length; i++) { n += Math.Pow(a[i] - b[i], 2); d += (double)b[i] * b[i]; }
        return Math.Sqrt(n / d);
    }

    /// <summary>Activations with a few large feature columns, the pattern LLM.int8's decomposition exists for.</summary>
    private static Tensor ActivationsWithOutlierColumns(int rows, int cols, int seed)
    {
        var x = Tensor.Randn([rows, cols], new Generator((ulong)seed)).ToFloatArray();
        foreach (int c in new[] { 3, 17, 40 })
            for (int r = 0; r < rows; r++) x[r * cols + c] *= 25;
        return Tensor.FromArray(x, [rows, cols]);
    }

    private static float[] Forward(IUnaryModule layer, Tensor x)
    {
        using var _ = Autograd.NoGrad();
        using var y = layer.Forward(x);
        return y.ToFloatArray();
    }

    [Test]
    public void LlmInt8MatchesTheFormulaOfItsTwoParts()
    {
        using var linear = new Linear(64, 24, generator: new Generator(5));
        using var layer = new Int8Linear(linear, threshold: 6.0);
        using var x = ActivationsWithOutlierColumns(7, 64, 6);
        var y = Forward(layer, x);

        var xs = x.ToFloatArray();
        var (q, scb) = Int8RowWise.Quantize(linear.Weight.ToFloatArray(), 24, 64);
        var (codes, stats, outliers) = LlmInt8.QuantizeActivations(xs, 7, 64, 6.0);
        Assert.That(outliers, Is.EqualTo(new[] { 3, 17, 40 }));
        var bias = linear.Bias!.ToFloatArray();
        var expected = new float[7 * 24];
        for (int r = 0; r < 7; r++)
            for (int j = 0; j < 24; j++)
            {
                double int8 = 0, fp = 0;
                for (int k = 0; k < 64; k++) int8 += codes[r * 64 + k] * q[j * 64 + k];
                foreach (int k in outliers) fp += xs[r * 64 + k] * (q[j * 64 + k] * scb[j] / 127.0);
                expected[r * 24 + j] = (float)(int8 * stats[r] * scb[j] / (127.0 * 127.0) + fp + bias[j]);
            }
        Assert.That(RelErr(y, expected), Is.LessThan(1e-6));
    }

    [Test]
    public void UnderAutocastTheInt8ProductStaysExact()
    {
        using var linear = new Linear(64, 24, generator: new Generator(20));
        using var layer = new Int8Linear(linear, threshold: 0);   // no outlier part: the output is the int8 product alone
        using var x = Tensor.Randn([7, 64], new Generator(21));
        var plain = Forward(layer, x);
        float[] mixed;
        using (Autocast.Enable(DType.BF16)) mixed = Forward(layer, x);
        Assert.That(mixed, Is.EqualTo(plain), "the int32-style accumulation is not rounded to bf16");
    }

    [Test]
    public void ATinyThresholdSendsEveryColumnToFloatAndEqualsTheDequantizedWeight()
    {
        using var linear = new Linear(48, 16, generator: new Generator(7));
        using var mixed = new Int8Linear(linear, threshold: 1e-30);
        using var weightOnly = new Int8Linear(linear, threshold: null);
        using var x = Tensor.Randn([5, 48], new Generator(8));
        Assert.That(RelErr(Forward(mixed, x), Forward(weightOnly, x)), Is.LessThan(1e-6));
    }

    [Test]
    public void TheDecompositionKeepsOutlierColumnsAccurate()
    {
        using var linear = new Linear(64, 32, generator: new Generator(9));
        using var x = ActivationsWithOutlierColumns(16, 64, 10);
        var reference = Forward(linear, x);
        using var withOutliers = new Int8Linear(linear, threshold: 6.0);
        using var allInt8 = new Int8Linear(linear, threshold: 0);
        double e6 = RelErr(Forward(withOutliers, x), reference), e0 = RelErr(Forward(allInt8, x), reference);
        TestContext.Out.WriteLine($"relative error vs float: threshold 6.0 {e6:E3}, threshold 0 {e0:E3}");
        Assert.That(e6, Is.LessThan(0.01));
        Assert.That(e6, Is.LessThan(e0 / 2), "outlier columns quantized with the rest lose the small features' precision");
    }

    [Test]
    public void LlmInt8BackwardIsTheGradientTimesTheDequantizedWeight()
    {
        using var linear = new Linear(64, 8, generator: new Generator(11));
        using var layer = new Int8Linear(linear, threshold: 6.0);
        using var x = ActivationsWithOutlierColumns(4, 64, 12).RequiresGradient();
        using var upstream = Tensor.Randn([4, 8], new Generator(13));
        using (var y = layer.Forward(x))
        using (var loss = y.Mul(upstream).Sum()) loss.Backward();
        using var w = layer.DequantizedWeight();
        using var expected = upstream.MatMul(w);
        Assert.That(RelErr(x.Grad!.ToFloatArray(), expected.ToFloatArray()), Is.LessThan(1e-6));
        Assert.That(layer.Parameters().All(p => p.Grad == null), "the frozen bias gets no gradient");
    }

    [Test]
    public void AConv1DQuantizesAsTheLinearWithItsTransposedWeight()
    {
        using var conv = new Conv1D(12, 40, generator: new Generator(17));   // weight [in, out]
        using var linear = new Linear(40, 12);
        using (Autograd.NoGrad())
        {
            using var wt = conv.Weight.Transpose(0, 1);
            linear.Weight.CopyFrom(wt);
            using var b = Tensor.Randn([12], new Generator(18));
            linear.Bias!.CopyFrom(b);
            conv.Bias.CopyFrom(b);
        }
        using var x = Tensor.Randn([3, 40], new Generator(19));
        using var fromConv = new Nf4Linear(conv, doubleQuant: true);
        using var fromLinear = new Nf4Linear(linear, doubleQuant: true);
        Assert.That(Forward(fromConv, x), Is.EqualTo(Forward(fromLinear, x)));
        Assert.That(RelErr(Forward(fromConv, x), Forward(conv, x)), Is.LessThan(0.15));
    }

    [Test]
    public void NegativeOrNaNThresholdsAreRefused()
    {
        using var linear = new Linear(4, 4);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Int8Linear(linear, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Int8Linear(linear, double.NaN));
    }

    [Test]
    public void Nf4DoubleQuantizationTakesUnderFourAndAQuarterBitsPerWeight()
    {
        using var linear = new Linear(512, 256, bias: false, generator: new Generator(14));
        using var single = new Nf4Linear(linear);
        using var doubled = new Nf4Linear(linear, doubleQuant: true);
        long Bytes(Module m) => m.NamedBuffers().Sum(b => b.Buffer.NumEl * b.Buffer.DType.SizeOf());
        const long weights = 512 * 256, blocks = weights / 64;
        Assert.That(Bytes(single), Is.EqualTo(weights / 2 + blocks * 4));
        Assert.That(Bytes(doubled), Is.EqualTo(weights / 2 + blocks + (blocks + 255) / 256 * 4 + 4));
        double bitsSingle = Bytes(single) * 8.0 / weights, bitsDouble = Bytes(doubled) * 8.0 / weights;
        TestContext.Out.WriteLine($"NF4 bits per weight: {bitsSingle:F4} single, {bitsDouble:F4} double-quantized");
        Assert.That(bitsSingle, Is.EqualTo(4.5));
        Assert.That(bitsDouble, Is.LessThan(4.13));

        using var x = Tensor.Randn([8, 512], new Generator(15));
        var reference = Forward(linear, x);
        double e1 = RelErr(Forward(single, x), reference), e2 = RelErr(Forward(doubled, x), reference);
        TestContext.Out.WriteLine($"NF4 output relative error: {e1:E3} single, {e2:E3} double-quantized");
        Assert.That(e2, Is.LessThan(e1 * 1.05));
    }

    [Test]
    public void RequantizingADoublyQuantizedLayerKeepsItsLayout()
    {
        using var linear = new Linear(128, 64, generator: new Generator(16));
        using var layer = new Nf4Linear(linear, doubleQuant: true);
        using var w = layer.DequantizedWeight();
        using var shifted = w.Add(0.01);
        layer.Requantize(shifted);
        Assert.That(layer.Buffer("absmax").DType, Is.EqualTo(DType.U8));
        using var back = layer.DequantizedWeight();
        Assert.That(RelErr(back.ToFloatArray(), shifted.ToFloatArray()), Is.LessThan(0.15));
        Assert.That(RelErr(back.ToFloatArray(), w.ToFloatArray()), Is.GreaterThan(0.01), "the new weight was stored");
    }
}
