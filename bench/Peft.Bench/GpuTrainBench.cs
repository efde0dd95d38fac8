using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Peft.Core;
using Peft.Core.SafeTensors;
using Peft.Cuda;
using Peft.Nn;
using Peft.Transformers;

namespace Peft.Bench;

/// <summary>
/// GPT-2 124M LoRA training on the GPU, side by side with HF peft (suite "gpu-train"): trains on the model, initial
/// adapter and token ids that bench/gpu/hf_train_peer.py wrote into PEFT_TRAIN_DIR, with the peer's settings (bf16
/// autocast, AdamW lr 2e-4, no weight decay, loss read back every step), and prints tokens/s, peak device memory and
/// the loss curve next to the peer's hf.json (ratios, and the largest relative loss difference).
/// </summary>
internal static class GpuTrainBench
{
    public static void Run(TextWriter o)
    {
        var dir = Environment.GetEnvironmentVariable("PEFT_TRAIN_DIR");
        if (dir == null || !File.Exists(Path.Combine(dir, "batches.safetensors")))
        {
            o.WriteLine("gpu-train: set PEFT_TRAIN_DIR to the folder bench/gpu/hf_train_peer.py wrote (model/, adapter/, batches.safetensors)");
            return;
        }
        if (!CudaDevice.IsAvailable(out var why))
        {
            o.WriteLine($"gpu-train: needs a CUDA device ({why})");
            return;
        }
        var gpu = CudaDevice.Get(0);
        using var file = SafeTensorsFile.Open(Path.Combine(dir, "batches.safetensors"));
        using var batches = file.Load("input_ids");
        int steps = batches.Size(0), batch = batches.Size(1), seq = batches.Size(2);
        using var peft = PeftModel.FromPretrained(AutoModel.FromPretrained(Path.Combine(dir, "model")), Path.Combine(dir, "adapter"), isTrainable: true);
        peft.To(gpu.Device);
        peft.Train();
        using var optimizer = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: 2e-4, weightDecay: 0.0);
        gpu.Allocator.ResetPeak();
        var losses = new List<double>();
        var times = new List<double>();
        for (int step = 0; step < steps; step++)
        {
            using var scope = Tensor.NewScope();
            using var host = batches.Select(0, step);
            var ids = host.To(gpu.Device);
            var sw = Stopwatch.StartNew();
            Tensor loss;
            using (Autocast.Enable(DType.BF16)) loss = peft.Forward(ids, labels: ids).Loss!;
            loss.Backward();
            optimizer.Step();
            peft.ZeroGrad();
            losses.Add(loss.Item()); // reads back: the step's work has finished
            times.Add(sw.Elapsed.TotalSeconds);
        }
        var timed = times.Count > 2 ? times.Skip(2).ToList() : times;
        double tokensPerSecond = (double)batch * seq * timed.Count / timed.Sum();
        long peak = gpu.Allocator.Stats.PeakAllocatedBytes;
        var inv = CultureInfo.InvariantCulture;
        o.WriteLine(string.Create(inv, $"Peft.Native on {gpu.Name}: GPT-2 124M LoRA r=16, B={batch}, T={seq}, bf16 autocast: {tokensPerSecond:N0} tokens/s, " +
            $"{1e3 * timed.Average():F1} ms/step, peak {peak / (double)(1L << 30):F2} GiB; loss {losses[0]:F4} → {losses[^1]:F4}"));
        var hfPath = Path.Combine(dir, "hf.json");
        if (!File.Exists(hfPath)) return;
        var hf = JsonNode.Parse(File.ReadAllText(hfPath))!;
        double hfTokens = hf["tokens_per_s"]!.GetValue<double>(), hfPeak = hf["peak_bytes"]!.GetValue<double>();
        var hfLosses = hf["losses"]!.AsArray().Select(v => v!.GetValue<double>()).ToList();
        double worst = losses.Zip(hfLosses, (a, b) => Math.Abs(a - b) / Math.Abs(b)).Max();
        o.WriteLine(string.Create(inv, $"HF peft {hf["peft"]}: {hfTokens:N0} tokens/s, peak {hfPeak / (1L << 30):F2} GiB → ours / theirs: tokens/s {tokensPerSecond / hfTokens:F2}×, " +
            $"peak memory {peak / hfPeak:F2}×; loss curves differ by at most {100 * worst:F2} % (relative, over {Math.Min(losses.Count, hfLosses.Count)} steps)"));
        o.WriteLine("losses (ours / HF): " + string.Join("  ", losses.Zip(hfLosses, (a, b) => string.Create(inv, $"{a:F4}/{b:F4}"))));
        if (Environment.GetEnvironmentVariable("PEFT_TRAIN_JSON") is { Length: > 0 } json)
            File.WriteAllText(json, JsonSerializer.Serialize(new { device = gpu.Name, batch, seq, steps, tokens_per_s = tokensPerSecond, peak_bytes = peak, losses, hf_tokens_per_s = hfTokens, hf_peak_bytes = hfPeak }));
    }
}
