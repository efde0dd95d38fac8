using System.Diagnostics;
using Peft.Core;
using Peft.Nn;
using Peft.Transformers;

namespace Peft.Bench;

/// <summary>
/// Suite "training-memory": what the memory features of issue 9 buy on a GPT-2-shaped model (6 × 512, vocab 50257,
/// LoRA r = 8 on c_attn, B = 4, T = 128): bytes per weight of the frozen matrices in each storage (f32, bf16, int8,
/// NF4, NF4 double-quantized), and the LoRA step's time, the model's live tensor bytes and the step's peak above them —
/// plain, with gradient checkpointing, with bf16 mixed precision and on an NF4 base.
/// </summary>
internal static class TrainingMemoryBench
{
    private const string Config = """{"model_type": "gpt2", "n_layer": 6, "n_embd": 512, "n_head": 8, "vocab_size": 50257, "n_positions": 1024}""";
    private const int Batch = 4, Seq = 128, Rounds = 5;

    private sealed record Variant(string Name, string? Quantize, bool DoubleQuant, DType? Precision, bool Checkpointing);

    public static void Run(TextWriter o)
    {
        o.WriteLine($"GPT-2-shaped 6 × 512, vocab 50257, LoRA r=8 on c_attn, batch {Batch}, seq {Seq}, {Environment.ProcessorCount} threads, medians of {Rounds} interleaved rounds (one step of each variant per round) after a warm-up");
        o.WriteLine();
        o.WriteLine($"{"frozen matrices stored as",-28} {"bytes",14} {"bits/weight",12}");
        foreach (var (name, quantize, dq, low) in new (string, string?, bool, DType?)[] { ("f32", null, false, null), ("bf16", null, false, DType.BF16), ("int8 (LLM.int8)", "int8", false, null), ("nf4", "nf4", false, null), ("nf4, double-quantized", "nf4", true, null) })
        {
            using var peft = Build(quantize, dq, low, checkpointing: false, out long weights);
            long bytes = MatrixBytes(peft);
            o.WriteLine($"{name,-28} {bytes,14:N0} {bytes * 8.0 / weights,12:F3}");
        }
        o.WriteLine();
        o.WriteLine($"{"LoRA step",-34} {"fwd+bwd ms",11} {"tokens/s",9} {"model MB",9} {"step peak MB",13}");
        Variant[] variants =
        [
            new("f32", null, false, null, false),
            new("f32 + gradient checkpointing", null, false, null, true),
            new("bf16 (autocast + bf16 storage)", null, false, DType.BF16, false),
            new("nf4 base (f32 compute)", "nf4", true, null, false),
        ];
        // Every variant's model lives through the run and the rounds alternate, so machine drift hits them all alike.
        var models = variants.Select(v => Build(v.Quantize, v.DoubleQuant, v.Precision, v.Checkpointing, out _)).ToArray();
        var rng = new System.Random(0);
        using var ids = Tensor.FromArray(Enumerable.Range(0, Batch * Seq).Select(_ => (long)rng.Next(50257)).ToArray(), [Batch, Seq]);
        var times = variants.Select(_ => new List<double>()).ToArray();
        var peaks = new long[variants.Length];
        for (int round = 0; round <= Rounds; round++)
            for (int i = 0; i < variants.Length; i++)
            {
                var (ms, peak) = Step(models[i], variants[i].Precision, ids);
                if (round == 0) continue;   // warm-up
                times[i].Add(ms);
                peaks[i] = Math.Max(peaks[i], peak);
            }
        for (int i = 0; i < variants.Length; i++)
        {
            times[i].Sort();
            double ms = times[i][times[i].Count / 2];
            o.WriteLine($"{variants[i].Name,-34} {ms,11:F0} {Batch * Seq / (ms / 1e3),9:F0} {ModelBytes(models[i]) / 1e6,9:F0} {peaks[i] / 1e6,13:F0}");
            models[i].Dispose();
        }
    }

    /// <summary>The model with LoRA, its frozen matrices stored as asked; <paramref name="weights"/> counts their elements.</summary>
    private static PeftModel Build(string? quantize, bool doubleQuant, DType? low, bool checkpointing, out long weights)
    {
        var model = AutoModel.Create(HfConfig.FromJson(Config));
        weights = model.NamedModules().Where(m => m.Module is Conv1D).Sum(m => ((Conv1D)m.Module).Weight.NumEl);
        if (quantize != null) Quantize.Linears(model, new QuantizationConfig { Method = quantize, DoubleQuant = doubleQuant });
        if (checkpointing) model.GradientCheckpointingEnable();
        var peft = PeftModel.Create(model, new LoraConfig { R = 8, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
        if (low is { } dtype) MixedPrecision.StoreFrozenWeights(peft, dtype);
        return peft;
    }

    /// <summary>Bytes of the frozen transformer matrices (Conv1D weights, or their quantized buffers), biases excluded.</summary>
    private static long MatrixBytes(Module model) =>
        model.NamedModules().Sum(m => m.Module switch
        {
            Conv1D c when !c.Weight.RequiresGrad => c.Weight.NumEl * c.Weight.DType.SizeOf(),
            QuantizedLinear q => q.NamedBuffers().Sum(b => b.Buffer.NumEl * b.Buffer.DType.SizeOf()),
            _ => 0L,
        });

    /// <summary>Bytes of a model's distinct parameters and buffers.</summary>
    private static long ModelBytes(Module model) =>
        model.Parameters().Concat(model.NamedBuffers().Select(b => b.Buffer)).Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>()
            .Sum(t => t.NumEl * t.DType.SizeOf());

    /// <summary>One LoRA step: its time and its peak live tensor bytes above those live before it.</summary>
    private static (double Ms, long PeakBytes) Step(PeftModel peft, DType? precision, Tensor ids)
    {
        peft.Train();
        using var scope = Tensor.NewScope();
        peft.ZeroGrad();
        long before = MemoryStats.LiveBytes;
        MemoryStats.ResetPeak();
        var sw = Stopwatch.StartNew();
        Tensor loss;
        using (Autocast.Use(precision)) loss = peft.Forward(ids, labels: ids).Loss!;
        loss.Backward();
        return (sw.Elapsed.TotalMilliseconds, MemoryStats.PeakBytes - before);
    }
}
