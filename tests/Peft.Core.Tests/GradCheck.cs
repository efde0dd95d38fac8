using Peft.Core;
using Peft.Core.Random;

namespace Peft.Core.Tests;

/// <summary>
/// Central finite differences in F64 against autograd. The output is reduced as L = Σ out ⊙ R with a fixed random R,
/// so every output element contributes with a distinct weight (a plain sum would hide transposed gradients).
/// </summary>
internal static class GradCheck
{
    public static void Check(Func<Tensor[], Tensor> f, Tensor[] inputs, double tol = 1e-6, double eps = 1e-6)
    {
        using var scope = Tensor.NewScope();
        foreach (var x in inputs) Assert.That(x.DType, Is.EqualTo(DType.F64), "grad checks run in F64");
        var diff = inputs.Where(x => x.RequiresGrad).ToArray();
        Assert.That(diff, Is.Not.Empty, "a grad check needs at least one input that requires grad");

        Tensor weights;
        using (Autograd.NoGrad())
        using (var probe = f(inputs))
            weights = Tensor.Randn(probe.Shape, new Generator(12345), DType.F64).KeepAlive();
        try
        {
            foreach (var x in diff) x.ZeroGrad();
            var loss = (f(inputs) * weights).Sum();
            loss.Backward();
            foreach (var x in diff)
            {
                Assert.That(x.Grad, Is.Not.Null, "no gradient reached an input that requires grad");
                var analytic = x.Grad!.ToDoubleArray();
                var numeric = Numeric(f, inputs, x, weights, eps);
                double num = 0, den = 0;
                for (int i = 0; i < analytic.Length; i++) { num += Math.Pow(analytic[i] - numeric[i], 2); den += numeric[i] * numeric[i]; }
                double rel = Math.Sqrt(num) / Math.Max(Math.Sqrt(den), 1e-12);
                Assert.That(rel, Is.LessThanOrEqualTo(tol),
                    $"gradient mismatch for input of shape {Shapes.Format(x.Shape)}: relative error {rel:E2}\nanalytic {string.Join(", ", analytic.Take(8).Select(v => v.ToString("G6")))}\nnumeric  {string.Join(", ", numeric.Take(8).Select(v => v.ToString("G6")))}");
            }
        }
        finally { weights.Dispose(); }
    }

    private static unsafe double[] Numeric(Func<Tensor[], Tensor> f, Tensor[] inputs, Tensor x, Tensor weights, double eps)
    {
        Assert.That(x.IsContiguous, "grad-check inputs must be contiguous");
        var g = new double[x.NumEl];
        double* p = x.Ptr<double>();
        using var _ = Autograd.NoGrad();
        for (long i = 0; i < g.Length; i++)
        {
            double orig = p[i];
            p[i] = orig + eps;
            double up = Eval();
            p[i] = orig - eps;
            double down = Eval();
            p[i] = orig;
            g[i] = (up - down) / (2 * eps);
        }
        return g;

        double Eval()
        {
            using var scope = Tensor.NewScope();
            return (f(inputs) * weights).Sum().Item();
        }
    }

    /// <summary>A fresh F64 leaf of normal samples that requires grad.</summary>
    public static Tensor Leaf(int[] shape, ulong seed, double scale = 1, double shift = 0)
    {
        using var r = Tensor.Randn(shape, new Generator(seed), DType.F64);
        using var s = r * scale;
        using var t = s + shift;
        return t.Detach().RequiresGradient();
    }

    /// <summary>A constant (no grad) F64 tensor.</summary>
    public static Tensor Const(int[] shape, ulong seed) => Tensor.Randn(shape, new Generator(seed), DType.F64);
}
