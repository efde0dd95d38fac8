using System.Diagnostics;
using Peft.Core;
using Peft.Transformers;

namespace Peft.Bench;

/// <summary>Forward + backward of a GPT-2-small-shaped model (12 × 768, random init) on the CPU, full fine-tuning
/// gradients (every parameter requires grad). Suite "gpt2-step".</summary>
internal static class ModelStepBench
{
    public static void Run(TextWriter o, int batch = 4, int seq = 128, int steps = 5, bool lora = false)
    {
        var config = HfConfig.FromJson("""{"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}""");
        CpuAllocator.EmptyCache();
        MemoryStats.ResetPeak();
        var sw = Stopwatch.StartNew();
        using var baseModel = AutoModel.Create(config);
        // LoRA: r = 8 on c_attn (PEFT's GPT-2 quick-start); gradients reach only lora_A/lora_B. Full: every parameter.
        using var peft = lora ? Peft.PeftModel.Create(baseModel, new Peft.LoraConfig { R = 8, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" }) : null;
        Peft.Transformers.PreTrainedModel model = peft?.Model ?? baseModel;
        o.WriteLine($"GPT-2 124M-shaped model built in {sw.Elapsed.TotalSeconds:F1} s ({model.CountParameters() / 1e6:F1} M parameters, {(lora ? "LoRA r=8 on c_attn: " + peft!.TrainableParametersLine() : "full fine-tuning")}); batch {batch}, seq {seq}, F32, {Environment.ProcessorCount} threads");
        var rng = new System.Random(0);
        var ids = Tensor.FromArray(Enumerable.Range(0, batch * seq).Select(_ => (long)rng.Next(50257)).ToArray(), [batch, seq]).KeepAlive();
        var fwd = new List<double>();
        var step = new List<double>();
        for (int s = 0; s < steps + 1; s++)
        {
            using var scope = Tensor.NewScope();
            model.ZeroGrad();
            sw.Restart();
            var loss = model.Forward(ids, labels: ids).Loss!;
            double f = sw.Elapsed.TotalMilliseconds;
            loss.Backward();
            double total = sw.Elapsed.TotalMilliseconds;
            if (s == 0) { o.WriteLine($"warm-up step: {total:F0} ms (loss {loss.Item():F3}, ln(50257) = {Math.Log(50257):F3})"); continue; }
            fwd.Add(f);
            step.Add(total);
        }
        ids.Dispose();
        fwd.Sort();
        step.Sort();
        double median = step[step.Count / 2];
        // FLOPs per token ≈ 6·N for forward+backward (N excluding position embeddings) plus attention 12·L·T·C.
        double n = baseModel.CountParameters() - 1024 * 768;
        // Full fine-tuning ≈ 6·N FLOPs per token; LoRA skips the weight gradients (≈ 4·N) — both plus attention.
        double flops = ((lora ? 4 : 6) * n + 12.0 * 12 * seq * 768) * batch * seq;
        o.WriteLine($"forward: median {fwd[fwd.Count / 2]:F0} ms; forward+backward: median {median:F0} ms over {steps} steps " +
                    $"({batch * seq / (median / 1e3):F0} tokens/s, ≈ {flops / (median / 1e3) / 1e9:F0} GFLOP/s)");
        o.WriteLine($"peak live tensor memory: {MemoryStats.PeakBytes / 1e9:F2} GB");
    }
}
