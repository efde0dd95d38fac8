using Peft.Core;

namespace Peft.Nn;

/// <summary>
/// Dynamic loss scaling for F16 training, as torch.amp.GradScaler: the loss is multiplied by <see cref="Scale"/> before
/// backward so small gradients survive F16's range; before the step the gradients are divided back and checked — any
/// non-finite value skips the step and halves the scale (backoff), and after <c>growthInterval</c> clean steps in a
/// row the scale doubles (growth).
/// </summary>
/// <example><code>
/// var scaler = new GradScaler();
/// using (Autocast.Enable(DType.F16)) loss = model.Forward(batch).Loss!;
/// using (var scaled = scaler.ScaleLoss(loss)) scaled.Backward();
/// scaler.Unscale(optimizer);                 // optional: clip after this, on true gradients
/// optimizer.ClipGradNorm(1.0);
/// bool stepped = scaler.Step(optimizer);     // false: an inf/NaN gradient, the step was skipped
/// scaler.Update();
/// </code></example>
public sealed class GradScaler
{
    private readonly double _growthFactor, _backoffFactor;
    private readonly int _growthInterval;
    private bool _unscaled, _foundInf;

    /// <summary>torch's defaults: 2¹⁶, ×2 after 2000 clean steps, ×0.5 after an overflow.</summary>
    public GradScaler(double initScale = 65536.0, double growthFactor = 2.0, double backoffFactor = 0.5, int growthInterval = 2000)
    {
        if (!(initScale > 0) || !(growthFactor > 1) || !(backoffFactor is > 0 and < 1) || growthInterval <= 0)
            throw new ArgumentException("GradScaler needs initScale > 0, growthFactor > 1, 0 < backoffFactor < 1 and growthInterval > 0");
        (Scale, _growthFactor, _backoffFactor, _growthInterval) = (initScale, growthFactor, backoffFactor, growthInterval);
    }

    /// <summary>The current loss scale.</summary>
    public double Scale { get; private set; }

    /// <summary>Clean steps since the scale last changed.</summary>
    public int GrowthTracker { get; private set; }

    /// <summary>Whether the gradients of the current step held an inf or NaN (known after <see cref="Unscale"/>).</summary>
    public bool FoundInf => _foundInf;

    /// <summary>loss·scale (a new tensor; back-propagate it instead of the loss).</summary>
    public Tensor ScaleLoss(Tensor loss) => loss.Mul(Scale);

    /// <summary>Divides every gradient of <paramref name="optimizer"/> by the scale, in place, and notes whether any
    /// was not finite. Once per step; <see cref="Step"/> calls it when it has not been called.</summary>
    public void Unscale(Optimizer optimizer)
    {
        if (_unscaled) throw new InvalidOperationException("Unscale was already called for this step (call Update after Step)");
        _unscaled = true;
        // torch multiplies by the F32 reciprocal of the scale (exact for the power-of-two scales the defaults produce).
        double inverse = (float)(1.0 / Scale);
        using var _ = Autograd.NoGrad();
        foreach (var p in optimizer.Groups.SelectMany(g => g.Parameters))
        {
            if (p.Grad is not { } g) continue;
            if (!_foundInf)
            {
                using var abs = g.Abs();
                using var max = abs.Max();
                if (!double.IsFinite(max.Item())) _foundInf = true;
            }
            g.MulInPlace(inverse);
        }
    }

    /// <summary>Unscales if needed, then runs <paramref name="optimizer"/>'s step unless a gradient was not finite.
    /// Returns whether the step ran.</summary>
    public bool Step(Optimizer optimizer)
    {
        if (!_unscaled) Unscale(optimizer);
        if (_foundInf) return false;
        optimizer.Step();
        return true;
    }

    /// <summary>Adjusts the scale after a step (torch's _amp_update_scale_) and gets ready for the next one.</summary>
    public void Update()
    {
        if (!_unscaled) throw new InvalidOperationException("Update needs a step first (Unscale or Step)");
        if (_foundInf)
        {
            Scale *= _backoffFactor;
            GrowthTracker = 0;
        }
        else if (++GrowthTracker == _growthInterval)
        {
            double grown = Scale * _growthFactor;
            if (double.IsFinite(grown)) Scale = grown;
            GrowthTracker = 0;
        }
        (_unscaled, _foundInf) = (false, false);
    }

    /// <summary>The state a checkpoint keeps: scale and growth tracker.</summary>
    public (double Scale, int GrowthTracker) State => (Scale, GrowthTracker);

    /// <summary>Restores <see cref="State"/> from a checkpoint.</summary>
    public void Restore(double scale, int growthTracker)
    {
        if (!(scale > 0) || !double.IsFinite(scale) || growthTracker < 0 || growthTracker >= _growthInterval)
            throw new ArgumentException($"GradScaler state (scale {scale}, growth tracker {growthTracker}) is not valid for growth interval {_growthInterval}");
        (Scale, GrowthTracker, _unscaled, _foundInf) = (scale, growthTracker, false, false);
    }
}
