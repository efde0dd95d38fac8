// Issue 10, CPU half: Peft.Native against TorchSharp (libtorch CPU) in one process, measurements alternating so both
// see the same machine state. Usage:
//   bash bench/cpu/torchsharp.sh [rounds]   (default 5 rounds; supplies glibc ≥ 2.38 where the host lacks it)
// The peak-RSS rows come from two child processes of this program (one per library), each running three training steps.
using System.Diagnostics;
using Peft.Bench.TorchSharpPeer;
using Peft.Core;
using TorchSharp;
using Ours = Peft.Core.Tensor;

// TORCHSHARP_NATIVE=/path/libLibTorchSharp.so preloads TorchSharp's native shim against a libtorch found on
// LD_LIBRARY_PATH (a Python PyTorch install), as TorchSharp documents, where libtorch-cpu's own binaries cannot load.
if (Environment.GetEnvironmentVariable("TORCHSHARP_NATIVE") is { Length: > 0 } shim) System.Runtime.InteropServices.NativeLibrary.Load(shim);
if (args.Length == 2 && args[0] == "--rss") return RssChild(args[1]);
int rounds = args.Length > 0 ? int.Parse(args[0]) : 5;
int threads = Environment.ProcessorCount;
torch.set_num_threads(threads);
torch.manual_seed(0);
Console.WriteLine($"machine: {threads} logical cores; .NET {Environment.Version}; TorchSharp {typeof(torch).Assembly.GetName().Version} (libtorch CPU), {torch.get_num_threads()} threads; {rounds} alternating rounds, medians");
Console.WriteLine();

// 1. GEMM: Tensor.MatMul against torch.mm, F32.
Console.WriteLine("| GEMM (F32) | ours ms | ours GFLOP/s | TorchSharp ms | TorchSharp GFLOP/s | ours / TorchSharp (speed) |");
Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: |");
foreach (int n in new[] { 512, 1024, 2048 })
{
    using var a = Ours.Randn([n, n], seed: 1);
    using var b = Ours.Randn([n, n], seed: 2);
    using var ta = torch.randn(n, n);
    using var tb = torch.randn(n, n);
    var (ours, theirs) = Alternate(rounds * 2, () => { using var c = a.MatMul(b); }, () => { using var c = ta.mm(tb); });
    double flops = 2.0 * n * n * n;
    Console.WriteLine($"| {n}³ | {ours:F2} | {flops / ours / 1e6:F1} | {theirs:F2} | {flops / theirs / 1e6:F1} | {theirs / ours:F2}× |");
}
Console.WriteLine();

// 2. One LoRA linear layer, forward + backward (1024 tokens, 1024 → 1024, r = 16; W frozen; x wants a gradient).
{
    const int m = 1024, d = 1024, r = 16;
    using var x = Ours.Randn([m, d], seed: 3).RequiresGradient();
    using var w = Ours.Randn([d, d], seed: 4);
    using var la = Ours.Randn([r, d], seed: 5).RequiresGradient();
    using var lb = Ours.Randn([d, r], seed: 6).RequiresGradient();
    using var tx = torch.randn(m, d).requires_grad_(true);
    using var tw = torch.randn(d, d);
    using var tla = torch.randn(r, d).requires_grad_(true);
    using var tlb = torch.randn(d, r).requires_grad_(true);
    var (ours, theirs) = Alternate(rounds * 2, () =>
    {
        using var scope = Ours.NewScope();
        var y = x.Linear(w) + x.Linear(la).Linear(lb) * 2.0;
        y.Sum().Backward();
        x.ZeroGrad(); la.ZeroGrad(); lb.ZeroGrad();
    }, () =>
    {
        using var scope = torch.NewDisposeScope();
        var y = torch.nn.functional.linear(tx, tw) + torch.nn.functional.linear(torch.nn.functional.linear(tx, tla), tlb) * 2.0;
        y.sum().backward();
        tx.grad?.zero_(); tla.grad?.zero_(); tlb.grad?.zero_();
    });
    Console.WriteLine("| LoRA linear 1024 tokens × 1024 → 1024, r = 16, fwd + bwd | ours ms | TorchSharp ms | ours / TorchSharp (speed) |");
    Console.WriteLine("| --- | ---: | ---: | ---: |");
    Console.WriteLine($"| y = x·Wᵀ + 2·(x·Aᵀ)·Bᵀ, grads for x, A, B | {ours:F2} | {theirs:F2} | {theirs / ours:F2}× |");
    Console.WriteLine();
}

// 3. The model: GPT-2-shaped, 6 layers × 512, 8 heads, vocab 50257, batch 8 × seq 128 = 1024 tokens, F32, LoRA r = 8
//    (alpha 32) on c_attn, AdamW on the LoRA parameters.
{
    const int layers = 6, width = 512, heads = 8, vocab = 50257, batch = 8, seq = 128;
    using var ourModel = OurModel(layers, width, heads);
    var ourOpt = new Peft.Nn.AdamW(ourModel.Parameters().Where(p => p.RequiresGrad).ToList(), lr: 1e-4);
    using var theirModel = new TorchGpt2(layers, width, heads, vocab, 1024, rank: 8, alpha: 32);
    using var theirOpt = torch.optim.AdamW(theirModel.Trainable, lr: 1e-4);
    var rng = new System.Random(0);
    var idsArray = Enumerable.Range(0, batch * seq).Select(_ => (long)rng.Next(vocab)).ToArray();
    using var ids = Ours.FromArray(idsArray, [batch, seq]);
    using var tids = torch.tensor(idsArray, [batch, seq]);
    var (ourStep, theirStep) = AlternateTrainingSteps(rounds, ourModel, ourOpt, ids, theirModel, theirOpt, tids);
    var (ourFwd, theirFwd) = Alternate(rounds, () =>
    {
        using var scope = Ours.NewScope();
        using var _ = Autograd.NoGrad();
        ourModel.Forward(ids, labels: ids);
    }, () =>
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        theirModel.Loss(tids);
    });
    int tokens = batch * seq;
    Console.WriteLine($"| GPT-2-shaped {layers} × {width}, B = {batch}, T = {seq}, LoRA r = 8 on c_attn, F32 | ours | TorchSharp | ours / TorchSharp (speed) |");
    Console.WriteLine("| --- | ---: | ---: | ---: |");
    Console.WriteLine($"| training step (fwd + bwd + AdamW), ms | {ourStep:F0} ({tokens / (ourStep / 1e3):F0} tok/s) | {theirStep:F0} ({tokens / (theirStep / 1e3):F0} tok/s) | {theirStep / ourStep:F2}× |");
    Console.WriteLine($"| forward only (no grad), ms | {ourFwd:F0} ({tokens / (ourFwd / 1e3):F0} tok/s) | {theirFwd:F0} ({tokens / (theirFwd / 1e3):F0} tok/s) | {theirFwd / ourFwd:F2}× |");
}
var ourRss = RunChild("ours");
var theirRss = RunChild("torch");
Console.WriteLine($"| peak RSS of a process that builds the model and runs 3 steps, MB | {ourRss} | {theirRss} | {(double)theirRss / ourRss:F2}× less |");

// 4. GPT-2 124M (12 × 768, 12 heads) at B = 4, T = 64: the point other C# trainers of that model report. LoRA r = 8
//    on c_attn, and full fine-tuning (every weight trained, AdamW over all 124M); training steps only.
{
    const int layers = 12, width = 768, heads = 12, vocab = 50257, batch = 4, seq = 64;
    var rng = new System.Random(1);
    var idsArray = Enumerable.Range(0, batch * seq).Select(_ => (long)rng.Next(vocab)).ToArray();
    using var ids = Ours.FromArray(idsArray, [batch, seq]);
    using var tids = torch.tensor(idsArray, [batch, seq]);
    Console.WriteLine();
    Console.WriteLine($"| GPT-2 124M, B = {batch}, T = {seq}, F32, training step (fwd + bwd + AdamW) | ours ms | TorchSharp ms | ours / TorchSharp (speed) |");
    Console.WriteLine("| --- | ---: | ---: | ---: |");
    foreach (bool lora in new[] { true, false })
    {
        using var ourModel = lora ? OurModel(layers, width, heads) : OurFullModel(layers, width, heads);
        var ourOpt = new Peft.Nn.AdamW(ourModel.Parameters().Where(p => p.RequiresGrad).ToList(), lr: 1e-4);
        using var theirModel = new TorchGpt2(layers, width, heads, vocab, 1024, rank: lora ? 8 : 0, alpha: 32);
        using var theirOpt = torch.optim.AdamW(theirModel.Trainable, lr: 1e-4);
        var (ours, theirs) = AlternateTrainingSteps(rounds, ourModel, ourOpt, ids, theirModel, theirOpt, tids);
        Console.WriteLine($"| {(lora ? "LoRA r = 8 on c_attn" : "full fine-tuning")} | {ours:F0} ({batch * seq / (ours / 1e3):F0} tok/s) | {theirs:F0} ({batch * seq / (theirs / 1e3):F0} tok/s) | {theirs / ours:F2}× |");
    }
}
return 0;

static Peft.Transformers.PreTrainedModel OurModel(int layers, int width, int heads) =>
    Peft.PeftModel.Create(OurFullModel(layers, width, heads), new Peft.LoraConfig { R = 8, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" }).Model;

// One training step of each library (zero grads, forward with the causal-LM loss, backward, AdamW), alternating.
static (double Ours, double Theirs) AlternateTrainingSteps(int rounds, Peft.Transformers.PreTrainedModel ourModel, Peft.Nn.AdamW ourOpt, Ours ids,
    TorchGpt2 theirModel, torch.optim.Optimizer theirOpt, torch.Tensor tids) => Alternate(rounds, () =>
    {
        using var scope = Ours.NewScope();
        ourOpt.ZeroGrad();
        ourModel.Forward(ids, labels: ids).Loss!.Backward();
        ourOpt.Step();
    }, () =>
    {
        using var scope = torch.NewDisposeScope();
        theirOpt.zero_grad();
        theirModel.Loss(tids).backward();
        theirOpt.step();
    });

static Peft.Transformers.PreTrainedModel OurFullModel(int layers, int width, int heads) =>
    Peft.Transformers.AutoModel.Create(Peft.Transformers.HfConfig.FromJson($$"""{"model_type": "gpt2", "n_layer": {{layers}}, "n_embd": {{width}}, "n_head": {{heads}}, "vocab_size": 50257, "n_positions": 1024}"""));

// Median milliseconds of each body over `n` rounds; one untimed warm-up of each first; the bodies alternate, each
// after an idle gap: libtorch's OpenMP workers spin-wait after a parallel region (and ours poll for 200 µs), so
// without it one library's idle spinners could share the cores the other is being timed on. Both pay the same
// wake-up after the gap.
static (double Ours, double Theirs) Alternate(int n, Action ours, Action theirs)
{
    const int gapMs = 50;
    ours();
    theirs();
    var a = new List<double>();
    var b = new List<double>();
    var sw = new Stopwatch();
    for (int i = 0; i < n; i++)
    {
        Thread.Sleep(gapMs); sw.Restart(); ours(); a.Add(sw.Elapsed.TotalMilliseconds);
        Thread.Sleep(gapMs); sw.Restart(); theirs(); b.Add(sw.Elapsed.TotalMilliseconds);
    }
    a.Sort();
    b.Sort();
    return (a[n / 2], b[n / 2]);
}

static long RunChild(string which)
{
    var psi = new ProcessStartInfo(Environment.ProcessPath!, $"--rss {which}") { RedirectStandardOutput = true };
    // Run through the dotnet muxer, the child needs the app's path; an apphost (also a renamed one, as
    // bench/cpu/torchsharp.sh makes) is the app itself.
    if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") psi.Arguments = $"\"{typeof(TorchGpt2).Assembly.Location}\" --rss {which}";
    using var p = Process.Start(psi)!;
    var output = p.StandardOutput.ReadToEnd().Trim();
    p.WaitForExit();
    return long.Parse(output.Split('\n')[^1]);
}

static int RssChild(string which)
{
    const int layers = 6, width = 512, heads = 8, vocab = 50257, batch = 8, seq = 128;
    var rng = new System.Random(0);
    var idsArray = Enumerable.Range(0, batch * seq).Select(_ => (long)rng.Next(vocab)).ToArray();
    if (which == "ours")
    {
        using var model = OurModel(layers, width, heads);
        var opt = new Peft.Nn.AdamW(model.Parameters().Where(p => p.RequiresGrad).ToList(), lr: 1e-4);
        using var ids = Ours.FromArray(idsArray, [batch, seq]);
        for (int i = 0; i < 3; i++)
        {
            using var scope = Ours.NewScope();
            opt.ZeroGrad();
            model.Forward(ids, labels: ids).Loss!.Backward();
            opt.Step();
        }
    }
    else
    {
        torch.set_num_threads(Environment.ProcessorCount);
        using var model = new TorchGpt2(layers, width, heads, vocab, 1024, rank: 8, alpha: 32);
        using var opt = torch.optim.AdamW(model.Trainable, lr: 1e-4);
        using var ids = torch.tensor(idsArray, [batch, seq]);
        for (int i = 0; i < 3; i++)
        {
            using var scope = torch.NewDisposeScope();
            opt.zero_grad();
            model.Loss(ids).backward();
            opt.step();
        }
    }
    var hwm = File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmHWM:"));
    Console.WriteLine(long.Parse(hwm.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024);
    return 0;
}
