// Peft.Footprint's trainer with TorchSharp: GPT-2-shaped 6 × 512, vocab 50257, LoRA r = 8 (alpha 32) on c_attn, AdamW,
// batch 8 × 128 tokens; prints "first-step <ms since process start>" after the first optimizer step, then
// "done <steps> <loss> peak-rss-mb <MB>". Usage: Peft.Footprint.TorchSharp [steps=3]
using Peft.Bench.TorchSharpPeer;
using TorchSharp;

// TORCHSHARP_NATIVE=/path/libLibTorchSharp.so: load TorchSharp's shim against a libtorch on LD_LIBRARY_PATH (as the
// CPU bench does on machines whose glibc the packaged libtorch cannot load).
if (Environment.GetEnvironmentVariable("TORCHSHARP_NATIVE") is { Length: > 0 } shim) System.Runtime.InteropServices.NativeLibrary.Load(shim);
int steps = args.Length > 0 && int.TryParse(args[0], out int s) ? s : 3;
const int batch = 8, seq = 128, vocab = 50257;
torch.manual_seed(0);
using var model = new TorchGpt2(6, 512, 8, vocab, 1024, rank: 8, alpha: 32);
using var optimizer = torch.optim.AdamW(model.Trainable, lr: 1e-4);
var rng = new Random(0);
using var ids = torch.tensor(Enumerable.Range(0, batch * seq).Select(_ => (long)rng.Next(vocab)).ToArray(), [batch, seq]);
double loss = 0;
for (int step = 0; step < steps; step++)
{
    using var scope = torch.NewDisposeScope();
    optimizer.zero_grad();
    var output = model.Loss(ids);
    output.backward();
    optimizer.step();
    loss = output.item<float>();
    if (step == 0) Console.WriteLine($"first-step {MillisecondsSinceProcessStart():F0}");
}
// Peak resident memory of the whole process (VmHWM), as the CPU bench's RSS rows read it.
long peakKb = long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmHWM:")).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
Console.WriteLine($"done {steps} {loss:F4} peak-rss-mb {peakKb / 1024}");
return 0;

// As Peft.Footprint: process start from /proc/self/stat against /proc/uptime.
static double MillisecondsSinceProcessStart()
{
    string stat = File.ReadAllText("/proc/self/stat");
    var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
    double startTicks = double.Parse(fields[19], System.Globalization.CultureInfo.InvariantCulture);
    double uptime = double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
    return (uptime - startTicks / 100.0) * 1000;
}
