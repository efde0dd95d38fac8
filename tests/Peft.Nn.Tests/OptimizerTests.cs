using Peft.Nn;

namespace Peft.Nn.Tests;

[TestFixture]
public class OptimizerTests
{
    /// <summary>torch.optim.AdamW's update, written out in scalars.</summary>
    private static double[] ReferenceAdamW(double p, double[] grads, double lr, double wd, double b1 = 0.9, double b2 = 0.999, double eps = 1e-8)
    {
        double m = 0, v = 0;
        var trace = new double[grads.Length];
        for (int t = 1; t <= grads.Length; t++)
        {
            double g = grads[t - 1];
            p *= 1 - lr * wd;
            m = b1 * m + (1 - b1) * g;
            v = b2 * v + (1 - b2) * g * g;
            double mHat = m / (1 - Math.Pow(b1, t)), denom = Math.Sqrt(v) / Math.Sqrt(1 - Math.Pow(b2, t)) + eps;
            p -= lr * mHat / denom;
            trace[t - 1] = p;
        }
        return trace;
    }

    [Test]
    public void AdamWMatchesTorchsUpdateStepByStep()
    {
        // First step by hand: p = 1·(1 − 0.1·0.01) = 0.999; m̂ = 0.5, √v̂ = 0.5 → p = 0.999 − 0.1·(0.5/0.5) = 0.899.
        var grads = new[] { 0.5, -0.2, 0.7, 0.1 };
        var expected = ReferenceAdamW(1.0, grads, lr: 0.1, wd: 0.01);
        Assert.That(expected[0], Is.EqualTo(0.899).Within(1e-7));
        using var p = Tensor.FromArray(new double[] { 1.0 }).RequiresGradient();
        using var opt = new AdamW([p], lr: 0.1, weightDecay: 0.01);
        for (int t = 0; t < grads.Length; t++)
        {
            p.Grad?.Dispose();
            p.Grad = Tensor.FromArray(new[] { grads[t] });
            opt.Step();
            Assert.That(p.Item(), Is.EqualTo(expected[t]).Within(1e-12), $"step {t + 1}");
        }
        Assert.That(opt.StepCount, Is.EqualTo(4));
    }

    [Test]
    public void SgdWithMomentumMatchesTorch()
    {
        // b₁ = g = 1 → p = 1 − 0.1 = 0.9; b₂ = 0.9·1 + 1 = 1.9 → p = 0.9 − 0.19 = 0.71.
        using var p = Tensor.FromArray(new double[] { 1.0 }).RequiresGradient();
        using var opt = new Sgd([p], lr: 0.1, momentum: 0.9);
        foreach (var expected in new[] { 0.9, 0.71 })
        {
            p.Grad?.Dispose();
            p.Grad = Tensor.FromArray(new[] { 1.0 });
            opt.Step();
            Assert.That(p.Item(), Is.EqualTo(expected).Within(1e-12));
        }
    }

    [Test]
    public void ClipGradNormScalesToTheMaximumAndReportsTheNorm()
    {
        using var p = Tensor.FromArray(new double[] { 0, 0 }).RequiresGradient();
        p.Grad = Tensor.FromArray(new double[] { 3, 4 });
        using var opt = new Sgd([p], lr: 1);
        Assert.That(opt.ClipGradNorm(1.0), Is.EqualTo(5));
        Assert.That(p.Grad!.ToArray<double>(), Is.EqualTo(new[] { 0.6, 0.8 }).Within(1e-6));
        Assert.That(opt.ClipGradNorm(10.0), Is.EqualTo(1).Within(1e-6), "no clipping below the maximum");
    }

    [Test]
    public void AParameterInTwoGroupsIsRejected()
    {
        using var p = Tensor.Zeros([2]).RequiresGradient();
        Assert.Throws<ArgumentException>(() => new AdamW([new ParamGroup([p], 1), new ParamGroup([p], 2)]));
    }
}
