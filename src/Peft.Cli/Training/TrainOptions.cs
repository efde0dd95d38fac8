using Peft.Core;

namespace Peft.Cli.Training;

/// <summary>What <c>peft train --model</c> was asked to do.</summary>
internal sealed record TrainOptions(
    string Model, string Data, string? EvalData, string Method, string? Task, int R, double Alpha, string[]? TargetModules,
    int Epochs, double LearningRate, int BatchSize, int MaxLength, string Quantize, string Output, ulong Seed, double EvalFraction, int VirtualTokens = 20,
    string Schedule = "linear", int WarmupSteps = 0, int GradientAccumulation = 1, double? MaxGradNorm = 1.0,
    bool DoubleQuant = false, double Int8Threshold = 6.0, string Precision = "f32", bool GradientCheckpointing = false, Device? Device = null)
{
    /// <summary>Where the model trains (the CPU unless --device says otherwise).</summary>
    public Device Target => Device ?? Peft.Core.Device.Cpu;

    /// <summary>The autocast dtype of --dtype bf16 / f16 (null for f32).</summary>
    public DType? LowPrecision => Precision switch { "bf16" => DType.BF16, "f16" => DType.F16, _ => null };
}
