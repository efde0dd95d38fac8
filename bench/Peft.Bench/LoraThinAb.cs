using System.Diagnostics;
using Peft;
using Peft.Core;
using Peft.Core.Random;
using Peft.Nn;

namespace Peft.Bench;

/// <summary>Suite "lora-thin": one LoRA r=16 layer (1024², 512 tokens), its thin products through the thin loops or
/// the packed GEMM, alternating step by step so both see the same machine: forward and forward + backward.</summary>
internal static class LoraThinAb
{
    public static void Run(TextWriter o, int dim = 1024, int tokens = 512, int rounds = 15)
    {
        Generator.Default.ManualSeed(1);
        var linear = new Linear(dim, dim);
        linear.RequiresGrad(false);
        using var layer = new LoraLinear(linear);
        layer.UpdateLayer("a", 16, 32, 0, "false", false, false, false);
        layer.ActiveAdapters.Add("a");
        using var x = Tensor.Randn([tokens, dim], 3).RequiresGradient();
        double Forward()
        {
            var sw = Stopwatch.StartNew();
            using var _ = Autograd.NoGrad();
            using var scope = Tensor.NewScope();
            layer.Forward(x);
            return sw.Elapsed.TotalMilliseconds;
        }
        double Both()
        {
            var sw = Stopwatch.StartNew();
            using (var scope = Tensor.NewScope()) layer.Forward(x).Sum().Backward();
            double ms = sw.Elapsed.TotalMilliseconds;
            x.ZeroGrad();
            foreach (var p in layer.Parameters()) p.ZeroGrad();
            return ms;
        }
        var times = new Dictionary<(bool Thin, bool Backward), List<double>>();
        for (int r = 0; r <= rounds; r++)
            foreach (bool thin in new[] { true, false })
            {
                Peft.Core.Cpu.Gemm.ThinLoops = thin;
                double f = Forward(), b = Both();
                if (r == 0) continue;
                (times.TryGetValue((thin, false), out var lf) ? lf : times[(thin, false)] = new()).Add(f);
                (times.TryGetValue((thin, true), out var lb) ? lb : times[(thin, true)] = new()).Add(b);
            }
        Peft.Core.Cpu.Gemm.ThinLoops = true;
        double Median(bool thin, bool backward) { var l = times[(thin, backward)]; l.Sort(); return l[l.Count / 2]; }
        o.WriteLine($"LoRA r=16 on Linear {dim}→{dim}, {tokens} tokens, F32, {Environment.ProcessorCount} threads, medians of {rounds} alternating rounds");
        o.WriteLine("| thin products through | forward ms | forward + backward ms |");
        o.WriteLine("| --- | ---: | ---: |");
        o.WriteLine($"| thin loops | {Median(true, false):F1} | {Median(true, true):F1} |");
        o.WriteLine($"| packed GEMM | {Median(false, false):F1} | {Median(false, true):F1} |");
    }
}
