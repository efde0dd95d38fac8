using Peft.Transformers;

namespace Peft.Transformers.Tests;

/// <summary>Finite-difference checks of a whole model's gradients on sampled parameter elements (the model in F64).</summary>
internal static class SampledGradCheck
{
    /// <summary>Back-propagates <paramref name="loss"/> once, then for <paramref name="perParameter"/> random elements of
    /// every parameter (except those <paramref name="skip"/> names) compares the gradient with central differences.</summary>
    public static void Run(PreTrainedModel model, Func<Tensor> loss, int seed, int perParameter = 1, Func<string, bool>? skip = null)
    {
        loss().Backward();
        var rng = new System.Random(seed);
        foreach (var (name, p) in model.NamedParameters())
        {
            if (skip?.Invoke(name) == true) continue;
            Assert.That(p.Grad, Is.Not.Null, $"{name} got no gradient");
            var grad = p.Grad!.ToDoubleArray();
            for (int s = 0; s < perParameter; s++)
            {
                int i = rng.Next((int)p.NumEl);
                double numeric = Numeric(p, i, loss);
                Assert.That(grad[i], Is.EqualTo(numeric).Within(1e-6 + 1e-5 * Math.Abs(numeric)), $"{name}[{i}]");
            }
        }
    }

    private static double Numeric(Tensor p, int i, Func<Tensor> loss)
    {
        const double eps = 1e-6;
        using var _ = Autograd.NoGrad();
        var flat = p.Reshape(-1);
        double orig = flat.Narrow(0, i, 1).Item();
        double Eval(double v)
        {
            flat.Narrow(0, i, 1).FillInPlace(v);
            using var s = Tensor.NewScope();
            return loss().Item();
        }
        double g = (Eval(orig + eps) - Eval(orig - eps)) / (2 * eps);
        Eval(orig);
        return g;
    }
}
