using Peft.Core;

namespace Peft.Nn;

/// <summary>How a <see cref="Trainer{TBatch}"/> runs.</summary>
public sealed record TrainerOptions
{
    /// <summary>Passes over the data.</summary>
    public int Epochs { get; init; } = 1;

    /// <summary>Stop after this many optimizer steps in all (transformers' max_steps; null: run every epoch). The
    /// epochs still bound the run.</summary>
    public long? MaxSteps { get; init; }

    /// <summary>Micro-batches whose gradients are summed (each loss divided by this) before one optimizer step.</summary>
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>Clip the global gradient norm to this before each step (null: no clipping).</summary>
    public double? MaxGradNorm { get; init; }

    /// <summary>Seeds the data order of every epoch and the default generator (dropout) of a fresh run.</summary>
    public ulong Seed { get; init; } = 42;

    /// <summary>Visit the batches in a seeded random order each epoch.</summary>
    public bool Shuffle { get; init; } = true;

    /// <summary>Where checkpoints go (null: none).</summary>
    public string? CheckpointDir { get; init; }

    /// <summary>Write a checkpoint every this many optimizer steps (0: never).</summary>
    public int CheckpointEvery { get; init; }

    /// <summary>Report progress every this many optimizer steps.</summary>
    public int LogEvery { get; init; } = 10;

    /// <summary>Mixed precision: BF16 or F16 matrix products (<see cref="Autocast"/>) in the forward pass and its
    /// gradients, F32 everywhere else and in the trainable parameters; F16 adds dynamic loss scaling
    /// (<see cref="Trainer{TBatch}.Scaler"/>). Null: F32 throughout (transformers' <c>bf16</c> / <c>fp16</c> flags).</summary>
    public DType? MixedPrecision { get; init; }
}

/// <summary>One progress report: optimizer step, epoch, mean loss since the last report, learning rate of the first
/// group, seconds since the run started, examples seen (batches × accumulation when batches are examples), and the
/// F16 loss scale after the step (null without loss scaling), and the tokens trained on so far (0 unless the trainer
/// counts them).</summary>
public sealed record TrainerLog(long Step, int Epoch, double Loss, double LearningRate, double ElapsedSeconds, long MicroBatches, double? LossScale = null, long Tokens = 0)
{
    /// <summary>Training throughput since the run started (0 when tokens are not counted).</summary>
    public double TokensPerSecond => ElapsedSeconds > 0 ? Tokens / ElapsedSeconds : 0;
}

/// <summary>The loss stopped being finite: training stops at once, naming the step and — found by re-running the batch
/// under anomaly detection with the same random numbers — the first op that produced a NaN/±∞.</summary>
public sealed class TrainingDivergedException(long step, int epoch, double loss, AnomalyException? firstNonFinite = null)
    : Exception($"the loss became {loss} at optimizer step {step + 1} (epoch {epoch + 1})"
        + (firstNonFinite == null ? "" : $"; first non-finite value: {firstNonFinite.Message}")
        + "; lower the learning rate, clip gradients or check the data", firstNonFinite)
{
    /// <summary>The optimizer step being computed when the loss diverged (0-based).</summary>
    public long Step { get; } = step;

    /// <summary>The loss value (NaN or ±∞).</summary>
    public double Loss { get; } = loss;

    /// <summary>The op that produced the first non-finite value in the re-run forward pass (null when the re-run did not
    /// reproduce it, e.g. a loss function that is not deterministic).</summary>
    public string? FirstNonFiniteOp { get; } = firstNonFinite?.OpName;
}
