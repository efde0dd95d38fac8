using System.Diagnostics;
using Peft.Core;

namespace Peft.Bench;

/// <summary>GFLOP/s of the F32 GEMM (via Tensor.MatMul, what the library really runs) against the measured FMA peak.</summary>
internal static class GemmBench
{
    private record Shape(string Name, int M, int N, int K, bool TransB = false, bool Bf16 = false, bool TransA = false);

    public static void Run(TextWriter o)
    {
        int threads = Environment.ProcessorCount;
        double peak1 = FmaPeak.Gflops(1);
        double peakAll = FmaPeak.Gflops(threads);
        o.WriteLine($"machine: {Environment.ProcessorCount} logical cores, {(FmaPeak.Wide ? "AVX-512" : "AVX2")} micro-kernel, .NET {Environment.Version}");
        o.WriteLine($"measured FMA peak: {peak1:F1} GFLOP/s on 1 thread, {peakAll:F1} GFLOP/s on {threads} threads (% of peak below is against the {threads}-thread figure)");
        o.WriteLine();
        o.WriteLine("| shape (M×N×K) | what | ms | GFLOP/s | % of peak |");
        o.WriteLine("| --- | --- | ---: | ---: | ---: |");
        var shapes = new[]
        {
            new Shape("256³", 256, 256, 256), new Shape("512³", 512, 512, 512),
            new Shape("1024³", 1024, 1024, 1024), new Shape("2048³", 2048, 2048, 2048),
            new Shape("4096×768×768", 4096, 768, 768, TransB: true),
            new Shape("4096×3072×768", 4096, 3072, 768, TransB: true), new Shape("4096×3072×768 NN", 4096, 3072, 768),
            new Shape("4096×768×3072", 4096, 768, 3072, TransB: true),
            new Shape("4096×8×768", 4096, 8, 768, TransB: true), new Shape("4096×768×8", 4096, 768, 8, TransB: true),
            new Shape("4096×16×768", 4096, 16, 768, TransB: true), new Shape("4096×768×16", 4096, 768, 16, TransB: true),
            new Shape("768×8×4096 Aᵀ", 768, 8, 4096, TransA: true), new Shape("768×16×4096 Aᵀ", 768, 16, 4096, TransA: true),
            new Shape("1024³ bf16 in", 1024, 1024, 1024, Bf16: true),
        };
        string[] what = ["square", "square", "square", "square", "x·Wᵀ attn proj", "x·Wᵀ MLP up", "same, B row-major", "x·Wᵀ MLP down",
            "LoRA x·Aᵀ r=8", "LoRA t·Bᵀ r=8", "LoRA x·Aᵀ r=16", "LoRA t·Bᵀ r=16", "LoRA dA = xᵀ·dt, dB = dYᵀ·t, r=8", "same, r=16", "bf16 operands"];
        for (int i = 0; i < shapes.Length; i++)
        {
            var s = shapes[i];
            double ms = Time(s);
            double gflops = 2.0 * s.M * s.N * s.K / (ms / 1e3) / 1e9;
            o.WriteLine($"| {s.Name} | {what[i]} | {ms:F2} | {gflops:F1} | {100 * gflops / peakAll:F0}% |");
        }
        // The thin LoRA products have their own loops; time the packed GEMM on the same shapes, alternating, so the
        // ratio is measured under the same machine conditions.
        o.WriteLine();
        o.WriteLine("| thin shape | thin loops ms | packed GEMM ms | speed-up |");
        o.WriteLine("| --- | ---: | ---: | ---: |");
        foreach (var s in shapes.Where(s => Math.Min(s.N, s.K) <= 16))
        {
            var thin = new List<double>();
            var packed = new List<double>();
            for (int round = 0; round < 5; round++)
            {
                Peft.Core.Cpu.Gemm.ThinLoops = true;
                thin.Add(Time(s));
                Peft.Core.Cpu.Gemm.ThinLoops = false;
                packed.Add(Time(s));
            }
            Peft.Core.Cpu.Gemm.ThinLoops = true;
            thin.Sort();
            packed.Sort();
            o.WriteLine($"| {s.Name} | {thin[2]:F2} | {packed[2]:F2} | {packed[2] / thin[2]:F1}× |");
        }
    }

    /// <summary>Median of timed repetitions after a warm-up, each long enough (≥ 0.3 s total) to average noise.</summary>
    private static double Time(Shape s)
    {
        using var scope = Tensor.NewScope();
        var dt = s.Bf16 ? DType.BF16 : DType.F32;
        var a = s.TransA ? Tensor.Randn([s.K, s.M], 1, dt).Transpose(0, 1) : Tensor.Randn([s.M, s.K], 1, dt);
        var b = s.TransB ? Tensor.Randn([s.N, s.K], 2, dt).Transpose(0, 1) : Tensor.Randn([s.K, s.N], 2, dt);
        using (Autograd.NoGrad()) a.MatMul(b).Dispose();
        double flop = 2.0 * s.M * s.N * s.K;
        int reps = (int)Math.Clamp(3e10 / flop, 3, 200);
        var times = new List<double>();
        using (Autograd.NoGrad())
            for (int r = 0; r < reps; r++)
            {
                var sw = Stopwatch.StartNew();
                a.MatMul(b).Dispose();
                times.Add(sw.Elapsed.TotalMilliseconds);
            }
        times.Sort();
        return times[times.Count / 2];
    }
}
