using System.Diagnostics;
using Peft;
using Peft.Core;
using Peft.Core.Random;
using Peft.Nn;

namespace Peft.Bench;

/// <summary>
/// One adapted linear layer per method on the CPU: forward, and forward + backward (gradients for the adapter only),
/// next to the bare base layer — the per-layer overhead each method adds, and LoKr's factored forward against
/// multiplying by its materialised Kronecker product.
/// </summary>
internal static class TunerLayerBench
{
    private static double MedianMs(Action step, int repeats)
    {
        step();   // warm-up: JIT and first touch
        var times = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            step();
            times.Add(sw.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    public static void Run(TextWriter o, int dim = 1024, int tokens = 512, int repeats = 7)
    {
        o.WriteLine($"tuner layers: Linear {dim}→{dim}, {tokens} tokens, F32, median of {repeats} after a warm-up, {Environment.ProcessorCount} threads");
        o.WriteLine("| layer | trainable | forward ms | forward + backward ms |");
        o.WriteLine("| --- | ---: | ---: | ---: |");
        var cases = new (string Name, Func<Linear, TunerLayer?> Make)[]
        {
            ("base Linear (no adapter)", _ => null),
            ("LoRA r=16", l => { var t = new LoraLinear(l); t.UpdateLayer("a", 16, 32, 0, "false", false, false, false); return t; }),
            ("DoRA r=16", l => { var t = new LoraLinear(l); t.UpdateLayer("a", 16, 32, 0, "false", false, false, true); return t; }),
            ("LoHa r=16", l => { var t = new LoHaLayer(l); t.UpdateLayer("a", 16, 32, 0, 0, false); return t; }),
            ("LoKr r=16 (factored forward)", l => { var t = new LoKrLayer(l); t.UpdateLayer("a", 16, 32, 0, 0, false, "false", false, -1); return t; }),
            ("(IA)³", l => { var t = new IA3Layer(l, false); t.UpdateLayer("a", false); return t; }),
            ("OFT block 32", l => { var t = new OftLayer(l); t.UpdateLayer("a", 0, 32, false, false, 0, true, 5, false); return t; }),
            ("BOFT block 8, 2 factors", l => { var t = new BoftLayer(l); t.UpdateLayer("a", 8, 0, 2, 0, false); return t; }),
        };
        foreach (var (name, make) in cases)
        {
            Generator.Default.ManualSeed(1);
            var linear = new Linear(dim, dim);
            linear.RequiresGrad(false);
            using var layer = make(linear);
            layer?.ActiveAdapters.Add("a");
            IUnaryModule module = layer != null ? layer : linear;
            using var x = Tensor.Randn([tokens, dim], 3).RequiresGradient();   // the input wants a gradient, as inside a model
            long trainable = layer?.Parameters().Where(p => p.RequiresGrad).Sum(p => p.NumEl) ?? 0;
            double fwd = MedianMs(() =>
            {
                using var _ = Autograd.NoGrad();
                using var scope = Tensor.NewScope();
                module.Forward(x);
            }, repeats);
            double both = MedianMs(() =>
            {
                using var scope = Tensor.NewScope();
                var y = module.Forward(x);
                y.Sum().Backward();
                x.ZeroGrad();
                if (layer != null) foreach (var p in layer.Parameters()) p.ZeroGrad();
            }, repeats);
            o.WriteLine($"| {name} | {trainable:N0} | {fwd:F1} | {both:F1} |");
            if (layer is not LoKrLayer lokr) { if (layer == null) linear.Dispose(); continue; }
            // The same ΔW applied by materialising kron(W1, W2) and multiplying by it.
            double dense = MedianMs(() =>
            {
                using var _ = Autograd.NoGrad();
                using var scope = Tensor.NewScope();
                using var y = linear.Forward(x);
                using var delta = lokr.DeltaWeight("a");
                using var change = x.Linear(delta);
                y.Add(change);
            }, repeats);
            o.WriteLine($"| LoKr r=16 (materialised ΔW, for comparison) | | {dense:F1} | |");
        }
    }
}
