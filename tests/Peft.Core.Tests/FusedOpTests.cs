using Peft.Core.Random;

namespace Peft.Core.Tests;

/// <summary>Fused kernels against their composite definitions (the oracles DESIGN.md asks for), F32.</summary>
[TestFixture]
public class FusedOpTests
{
    [Test]
    public void SoftmaxMatchesExpOverSum()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.Randn([4, 9], 1) * 3.0;
        var e = (x - x.Max(-1, keepDim: true)).Exp();
        var oracle = e / e.Sum(-1, keepDim: true);
        Assert.That(TestUtil.RelErr(x.Softmax(-1), oracle), Is.LessThan(1e-6));
        Assert.That(TestUtil.RelErr(x.LogSoftmax(-1), oracle.Log()), Is.LessThan(1e-6));
    }

    [Test]
    public void SoftmaxOfAFullyMaskedRowIsZeroNotNaN()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.Full([2, 3], double.NegativeInfinity);
        Assert.That(x.Softmax().ToDoubleArray(), Is.All.EqualTo(0.0));
    }

    [Test]
    public void LayerNormMatchesComposite()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.Randn([5, 16], 2) * 2.0 + 1.0;
        var w = Tensor.Randn([16], 3);
        var b = Tensor.Randn([16], 4);
        var mean = x.Mean(-1, keepDim: true);
        var centered = x - mean;
        var variance = (centered * centered).Mean(-1, keepDim: true);
        var oracle = centered / (variance + 1e-5).Sqrt() * w + b;
        Assert.That(TestUtil.RelErr(x.LayerNorm(w, b, 1e-5), oracle), Is.LessThan(1e-5));
    }

    [Test]
    public void RmsNormMatchesComposite()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.Randn([5, 16], 2);
        var w = Tensor.Randn([16], 3);
        var oracle = x * ((x * x).Mean(-1, keepDim: true) + 1e-6).Rsqrt() * w;
        Assert.That(TestUtil.RelErr(x.RmsNorm(w, 1e-6), oracle), Is.LessThan(1e-5));
    }

    [Test]
    public void CrossEntropyMatchesLogSoftmaxGatherWithIgnoreAndSmoothing()
    {
        using var s = Tensor.NewScope();
        var logits = Tensor.Randn([6, 5], 7);
        long[] t = [1, -100, 4, 0, 2, -100];
        var targets = Tensor.FromArray(t);
        double eps = 0.2;
        var lp = logits.LogSoftmax(-1).ToDoubleArray();
        double total = 0;
        int counted = 0;
        for (int i = 0; i < 6; i++)
        {
            if (t[i] == -100) continue;
            counted++;
            double uniform = 0;
            for (int j = 0; j < 5; j++) uniform += lp[i * 5 + j];
            total += -(1 - eps) * lp[i * 5 + t[i]] - eps / 5 * uniform;
        }
        double loss = logits.CrossEntropy(targets, labelSmoothing: eps).Item();
        Assert.That(loss, Is.EqualTo(total / counted).Within(1e-5));
    }

    [Test]
    public void CrossEntropyWithEveryTargetIgnoredIsNaNLikeTorch()
    {
        using var s = Tensor.NewScope();
        var loss = Tensor.Randn([2, 3], 1).CrossEntropy(Tensor.FromArray(new long[] { -100, -100 }));
        Assert.That(double.IsNaN(loss.Item()));
    }

    [Test]
    public void CrossEntropyRejectsOutOfRangeTargetsByValue()
    {
        using var s = Tensor.NewScope();
        var ex = Assert.Throws<IndexOutOfRangeException>(() => Tensor.Randn([2, 3], 1).CrossEntropy(Tensor.FromArray(new long[] { 0, 3 })));
        Assert.That(ex!.Message, Does.Contain("target 3"));
    }

    [Test]
    public void CausalAttentionIgnoresTheFuture()
    {
        using var s = Tensor.NewScope();
        var q = Tensor.Randn([1, 4, 8], 1);
        var k = Tensor.Randn([1, 4, 8], 2);
        var v = Tensor.Randn([1, 4, 8], 3);
        var full = Tensor.ScaledDotProductAttention(q, k, v, isCausal: true);
        // Changing the last key/value must not change the outputs of earlier positions.
        var k2 = Tensor.Cat([k.Narrow(1, 0, 3), Tensor.Randn([1, 1, 8], 9)], 1);
        var v2 = Tensor.Cat([v.Narrow(1, 0, 3), Tensor.Randn([1, 1, 8], 10)], 1);
        var changed = Tensor.ScaledDotProductAttention(q, k2, v2, isCausal: true);
        Assert.That(changed.Narrow(1, 0, 3).ToDoubleArray(), Is.EqualTo(full.Narrow(1, 0, 3).ToDoubleArray()));
        Assert.That(changed.Narrow(1, 3, 1).ToDoubleArray(), Is.Not.EqualTo(full.Narrow(1, 3, 1).ToDoubleArray()));
        // The first query sees only the first key: its output is exactly v[0].
        Assert.That(TestUtil.RelErr(full.Narrow(1, 0, 1), v.Narrow(1, 0, 1)), Is.LessThan(1e-6));
    }

    [Test]
    public void PaddingMaskEqualsAttentionOverTheUnmaskedKeysOnly()
    {
        using var s = Tensor.NewScope();
        var q = Tensor.Randn([1, 2, 4], 1);
        var k = Tensor.Randn([1, 5, 4], 2);
        var v = Tensor.Randn([1, 5, 3], 3);
        var mask = Tensor.FromArray(new byte[] { 1, 1, 1, 0, 0 }, [1, 1, 5]);
        var masked = Tensor.ScaledDotProductAttention(q, k, v, mask);
        var truncated = Tensor.ScaledDotProductAttention(q, k.Narrow(1, 0, 3), v.Narrow(1, 0, 3));
        Assert.That(TestUtil.RelErr(masked, truncated), Is.LessThan(1e-6));
    }

    [Test]
    public void ErfMatchesKnownValues()
    {
        Assert.That(Cpu.SpecialFunctions.Erf(0.5), Is.EqualTo(0.5204998778130465).Within(1e-15));
        Assert.That(Cpu.SpecialFunctions.Erf(-1.0), Is.EqualTo(-0.8427007929497149).Within(1e-15));
        Assert.That(Cpu.SpecialFunctions.Erf(2.4), Is.EqualTo(0.9993114861033550).Within(1e-15));
        Assert.That(Cpu.SpecialFunctions.Erf(3.0), Is.EqualTo(0.9999779095030014).Within(1e-15));
        Assert.That(Cpu.SpecialFunctions.Erf(4.5), Is.EqualTo(0.9999999998033839).Within(1e-15));
    }

    [Test]
    public void GeluFormsMatchTheirDefinitions()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.FromArray(new double[] { -3, -1, -0.1, 0, 0.2, 1, 2.5 });
        var erf = x.Gelu().ToDoubleArray();
        var tanh = x.Gelu(approximateTanh: true).ToDoubleArray();
        var xs = x.ToDoubleArray();
        for (int i = 0; i < xs.Length; i++)
        {
            double v = xs[i];
            Assert.That(erf[i], Is.EqualTo(0.5 * v * (1 + Cpu.SpecialFunctions.Erf(v / Math.Sqrt(2)))).Within(1e-14));
            Assert.That(tanh[i], Is.EqualTo(0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)))).Within(1e-14));
        }
    }

    [Test]
    public void DropoutIsSeededInvertedAndIdentityInEval()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.Ones([10000]);
        var a = x.Dropout(0.25, true, new Generator(5)).ToDoubleArray();
        var b = x.Dropout(0.25, true, new Generator(5)).ToDoubleArray();
        Assert.That(a, Is.EqualTo(b), "same seed, same mask");
        Assert.That(a.Distinct().Order(), Is.EqualTo(new[] { 0.0, 1 / 0.75 }).Within(1e-6));
        Assert.That(a.Count(v => v == 0) / 10000.0, Is.EqualTo(0.25).Within(0.02));
        Assert.That(x.Dropout(0.25, training: false).ToDoubleArray(), Is.All.EqualTo(1.0));
    }

    [Test]
    public void KronMatchesDefinition()
    {
        using var s = Tensor.NewScope();
        var a = Tensor.FromArray(new float[] { 1, 2, 3, 4 }, [2, 2]);
        var b = Tensor.FromArray(new float[] { 0, 5, 6, 7 }, [2, 2]);
        Assert.That(Tensor.Kron(a, b).ToArray<float>(), Is.EqualTo(new float[] { 0, 5, 0, 10, 6, 7, 12, 14, 0, 15, 0, 20, 18, 21, 24, 28 }));
    }
}
