using System.Diagnostics;
using Peft.Core;
using Peft.Transformers;

namespace Peft.Bench;

/// <summary>
/// Mixed-adapter batches on the CPU (suite "mixed-batch"): a GPT-2-shaped model (4 × 512, random init) with N LoRA
/// adapters (r 16 on c_attn, c_proj, c_fc), a batch whose samples name the adapters in turn, timed in alternating rounds
/// against the same batch through one adapter, and through all N adapters at once — the work of the earlier scheme,
/// which ran every adapter over the whole batch and masked its rows. Inference (no gradients), F32.
/// </summary>
internal static class MixedBatchBench
{
    public static void Run(TextWriter o, int batch = 16, int seq = 64, int rounds = 5)
    {
        var config = HfConfig.FromJson("""{"model_type": "gpt2", "n_layer": 4, "n_embd": 512, "n_head": 8, "vocab_size": 8192, "n_positions": 256}""");
        var rng = new System.Random(0);
        using var ids = Tensor.FromArray(Enumerable.Range(0, batch * seq).Select(_ => (long)rng.Next(8192)).ToArray(), [batch, seq]);
        o.WriteLine($"mixed-adapter batches: GPT-2-shaped 4 × 512, batch {batch} × {seq} tokens, LoRA r 16 on c_attn/c_proj/c_fc, F32 inference, medians of {rounds} alternating rounds after a warm-up, {Environment.ProcessorCount} threads");
        o.WriteLine("| adapters N | one adapter, whole batch ms | mixed batch (each adapter on its rows) ms | all N adapters on every row ms | mixed / one |");
        o.WriteLine("| ---: | ---: | ---: | ---: | ---: |");
        foreach (int n in new[] { 2, 4, 8 })
        {
            using var baseModel = AutoModel.Create(config);
            var lora = new Peft.LoraConfig { R = 16, LoraAlpha = 32, TargetModules = ["c_attn", "c_proj", "c_fc"], TaskType = "CAUSAL_LM", InitLoraWeights = "false" };
            using var peft = Peft.PeftModel.Create(baseModel, lora, "a0");
            for (int a = 1; a < n; a++) peft.AddAdapter("a" + a, lora);
            peft.Eval();
            var names = Enumerable.Range(0, batch).Select(i => "a" + i % n).ToArray();
            var all = Enumerable.Range(0, n).Select(a => "a" + a).ToArray();
            double Time(Action f)
            {
                using var _ = Autograd.NoGrad();
                using var scope = Tensor.NewScope();
                var sw = Stopwatch.StartNew();
                f();
                return sw.Elapsed.TotalMilliseconds;
            }
            var one = new List<double>();
            var mixed = new List<double>();
            var every = new List<double>();
            for (int r = 0; r <= rounds; r++)
            {
                peft.SetAdapter("a0");
                double t1 = Time(() => peft.Forward(ids));
                double t2 = Time(() => peft.Forward(ids, adapterNames: names));
                peft.SetAdapter(all);
                double t3 = Time(() => peft.Forward(ids));
                if (r == 0) continue;   // warm-up round
                one.Add(t1);
                mixed.Add(t2);
                every.Add(t3);
            }
            static double Median(List<double> v) { v.Sort(); return v[v.Count / 2]; }
            double m1 = Median(one), m2 = Median(mixed), m3 = Median(every);
            o.WriteLine($"| {n} | {m1:F1} | {m2:F1} | {m3:F1} | {m2 / m1:F2}× |");
        }
    }
}
