using System.Diagnostics;
using Peft.Core;
using Peft.Core.Cpu;

namespace Peft.Bench;

/// <summary>
/// Cache-blocking candidates (KC, MC) of the packed F32 GEMM compared in one process, in alternating rounds so a
/// noisy VM's drift hits every candidate alike; reports each candidate's median GFLOP/s at 1 and all threads
/// (suite "gemm-blocking"). The micro-kernel alone on L1-resident panels is timed too, per KC: the ceiling any
/// blocking can reach.
/// </summary>
internal static unsafe class GemmBlocking
{
    // PEFT_BENCH_BLOCKING="256/480,512/480" replaces the default candidates.
    private static readonly (int KC, int MC)[] Candidates =
        Environment.GetEnvironmentVariable("PEFT_BENCH_BLOCKING") is { Length: > 0 } list
            ? list.Split(',').Select(c => c.Split('/')).Select(p => (int.Parse(p[0]), int.Parse(p[1]))).ToArray()
            : [(256, 120), (384, 240), (512, 240), (512, 480)];

    public static void Run(TextWriter o)
    {
        var saved = Gemm.Blocking;
        try
        {
            double peak = FmaPeak.Gflops(1);
            o.WriteLine($"1-thread FMA peak {peak:F1} GFLOP/s; {Environment.ProcessorCount} threads");
            foreach (int kc in new[] { 256, 384, 512 })
                o.WriteLine($"micro-kernel alone (L1-resident panels), kc={kc}: {MicroKernel(kc):F1} GFLOP/s");
            foreach (int size in new[] { 1024, 2048 })
            {
                using var scope = Tensor.NewScope();
                var a = Tensor.Randn([size, size], 1);
                var b = Tensor.Randn([size, size], 2);
                var c = Tensor.Zeros([size, size]);
                foreach (int threads in new[] { 1, Environment.ProcessorCount })
                {
                    var times = Candidates.Select(_ => new List<double>()).ToArray();
                    for (int round = 0; round < 12; round++)
                        for (int i = 0; i < Candidates.Length; i++)
                        {
                            Gemm.SetBlocking(Candidates[i].KC, Candidates[i].MC);
                            var sw = Stopwatch.StartNew();
                            Gemm.Sgemm(size, size, size, 1, new(a.Ptr<float>(), size, false, Gemm.Element.F32), new(b.Ptr<float>(), size, false, Gemm.Element.F32), 0, c.Ptr<float>(), size, threads);
                            if (round > 0) times[i].Add(sw.Elapsed.TotalMilliseconds); // round 0 warms every candidate up
                        }
                    var line = string.Join("  ", Candidates.Select((cand, i) =>
                    {
                        var t = times[i].Order().ToList();
                        return $"{cand.KC}/{cand.MC}: {2.0 * size * size * size / (t[t.Count / 2] / 1e3) / 1e9:F1}";
                    }));
                    o.WriteLine($"{size}³ threads={threads} GFLOP/s by KC/MC — {line}");
                }
            }
        }
        finally
        {
            Gemm.SetBlocking(saved.KC, saved.MC);
        }
    }

    private static double MicroKernel(int kc)
    {
        var a = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(Gemm.MR * kc * 4), 64);
        var b = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(Gemm.NR * kc * 4), 64);
        var c = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(Gemm.MR * Gemm.NR * 4), 64);
        try
        {
            for (int i = 0; i < Gemm.MR * kc; i++) a[i] = 1e-3f;
            for (int i = 0; i < Gemm.NR * kc; i++) b[i] = 1e-3f;
            long reps = 100_000_000L / kc;
            double best = 0;
            for (int attempt = 0; attempt < 3; attempt++)
            {
                var sw = Stopwatch.StartNew();
                for (long r = 0; r < reps; r++) Gemm.MicroKernelProbe(kc, a, b, c, Gemm.NR);
                best = Math.Max(best, 2.0 * Gemm.MR * Gemm.NR * kc * reps / sw.Elapsed.TotalSeconds / 1e9);
            }
            return best;
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.AlignedFree(a);
            System.Runtime.InteropServices.NativeMemory.AlignedFree(b);
            System.Runtime.InteropServices.NativeMemory.AlignedFree(c);
        }
    }
}
