namespace Peft.Core;

/// <summary>
/// torch.autograd.detect_anomaly: inside <see cref="Autograd.DetectAnomaly"/> every op's output is checked as it is
/// produced, and every gradient as backward computes it; the first NaN or ±∞ stops the computation with an
/// <see cref="AnomalyException"/> naming the op. Costs one pass over every result: a diagnostic mode, not for training.
/// </summary>
public static partial class Autograd
{
    [ThreadStatic] private static int _anomalyDepth;

    /// <summary>The node whose backward formula is running on this thread (ops inside it belong to that backward).</summary>
    [ThreadStatic] private static GradNode? _runningBackward;

    /// <summary>Whether anomaly detection is on for this thread.</summary>
    public static bool IsDetectingAnomaly => _anomalyDepth > 0;

    /// <summary>Checks every op result and gradient on this thread for NaN/±∞ until disposed.</summary>
    /// <example><code>
    /// using (Autograd.DetectAnomaly()) model.Forward(batch).Loss!.Backward();   // throws at the first NaN, naming the op
    /// </code></example>
    public static IDisposable DetectAnomaly()
    {
        _anomalyDepth++;
        return new OnDispose(() => _anomalyDepth--);
    }

    /// <summary>In anomaly mode: throws when <paramref name="output"/> of <paramref name="opName"/> holds a non-finite value.</summary>
    private static void CheckForward(Tensor output, string opName, Tensor[] inputs)
    {
        if (_anomalyDepth == 0 || AllFinite(output)) return;
        bool inputsFinite = inputs.All(AllFinite);
        if (_runningBackward is { } node)
            throw new AnomalyException(node.OpName, inputsFinite, backward: true,
                $"the backward of {node.OpName} produced a non-finite value (in its {opName}, shape {Shapes.Format(output._shape)}) " +
                (inputsFinite ? "from finite values" : "from values that already held NaN/±∞"));
        throw new AnomalyException(opName, inputsFinite, backward: false,
            $"{opName} produced a non-finite value (output shape {Shapes.Format(output._shape)}) " +
            (inputsFinite ? "from finite inputs" : "from an input that already held NaN/±∞ (the data, or a parameter a previous step corrupted)"));
    }

    /// <summary>In anomaly mode: throws when the gradient <paramref name="node"/>'s backward computed for input
    /// <paramref name="input"/> holds a non-finite value.</summary>
    private static void CheckBackward(GradNode node, int input, Tensor grad, Tensor gradOutput)
    {
        if (_anomalyDepth == 0 || AllFinite(grad)) return;
        bool upstreamFinite = AllFinite(gradOutput);
        throw new AnomalyException(node.OpName, upstreamFinite, backward: true,
            $"the backward of {node.OpName} produced a non-finite gradient for its input {input} (shape {Shapes.Format(grad._shape)}) " +
            (upstreamFinite ? "from a finite incoming gradient" : "from an incoming gradient that already held NaN/±∞"));
    }

    /// <summary>Whether every element of a floating-point tensor is finite (integer tensors always are).</summary>
    internal static unsafe bool AllFinite(Tensor t)
    {
        if (!t.DType.IsFloatingPoint() || t.Device.Type != DeviceType.Cpu || t.IsDisposed) return true;
        using var c = t.ContiguousData();
        long n = c.NumEl;
        switch (c.DType)
        {
            case DType.F64: { double* p = c.Ptr<double>(); for (long i = 0; i < n; i++) if (!double.IsFinite(p[i])) return false; return true; }
            case DType.F32: { float* p = c.Ptr<float>(); for (long i = 0; i < n; i++) if (!float.IsFinite(p[i])) return false; return true; }
            case DType.BF16: { ushort* p = c.Ptr<ushort>(); for (long i = 0; i < n; i++) if ((p[i] & 0x7F80) == 0x7F80) return false; return true; }
            default: { Half* p = c.Ptr<Half>(); for (long i = 0; i < n; i++) if (!Half.IsFinite(p[i])) return false; return true; }
        }
    }
}

/// <summary>Anomaly detection found the first NaN/±∞: <see cref="OpName"/> produced it.</summary>
public sealed class AnomalyException(string opName, bool fromFiniteInputs, bool backward, string message) : Exception(message)
{
    /// <summary>The op whose result (or, in backward, whose gradient) was the first non-finite one.</summary>
    public string OpName { get; } = opName;

    /// <summary>True when the op's inputs (incoming gradient, in backward) were finite: the op itself overflowed or
    /// divided by zero, rather than passing on a NaN it was given.</summary>
    public bool FromFiniteInputs { get; } = fromFiniteInputs;

    /// <summary>Whether it happened in the backward pass.</summary>
    public bool InBackward { get; } = backward;
}
