using System.Diagnostics;
using Peft.Core;

namespace Peft.Bench;

/// <summary>The raw GEMM kernel on preallocated buffers at 1 and all threads: separates kernel efficiency from
/// threading and allocation effects (suite "gemm-threads").</summary>
internal static unsafe class GemmThreads
{
    public static void Run(TextWriter o)
    {
        double peak1 = FmaPeak.Gflops(1);
        o.WriteLine($"1-thread FMA peak {peak1:F1} GFLOP/s");
        foreach (int size in new[] { 512, 1024, 2048 })
        {
            using var scope = Tensor.NewScope();
            var a = Tensor.Randn([size, size], 1);
            var b = Tensor.Randn([size, size], 2);
            var c = Tensor.Zeros([size, size]);
            foreach (int threads in new[] { 1, Environment.ProcessorCount })
            {
                void Once() => Peft.Core.Cpu.Gemm.Sgemm(size, size, size, 1, new(a.Ptr<float>(), size, false, Peft.Core.Cpu.Gemm.Element.F32), new(b.Ptr<float>(), size, false, Peft.Core.Cpu.Gemm.Element.F32), 0, c.Ptr<float>(), size, threads);
                Once();
                var times = new List<double>();
                for (int r = 0; r < 7; r++) { var sw = Stopwatch.StartNew(); Once(); times.Add(sw.Elapsed.TotalMilliseconds); }
                times.Sort();
                double gf = 2.0 * size * size * size / (times[3] / 1e3) / 1e9;
                o.WriteLine($"{size}³ threads={threads}: {times[3]:F2} ms, {gf:F1} GFLOP/s = {100 * gf / (peak1 * threads):F0}% of {threads}× the 1-thread peak");
            }
        }
    }
}
