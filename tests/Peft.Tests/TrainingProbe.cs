namespace Peft.Tests;

/// <summary>The short training loop the adapter tests share: each step zeroes the gradients, runs the loss, backward,
/// lets the caller inspect the first step's gradients, then updates; returns the first and last losses.</summary>
internal static class TrainingProbe
{
    public static (double First, double Last) Run(PeftModel peft, int steps, Func<Tensor> loss, Action update, Action? afterFirstBackward = null)
    {
        double first = 0, last = 0;
        for (int step = 0; step < steps; step++)
        {
            using var scope = Tensor.NewScope();
            peft.ZeroGrad();
            var l = loss();
            l.Backward();
            if (step == 0)
            {
                afterFirstBackward?.Invoke();
                first = l.Item();
            }
            last = l.Item();
            update();
        }
        return (first, last);
    }

    /// <summary>Plain SGD on every parameter that has a gradient.</summary>
    public static Action Sgd(PeftModel peft, double lr) => () =>
    {
        using var _ = Autograd.NoGrad();
        foreach (var p in peft.Parameters().Where(p => p.Grad != null)) p.AddInPlace(p.Grad!, -lr);
    };

    /// <summary>Asserts that exactly the parameters <paramref name="trains"/> accepts have gradients.</summary>
    public static void OnlyTheseHaveGradients(PeftModel peft, Func<string, bool> trains)
    {
        foreach (var (name, p) in peft.NamedParameters()) Assert.That(p.Grad != null, Is.EqualTo(trains(name)), name);
    }

    /// <summary>A model's outputs without gradients, in their own scope.</summary>
    public static float[] Logits(Func<Peft.Transformers.ModelOutput> run)
    {
        using var _ = Autograd.NoGrad();
        using var scope = Tensor.NewScope();
        return run().Logits.ToFloatArray();
    }
}
