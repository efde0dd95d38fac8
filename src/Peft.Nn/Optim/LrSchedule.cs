namespace Peft.Nn;

/// <summary>
/// Learning-rate multipliers of a training step, with transformers' maths (get_*_schedule_with_warmup): warm-up rises
/// linearly from 0 over <c>warmup</c> steps, then constant, linear decay to 0 at <c>total</c>, or half a cosine to 0.
/// </summary>
public static class LrSchedule
{
    /// <summary>Always 1.</summary>
    public static Func<long, double> Constant() => _ => 1;

    /// <summary>Linear warm-up, then 1.</summary>
    public static Func<long, double> ConstantWithWarmup(long warmup) => step => step < warmup ? (double)step / Math.Max(1, warmup) : 1;

    /// <summary>Linear warm-up, then linear decay to 0 at <paramref name="total"/>.</summary>
    public static Func<long, double> Linear(long warmup, long total) => step =>
        step < warmup ? (double)step / Math.Max(1, warmup) : Math.Max(0, (double)(total - step) / Math.Max(1, total - warmup));

    /// <summary>Linear warm-up, then a cosine of <paramref name="cycles"/> periods (0.5: down to 0 at <paramref name="total"/>).</summary>
    public static Func<long, double> Cosine(long warmup, long total, double cycles = 0.5) => step =>
    {
        if (step < warmup) return (double)step / Math.Max(1, warmup);
        double progress = (double)(step - warmup) / Math.Max(1, total - warmup);
        return Math.Max(0, 0.5 * (1 + Math.Cos(Math.PI * cycles * 2 * progress)));
    };

    /// <summary>A schedule by transformers' name: constant, constant_with_warmup, linear, cosine.</summary>
    public static Func<long, double> ByName(string name, long warmup, long total) => name switch
    {
        "constant" => Constant(),
        "constant_with_warmup" => ConstantWithWarmup(warmup),
        "linear" => Linear(warmup, total),
        "cosine" => Cosine(warmup, total),
        _ => throw new ArgumentException($"unknown learning-rate schedule '{name}' (constant, constant_with_warmup, linear, cosine)"),
    };
}

/// <summary>
/// torch's LambdaLR over an optimizer: each group's learning rate is its base rate times the schedule at the current
/// step; construction applies step 0, each <see cref="Step"/> advances one (call it after <c>optimizer.Step()</c>).
/// </summary>
public sealed class LrScheduler
{
    private readonly Optimizer _optimizer;
    private readonly Func<long, double> _schedule;
    private readonly double[] _baseLrs;

    /// <summary>Takes the groups' current rates as base rates and applies step 0.</summary>
    public LrScheduler(Optimizer optimizer, Func<long, double> schedule)
    {
        _optimizer = optimizer;
        _schedule = schedule;
        _baseLrs = optimizer.Groups.Select(g => g.Lr).ToArray();
        Apply();
    }

    /// <summary>Steps taken (torch's last_epoch).</summary>
    public long LastStep { get; private set; }

    /// <summary>Advances one step and sets the new rates.</summary>
    public void Step()
    {
        LastStep++;
        Apply();
    }

    /// <summary>Jumps to <paramref name="step"/> (resuming from a checkpoint).</summary>
    public void SetStep(long step)
    {
        LastStep = step;
        Apply();
    }

    private void Apply()
    {
        double factor = _schedule(LastStep);
        for (int i = 0; i < _baseLrs.Length; i++) _optimizer.Groups[i].Lr = _baseLrs[i] * factor;
    }
}
