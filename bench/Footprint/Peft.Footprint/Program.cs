// A minimal LoRA trainer, the app whose shipped size and start-up time the footprint suite measures (issue 10):
// GPT-2-shaped, 6 layers × 512, vocab 50257, random weights; LoRA r = 8 (alpha 32) on c_attn; AdamW; batch 8 × 128
// tokens. Prints "first-step <ms>" (from process start, read from /proc so the runtime's own start-up counts) after
// the first optimizer step, then "done <steps> <loss> peak-rss-mb <MB>". Usage: Peft.Footprint [steps=3] [--device cuda]
// [--tiny] (--tiny: 2 layers × 64, vocab 1000, batch 2 × 16 — a smoke test of the published build, e.g. on the host
// emulation of CUDA, where the full model would take hours).
using System.Diagnostics;
using Peft.Core;

int steps = args.Length > 0 && int.TryParse(args[0], out int s) ? s : 3;
var device = Device.Cpu;
#if WITH_CUDA
if (args.Contains("--device") && args.Contains("cuda"))
{
    if (!Peft.Cuda.CudaDevice.IsAvailable(out var why)) { Console.Error.WriteLine($"no CUDA device: {why}"); return 3; }
    device = Device.Cuda(0);
}
#endif
bool tiny = args.Contains("--tiny");
int batch = tiny ? 2 : 8, seq = tiny ? 16 : 128, vocab = tiny ? 1000 : 50257;
var config = Peft.Transformers.HfConfig.FromJson(tiny
    ? """{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 1000, "n_positions": 64}"""
    : """{"model_type": "gpt2", "n_layer": 6, "n_embd": 512, "n_head": 8, "vocab_size": 50257, "n_positions": 1024}""");
var peft = Peft.PeftModel.Create(Peft.Transformers.AutoModel.Create(config), new Peft.LoraConfig { R = 8, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
using var model = peft.Model;
if (device != Device.Cpu) model.To(device);
var optimizer = new Peft.Nn.AdamW(model.Parameters().Where(p => p.RequiresGrad).ToList(), lr: 1e-4);
var rng = new Random(0);
using var ids = Tensor.FromArray(Enumerable.Range(0, batch * seq).Select(_ => (long)rng.Next(vocab)).ToArray(), [batch, seq]).To(device);
double loss = 0;
for (int step = 0; step < steps; step++)
{
    using var scope = Tensor.NewScope();
    optimizer.ZeroGrad();
    var output = model.Forward(ids, labels: ids);
    output.Loss!.Backward();
    optimizer.Step();
    loss = output.Loss.ToDoubleArray()[0];
    if (step == 0) Console.WriteLine($"first-step {MillisecondsSinceProcessStart():F0}");
}
// Peak resident memory of the whole process (VmHWM), as the CPU bench's RSS rows read it.
long peakKb = long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmHWM:")).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
Console.WriteLine($"done {steps} {loss:F4} peak-rss-mb {peakKb / 1024}");
return 0;

// Process start from /proc/self/stat (field 22, clock ticks after boot) against /proc/uptime: includes the host's
// exec and the runtime's start-up, which Process.StartTime also reads but with 10 ms granularity either way.
static double MillisecondsSinceProcessStart()
{
    string stat = File.ReadAllText("/proc/self/stat");
    var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
    double startTicks = double.Parse(fields[19], System.Globalization.CultureInfo.InvariantCulture); // field 22 overall
    double uptime = double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
    return (uptime - startTicks / 100.0) * 1000;
}
