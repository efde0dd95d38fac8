using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Peft.Core;
using Peft.Core.Random;
using Peft.Core.SafeTensors;

namespace Peft.Nn;

/// <summary>
/// The training loop (transformers' Trainer, reduced to what fine-tuning needs): seeded epoch shuffling, gradient
/// accumulation, optional clipping, a learning-rate schedule, BF16/F16 mixed precision (F16 with dynamic loss
/// scaling), progress reports, a stop with the step named when the
/// loss stops being finite, and checkpoints — trainable parameters, optimizer state, generator state and position —
/// written atomically, from which <see cref="Resume"/> continues bit-identically on the CPU.
/// </summary>
/// <example><code>
/// var trainer = new Trainer&lt;Batch&gt;(peft, optimizer, b => peft.Forward(b.Ids, b.Mask, b.Labels).Loss!, new TrainerOptions { Epochs = 3 },
///     new LrScheduler(optimizer, LrSchedule.Linear(warmup: 10, total: 300)));
/// trainer.Logged += log => Console.WriteLine($"step {log.Step} loss {log.Loss:F4}");
/// trainer.Train(batches);
/// </code></example>
public sealed class Trainer<TBatch>
{
    private readonly Module _model;
    private readonly Optimizer _optimizer;
    private readonly Func<TBatch, Tensor> _loss;
    private readonly LrScheduler? _scheduler;
    private int _epoch, _nextBatch;
    private bool _started;

    /// <summary>Creates a trainer; <paramref name="loss"/> runs the model on one batch and returns its scalar loss.</summary>
    public Trainer(Module model, Optimizer optimizer, Func<TBatch, Tensor> loss, TrainerOptions options, LrScheduler? scheduler = null)
    {
        if (options.Epochs <= 0 || options.GradientAccumulationSteps <= 0 || options.LogEvery <= 0)
            throw new ArgumentException("Epochs, GradientAccumulationSteps and LogEvery must be positive");
        if (options.MixedPrecision is { } mp && mp is not (DType.BF16 or DType.F16))
            throw new ArgumentException($"MixedPrecision is BF16, F16 or null (F32), not {mp}");
        (_model, _optimizer, _loss, Options, _scheduler) = (model, optimizer, loss, options, scheduler);
        if (options.MixedPrecision == DType.F16) Scaler = new GradScaler();
    }

    /// <summary>The F16 loss scaler (null unless <see cref="TrainerOptions.MixedPrecision"/> is F16). Replace it before
    /// training to change its settings.</summary>
    public GradScaler? Scaler { get; set; }

    /// <summary>Counts the tokens of a batch (non-padding positions), for the tokens/s of <see cref="TrainerLog"/>; it
    /// is called right after the batch's loss, so it may read what the loss function built. Null: throughput is
    /// reported in micro-batches only.</summary>
    public Func<TBatch, long>? TokenCount { get; set; }

    /// <summary>Tokens trained on so far in this run (0 without <see cref="TokenCount"/>).</summary>
    public long Tokens { get; private set; }

    /// <summary>Optimizer steps skipped because the unscaled gradients were not finite (F16 loss scaling backs off
    /// and retries on the next batch; the learning-rate schedule does not advance).</summary>
    public long SkippedSteps { get; private set; }

    /// <summary>The options.</summary>
    public TrainerOptions Options { get; }

    /// <summary>Optimizer steps taken.</summary>
    public long GlobalStep { get; private set; }

    /// <summary>The loss of every optimizer step (mean over its micro-batches).</summary>
    public List<double> StepLosses { get; } = new();

    /// <summary>Raised every <see cref="TrainerOptions.LogEvery"/> steps and at the end.</summary>
    public event Action<TrainerLog>? Logged;

    /// <summary>Raised after each checkpoint is written, with its folder.</summary>
    public event Action<string>? Checkpointed;

    /// <summary>Raised after each optimizer step, before the gradients are cleared, with the 0-based step (where
    /// AdaLoRA's update_and_allocate runs).</summary>
    public event Action<long>? AfterOptimizerStep;

    /// <summary>Raised at the end of each epoch with its index and mean step loss (evaluate here; the model is put back
    /// in training mode afterwards).</summary>
    public event Action<int, double>? EpochEnded;

    /// <summary>The batch order of <paramref name="epoch"/>: a seeded permutation (the same on every run and resume).</summary>
    public int[] Order(int count, int epoch)
    {
        if (!Options.Shuffle) return Enumerable.Range(0, count).ToArray();
        using var draws = Tensor.Rand([count], new Generator(Options.Seed * 1_000_003UL + (ulong)epoch));
        var u = draws.ToFloatArray();
        return Enumerable.Range(0, count).OrderBy(i => u[i]).ThenBy(i => i).ToArray();
    }

    /// <summary>Trains from the current position (the start, or where <see cref="Resume"/> left off) to the end of the
    /// last epoch.</summary>
    public void Train(IReadOnlyList<TBatch> data)
    {
        if (data.Count == 0) throw new ArgumentException("no training batches");
        if (!_started && GlobalStep == 0) Generator.Default.ManualSeed(Options.Seed);
        _started = true;
        var clock = Stopwatch.StartNew();
        int accum = Options.GradientAccumulationSteps;
        double windowLoss = 0, stepLoss = 0;
        int windowSteps = 0, inStep = 0;
        long micro = 0;
        _model.Train();
        for (; _epoch < Options.Epochs; _epoch++, _nextBatch = 0)
        {
            var order = Order(data.Count, _epoch);
            int firstStepOfEpoch = StepLosses.Count;
            for (; _nextBatch < data.Count; _nextBatch++)
            {
                using (var scope = Tensor.NewScope())
                {
                    Tensor loss;
                    double value;
                    var batch = data[order[_nextBatch]];
                    using (var rng = RngReplay.Record())
                    {
                        using (Autocast.Use(Options.MixedPrecision)) loss = _loss(batch);
                        rng.Dispose();   // what this forward drew is what a diagnostic re-run must draw
                        value = loss.Item();
                        if (!double.IsFinite(value)) throw new TrainingDivergedException(GlobalStep, _epoch, value, FirstNonFinite(batch, rng));
                    }
                    // The loss scale and the accumulation divisor are one factor (1 when neither applies).
                    double factor = (Scaler?.Scale ?? 1.0) / accum;
                    using var scaled = factor == 1 ? loss.Contiguous() : loss.Mul(factor);
                    scaled.Backward();
                    stepLoss += value;
                    if (TokenCount != null) Tokens += TokenCount(batch);
                }
                inStep++;
                micro++;
                bool lastOfEpoch = _nextBatch == data.Count - 1;
                if (inStep < accum && !lastOfEpoch) continue;
                bool stepped = OptimizerStep();
                AfterOptimizerStep?.Invoke(GlobalStep);
                _optimizer.ZeroGrad();
                if (stepped) _scheduler?.Step();
                else SkippedSteps++;
                GlobalStep++;
                StepLosses.Add(stepLoss / inStep);
                windowLoss += stepLoss / inStep;
                windowSteps++;
                (stepLoss, inStep) = (0, 0);
                bool reachedMax = Options.MaxSteps is { } maxSteps && GlobalStep >= maxSteps;
                bool last = (lastOfEpoch && _epoch == Options.Epochs - 1) || reachedMax;
                if (GlobalStep % Options.LogEvery == 0 || last)
                {
                    Logged?.Invoke(new TrainerLog(GlobalStep, _epoch, windowLoss / windowSteps, _optimizer.Groups[0].Lr, clock.Elapsed.TotalSeconds, micro, Scaler?.Scale, Tokens));
                    (windowLoss, windowSteps) = (0, 0);
                }
                if (Options.CheckpointDir != null && Options.CheckpointEvery > 0 && GlobalStep % Options.CheckpointEvery == 0)
                {
                    var folder = WriteCheckpoint(Options.CheckpointDir, nextBatch: _nextBatch + 1);   // resumes after this batch
                    Checkpointed?.Invoke(folder);
                }
                if (reachedMax)
                {
                    _nextBatch++;   // the position (and a checkpoint written now) points after this batch
                    return;
                }
            }
            if (EpochEnded != null && StepLosses.Count > firstStepOfEpoch)
            {
                EpochEnded(_epoch, StepLosses.Skip(firstStepOfEpoch).Average());
                _model.Train();
            }
        }
    }

    /// <summary>
    /// The eval loop: the model in eval mode, no graph, the training precision, one scope per batch; then back to
    /// training mode if it was training. <paramref name="step"/> runs one batch; with <paramref name="numClasses"/> its
    /// logits and labels feed <see cref="ClassificationMetrics"/>.
    /// </summary>
    public EvalResult Evaluate(IReadOnlyList<TBatch> batches, Func<TBatch, EvalStep> step, int? numClasses = null)
    {
        if (batches.Count == 0) throw new ArgumentException("no evaluation batches");
        bool wasTraining = _model.IsTraining;
        _model.Eval();
        var metrics = numClasses is { } c ? new ClassificationMetrics(c) : null;
        double lossSum = 0;
        try
        {
            using var noGrad = Autograd.NoGrad();
            using var precision = Autocast.Use(Options.MixedPrecision);
            foreach (var batch in batches)
            {
                using var scope = Tensor.NewScope();
                var output = step(batch);
                lossSum += output.Loss.Item();
                if (metrics != null)
                {
                    if (output.Logits == null || output.Labels == null) throw new ArgumentException("classification metrics need the step to return logits and labels");
                    metrics.Add(output.Logits, output.Labels);
                }
            }
        }
        finally { _model.Train(wasTraining); }
        return new EvalResult(lossSum / batches.Count, metrics);
    }

    /// <summary>Re-runs a diverged batch's forward pass with the same random numbers under anomaly detection and returns
    /// what it found (null when the re-run stayed finite).</summary>
    private AnomalyException? FirstNonFinite(TBatch batch, RngReplay rng)
    {
        try
        {
            using var scope = Tensor.NewScope();
            using var replay = rng.Replay();
            using var noGrad = Autograd.NoGrad();
            using var anomaly = Autograd.DetectAnomaly();
            using (Autocast.Use(Options.MixedPrecision)) _loss(batch);
            return null;
        }
        catch (AnomalyException e) { return e; }
    }

    /// <summary>Clips and steps; with loss scaling the gradients are unscaled first (so the clip sees true values) and
    /// a step whose gradients overflowed is skipped. Returns whether the parameters changed.</summary>
    private bool OptimizerStep()
    {
        if (Scaler is not { } scaler)
        {
            if (Options.MaxGradNorm is { } max) _optimizer.ClipGradNorm(max);
            _optimizer.Step();
            return true;
        }
        scaler.Unscale(_optimizer);
        if (!scaler.FoundInf && Options.MaxGradNorm is { } clip) _optimizer.ClipGradNorm(clip);
        bool stepped = scaler.Step(_optimizer);
        scaler.Update();
        return stepped;
    }

    private IEnumerable<(string Name, Tensor Parameter)> Trainable() => _model.NamedParameters().Where(p => p.Parameter.RequiresGrad);

    /// <summary>
    /// Writes <c>checkpoint-&lt;step&gt;</c> under <paramref name="dir"/>: trainable.safetensors (the trainable
    /// parameters), optimizer.safetensors and trainer_state.json (step, epoch, next batch, generator seed and offset).
    /// The folder is assembled under a temporary name and renamed into place, so a checkpoint is whole or absent.
    /// Call it between optimizer steps (gradients are not saved).
    /// </summary>
    public string SaveCheckpoint(string dir) => WriteCheckpoint(dir, _nextBatch);

    private string WriteCheckpoint(string dir, int nextBatch)
    {
        Directory.CreateDirectory(dir);
        var final = Path.Combine(dir, "checkpoint-" + GlobalStep.ToString(CultureInfo.InvariantCulture));
        var temp = final + ".tmp-" + Guid.NewGuid().ToString("N");
        Directory.CreateDirectory(temp);
        try
        {
            SafeTensorsWriter.Save(Path.Combine(temp, "trainable.safetensors"), Trainable().ToDictionary(p => p.Name, p => p.Parameter));
            SafeTensorsWriter.Save(Path.Combine(temp, "optimizer.safetensors"), _optimizer.StateDict());
            var state = new JsonObject
            {
                ["global_step"] = GlobalStep, ["epoch"] = _epoch, ["next_batch"] = nextBatch,
                ["rng_seed"] = Generator.Default.Seed.ToString(CultureInfo.InvariantCulture), ["rng_offset"] = Generator.Default.Offset,
                ["scheduler_step"] = _scheduler?.LastStep, ["seed"] = Options.Seed.ToString(CultureInfo.InvariantCulture),
                ["skipped_steps"] = SkippedSteps,
            };
            if (Scaler != null) state["grad_scaler"] = new JsonObject { ["scale"] = Scaler.Scale, ["growth_tracker"] = Scaler.GrowthTracker };
            File.WriteAllText(Path.Combine(temp, "trainer_state.json"), state.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
            if (Directory.Exists(final)) Directory.Delete(final, true);
            Directory.Move(temp, final);
            return final;
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, true);
            throw;
        }
    }

    /// <summary>Restores a checkpoint written by <see cref="SaveCheckpoint"/> into this trainer's model, optimizer and
    /// schedule; the next <see cref="Train"/> continues with the batch after it, exactly as the original run did.</summary>
    public void Resume(string checkpoint)
    {
        var statePath = Path.Combine(checkpoint, "trainer_state.json");
        if (!File.Exists(statePath)) throw new FileNotFoundException($"'{checkpoint}' is not a checkpoint (no trainer_state.json)", statePath);
        var state = JsonNode.Parse(File.ReadAllText(statePath))!.AsObject();
        if (state["seed"]!.GetValue<string>() != Options.Seed.ToString(CultureInfo.InvariantCulture))
            throw new InvalidOperationException($"checkpoint '{checkpoint}' was made with seed {state["seed"]}, this trainer has {Options.Seed}: the data order would differ");
        var parameters = Trainable().ToDictionary(p => p.Name, p => p.Parameter);
        using (var st = SafeTensorsFile.Open(Path.Combine(checkpoint, "trainable.safetensors")))
        {
            var missing = parameters.Keys.Where(k => !st.Contains(k)).ToList();
            if (missing.Count > 0) throw new InvalidOperationException($"checkpoint '{checkpoint}' lacks trainable parameters: {string.Join(", ", missing.Take(5))}");
            using var _ = Autograd.NoGrad();
            foreach (var (name, p) in parameters)
            {
                using var saved = st.Load(name);
                p.RequiresGrad = false;
                p.CopyFrom(saved);
                p.RequiresGrad = true;
            }
        }
        using (var st = SafeTensorsFile.Open(Path.Combine(checkpoint, "optimizer.safetensors")))
        {
            var tensors = st.Tensors.Select(t => t.Name).ToDictionary(n => n, n => st.Load(n));
            try { _optimizer.LoadStateDict(tensors); }
            finally { foreach (var t in tensors.Values) t.Dispose(); }
        }
        GlobalStep = state["global_step"]!.GetValue<long>();
        _epoch = state["epoch"]!.GetValue<int>();
        _nextBatch = state["next_batch"]!.GetValue<int>();
        Generator.Default.ManualSeed(ulong.Parse(state["rng_seed"]!.GetValue<string>(), CultureInfo.InvariantCulture));
        Generator.Default.Offset = state["rng_offset"]!.GetValue<long>();
        if (_scheduler != null && state["scheduler_step"] is JsonValue s) _scheduler.SetStep(s.GetValue<long>());
        SkippedSteps = state["skipped_steps"] is JsonValue skipped ? skipped.GetValue<long>() : 0;
        if (Scaler != null)
        {
            if (state["grad_scaler"] is not JsonObject gs)
                throw new InvalidOperationException($"checkpoint '{checkpoint}' has no grad_scaler state, but this trainer scales its F16 loss");
            Scaler.Restore(gs["scale"]!.GetValue<double>(), gs["growth_tracker"]!.GetValue<int>());
        }
        _started = true;
    }
}
