using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Peft.Core;
using Peft.Core.Random;
using Peft.Core.SafeTensors;
using Peft.Nn;
using Peft.Transformers;

namespace Peft.Cli.Training;

/// <summary>
/// <c>peft train --model &lt;folder&gt; --data &lt;file&gt;</c>: loads the model for the task, wraps it with the chosen
/// PEFT method, trains with AdamW, evaluates before and after (accuracy for classification, loss and perplexity for
/// generation tasks), saves the adapter in the Hugging Face PEFT format and the loss curve as loss.png.
/// </summary>
internal static class TrainRunner
{
    public static int Run(TrainOptions o, IProgressView view, TextWriter stdout)
    {
        var sw = Stopwatch.StartNew();
        var inv = CultureInfo.InvariantCulture;
        if (!Directory.Exists(o.Model)) throw new DirectoryNotFoundException($"no model folder at '{o.Model}'");
        var hf = HfConfig.Load(o.Model);
        string task = o.Task ?? DefaultTask(hf);
        var examples = TrainingData.Load(o.Data, task);
        var (train, eval) = Split(examples, o.EvalData == null ? null : TrainingData.Load(o.EvalData, task), o.EvalFraction, o.Seed);
        var labels = LabelNames(task, hf, examples.Concat(eval).ToList());
        var tokenizer = AutoTokenizer.FromPretrained(o.Model);
        tokenizer.PadTokenId ??= tokenizer.EosTokenId;   // GPT-2 and LLaMA tokenizers ship without a pad token
        var batcher = new TaskBatcher(task, tokenizer, o.MaxLength, labels);
        stdout.WriteLine($"model: {o.Model} ({hf.ModelType}), task {task}, method {o.Method}; data: {train.Count} training / {eval.Count} evaluation examples");

        Generator.Default.ManualSeed(o.Seed);
        var model = LoadModel(o.Model, hf, task, labels);
        if (o.Quantize != "none")
        {
            var q = new QuantizationConfig { Method = o.Quantize, DoubleQuant = o.DoubleQuant, Int8Threshold = o.Int8Threshold };
            string how = o.Quantize == "nf4" ? (o.DoubleQuant ? ", double-quantized absmax" : "") : string.Create(inv, $", outlier threshold {o.Int8Threshold}");
            stdout.WriteLine($"quantized {Quantize.Linears(model, q).Count} linear layers to {o.Quantize}{how} (frozen base)");
        }
        if (o.GradientCheckpointing) stdout.WriteLine($"gradient checkpointing: {model.GradientCheckpointingEnable()} layer stacks recompute their layers in backward");
        int stepsPerEpoch = (train.Count + o.BatchSize - 1) / o.BatchSize;
        int optimizerSteps = o.Epochs * ((stepsPerEpoch + o.GradientAccumulation - 1) / o.GradientAccumulation);
        var config = MethodConfigs.Create(o.Method, task, o.R, o.Alpha, o.TargetModules, optimizerSteps, o.VirtualTokens, model.NumLayers);
        using var peft = PeftModel.Create(model, config);
        stdout.WriteLine(peft.TrainableParametersLine());
        if (o.LowPrecision is { } low)
        {
            long saved = MixedPrecision.StoreFrozenWeights(peft, low);
            stdout.WriteLine(string.Create(inv, $"mixed precision {o.Precision}: frozen weight matrices stored in {o.Precision} ({saved / 1048576.0:F1} MiB saved), matmuls in {o.Precision}, adapters and optimizer in f32{(low == DType.F16 ? ", dynamic loss scaling" : "")}"));
        }
        var device = o.Target;
        if (device.Type != DeviceType.Cpu)
        {
            peft.To(device); // before the optimizer, whose state is made like the parameters
            string name = Peft.Cuda.CudaDevice.IsAvailable(out _) ? $" ({Peft.Cuda.CudaDevice.Get(device.Index).Name})" : "";
            stdout.WriteLine($"device: {device}{name}");
        }
        using var optimizer = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: o.LearningRate, weightDecay: 0.0);
        var scheduler = new LrScheduler(optimizer, LrSchedule.ByName(o.Schedule, o.WarmupSteps, optimizerSteps));
        var batches = train.Chunk(o.BatchSize).ToList();
        var tokens = new Dictionary<Example[], long>(ReferenceEqualityComparer.Instance);
        // The batch's tensors live in the trainer's per-step scope, which ends after backward (the embedding's gradient reads the ids).
        var trainer = new Trainer<Example[]>(peft, optimizer, chunk =>
        {
            var batch = batcher.Make(chunk).On(device);
            if (!tokens.ContainsKey(chunk)) tokens[chunk] = batch.Tokens();
            return peft.Forward(batch.InputIds, batch.AttentionMask, batch.Labels).Loss!;
        }, new TrainerOptions { Epochs = o.Epochs, GradientAccumulationSteps = o.GradientAccumulation, MaxGradNorm = o.MaxGradNorm, Seed = o.Seed, LogEvery = 1, MixedPrecision = o.LowPrecision }, scheduler)
        { TokenCount = chunk => tokens[chunk] };
        var evalBatches = eval.Chunk(o.BatchSize).ToList();
        var before = Evaluate(trainer, batcher, peft, evalBatches);
        stdout.WriteLine($"before training: {Describe(before, inv)}");
        var evalLosses = new List<(int, double)> { (0, before.Loss) };
        if (config is AdaLoraConfig) trainer.AfterOptimizerStep += s => peft.UpdateAndAllocate((int)s);
        trainer.Logged += log => view.Step(log.Epoch + 1, log.Loss, log.TokensPerSecond);
        trainer.EpochEnded += (epoch, meanLoss) =>
        {
            var m = Evaluate(trainer, batcher, peft, evalBatches);
            evalLosses.Add(((int)trainer.GlobalStep, m.Loss));
            view.EpochDone(epoch + 1, o.Epochs, meanLoss, Describe(m, inv));
        };
        view.Start(optimizerSteps);
        trainer.Train(batches);
        var stepLosses = trainer.StepLosses;
        view.Stop();
        var after = Evaluate(trainer, batcher, peft, evalBatches);
        stdout.WriteLine($"after training: {Describe(after, inv)}");
        stdout.WriteLine(string.Create(inv, $"throughput: {trainer.Tokens:N0} tokens in {trainer.GlobalStep} steps"));

        Directory.CreateDirectory(o.Output);
        peft.SavePretrained(o.Output);
        long bytes = new FileInfo(Path.Combine(o.Output, PeftModel.WeightsFileName)).Length;
        stdout.WriteLine($"adapter saved: {o.Output} (adapter_model.safetensors {bytes / 1024.0:F1} KiB + adapter_config.json, Hugging Face PEFT format)");
        var png = Path.Combine(o.Output, "loss.png");
        LossPlot.Save(png, stepLosses, evalLosses, $"peft train — {o.Method}, {hf.ModelType}, {task}");
        stdout.WriteLine($"loss curve: {png}");
        stdout.WriteLine($"done in {sw.Elapsed.TotalSeconds.ToString("F1", inv)} s");
        return 0;
    }

    /// <summary>The task named by config.json's architectures (AutoModelFor* naming).</summary>
    private static string DefaultTask(HfConfig hf)
    {
        var arch = (hf.Json["architectures"] as JsonArray)?.FirstOrDefault()?.GetValue<string>() ?? "";
        if (arch.EndsWith("ForSequenceClassification", StringComparison.Ordinal)) return "seq-cls";
        if (arch.EndsWith("ForTokenClassification", StringComparison.Ordinal)) return "token-cls";
        if (arch.EndsWith("ForConditionalGeneration", StringComparison.Ordinal)) return "seq2seq";
        if (arch.EndsWith("ForCausalLM", StringComparison.Ordinal) || arch.EndsWith("LMHeadModel", StringComparison.Ordinal)) return "causal-lm";
        throw new ArgumentException($"cannot tell the task from config.json's architectures ('{arch}'): pass --task causal-lm|seq-cls|token-cls|seq2seq");
    }

    private static (List<Example> Train, List<Example> Eval) Split(List<Example> all, List<Example>? eval, double fraction, ulong seed)
    {
        if (eval != null) return (all, eval);
        if (all.Count < 2) return (all, all);
        var order = Enumerable.Range(0, all.Count).ToArray();
        new System.Random((int)(seed % int.MaxValue) + 1).Shuffle(order);
        int n = Math.Clamp((int)Math.Round(all.Count * fraction), 1, all.Count - 1);
        return (order.Skip(n).Select(i => all[i]).ToList(), order.Take(n).Select(i => all[i]).ToList());
    }

    /// <summary>Class names: config.json's id2label when it covers the data's labels, else the data's labels sorted
    /// (numerically when they are all integers).</summary>
    private static List<string> LabelNames(string task, HfConfig hf, List<Example> examples)
    {
        if (task is not ("seq-cls" or "token-cls")) return [];
        var seen = (task == "seq-cls" ? examples.Select(e => e.Label!) : examples.SelectMany(e => e.Tags!)).Distinct().ToList();
        if (hf.Json["id2label"] is JsonObject map)
        {
            var names = map.OrderBy(kv => int.Parse(kv.Key, CultureInfo.InvariantCulture)).Select(kv => kv.Value!.GetValue<string>()).ToList();
            if (seen.All(names.Contains)) return names;
            var ids = Enumerable.Range(0, names.Count).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList();
            if (seen.All(ids.Contains)) return ids;
        }
        return seen.All(s => int.TryParse(s, out _)) ? seen.OrderBy(s => int.Parse(s, CultureInfo.InvariantCulture)).ToList() : seen.Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>The model with the task's head sized to the labels (a head absent from the checkpoint starts fresh,
    /// as transformers' from_pretrained(num_labels=...)).</summary>
    private static PreTrainedModel LoadModel(string folder, HfConfig hf, string task, List<string> labels)
    {
        int configured = hf.NumLabels;
        if (labels.Count > 0)
        {
            hf.Json["num_labels"] = labels.Count;
            hf.Json["id2label"] = new JsonObject(labels.Select((l, i) => KeyValuePair.Create(i.ToString(CultureInfo.InvariantCulture), (JsonNode?)l)));
            hf.Json["label2id"] = new JsonObject(labels.Select((l, i) => KeyValuePair.Create(l, (JsonNode?)i)));
        }
        var modelTask = task switch
        {
            "causal-lm" => ModelTask.CausalLM, "seq-cls" => ModelTask.SequenceClassification,
            "token-cls" => ModelTask.TokenClassification, _ => ModelTask.Seq2SeqLM,
        };
        var model = AutoModel.Create(hf, modelTask);
        try
        {
            using var checkpoint = SafeTensorsCheckpoint.Open(folder);
            AutoModel.LoadWeights(model, new CheckpointStateSource(checkpoint), hf.Path);
            return model;
        }
        catch (StateDictException) when (labels.Count > 0 && labels.Count != configured)
        {
            model.Dispose();
            throw new ArgumentException($"the data has {labels.Count} labels ({string.Join(", ", labels.Take(8))}) but the checkpoint's classification head has {configured}: use the model's labels or a checkpoint without a task head");
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private static string Describe(EvalResult m, IFormatProvider f) => m.Classification is { } c
        ? string.Format(f, "loss {0:F4}, accuracy {1:P1}, macro-F1 {2:F3}", m.Loss, c.Accuracy, c.MacroF1)
        : string.Format(f, "loss {0:F4}, perplexity {1:F2}", m.Loss, m.Perplexity);

    /// <summary>The trainer's eval loop over the evaluation batches: accuracy and F1 for classification, loss and
    /// perplexity otherwise.</summary>
    private static EvalResult Evaluate(Trainer<Example[]> trainer, TaskBatcher batcher, PeftModel peft, List<Example[]> batches)
    {
        bool classification = batcher.Task is "seq-cls" or "token-cls";
        var device = peft.Parameters().First().Device;
        return trainer.Evaluate(batches, chunk =>
        {
            var batch = batcher.Make(chunk).On(device);
            var output = peft.Forward(batch.InputIds, batch.AttentionMask, batch.Labels);
            return new EvalStep(output.Loss!, output.Logits, batch.Labels);
        }, classification ? batcher.LabelNames.Count : null);
    }
}
