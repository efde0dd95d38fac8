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
        RegionRoundTrip(o);
        if (Environment.GetEnvironmentVariable("PEFT_BENCH_GRID_AB") == "1") { GridAgainstRowSplit(o); return; }
        foreach (var (m, n, k) in Shapes())
        {
            using var scope = Tensor.NewScope();
            var a = Tensor.Randn([m, k], 1);
            var b = Tensor.Randn([k, n], 2);
            var c = Tensor.Zeros([m, n]);
            foreach (int threads in new[] { 1, Environment.ProcessorCount })
            {
                void Once() => Peft.Core.Cpu.Gemm.Sgemm(m, n, k, 1, new(a.Ptr<float>(), k, false, Peft.Core.Cpu.Gemm.Element.F32), new(b.Ptr<float>(), n, false, Peft.Core.Cpu.Gemm.Element.F32), 0, c.Ptr<float>(), n, threads);
                Once();
                var times = new List<double>();
                for (int r = 0; r < 7; r++) { var sw = Stopwatch.StartNew(); Once(); times.Add(sw.Elapsed.TotalMilliseconds); }
                times.Sort();
                double gf = 2.0 * m * n * k / (times[3] / 1e3) / 1e9;
                o.WriteLine($"{m}×{n}×{k} threads={threads}: {times[3]:F2} ms, {gf:F1} GFLOP/s = {100 * gf / (peak1 * threads):F0}% of {threads}× the 1-thread peak");
            }
        }
    }

    /// <summary>Three partitions of C at all threads, interleaved call by call in one process (so host noise hits
    /// them alike): the tile grid with two tiles per thread (the default), with one, and rows alone with one per
    /// thread (the partition before tile grids). Min and median of 15 calls each.</summary>
    private static void GridAgainstRowSplit(TextWriter o)
    {
        int threads = Environment.ProcessorCount;
        (string Name, bool RowsOnly, int PerThread)[] variants = [("grid, 2 tiles/thread", false, 2), ("grid, 1 tile/thread", false, 1), ("rows only", true, 1)];
        o.WriteLine($"| M×N×K, {threads} threads | " + string.Join(" | ", variants.Select(v => $"{v.Name} ms, min / median")) + " |");
        o.WriteLine("| --- |" + string.Concat(variants.Select(_ => " ---: |")));
        foreach (var (m, n, k) in Shapes())
        {
            using var scope = Tensor.NewScope();
            var a = Tensor.Randn([m, k], 1);
            var b = Tensor.Randn([n, k], 2);   // used transposed, as a Linear's weight (x·Wᵀ)
            var c = Tensor.Zeros([m, n]);
            double Once(int v)
            {
                (Peft.Core.Cpu.Gemm.RowSplitOnly, Peft.Core.Cpu.Gemm.TilesPerThread) = (variants[v].RowsOnly, variants[v].PerThread);
                var sw = Stopwatch.StartNew();
                Peft.Core.Cpu.Gemm.Sgemm(m, n, k, 1, new(a.Ptr<float>(), k, false, Peft.Core.Cpu.Gemm.Element.F32), new(b.Ptr<float>(), k, true, Peft.Core.Cpu.Gemm.Element.F32), 0, c.Ptr<float>(), n, threads);
                return sw.Elapsed.TotalMilliseconds;
            }
            var times = variants.Select(_ => new List<double>()).ToArray();
            for (int v = 0; v < variants.Length; v++) Once(v);
            for (int r = 0; r < 15; r++)
                for (int v = 0; v < variants.Length; v++) times[v].Add(Once(v));
            (Peft.Core.Cpu.Gemm.RowSplitOnly, Peft.Core.Cpu.Gemm.TilesPerThread) = (false, 2);
            foreach (var t in times) t.Sort();
            o.WriteLine($"| {m}×{n}×{k} | " + string.Join(" | ", times.Select(t => $"{t[0]:F2} / {t[7]:F2}")) + " |");
        }
    }

    /// <summary>What one parallel region costs when its work is nothing: the thread pool's Parallel.For against the
    /// library's spinning team, with a 50 µs serial stretch between regions (as between a step's ops).</summary>
    private static void RegionRoundTrip(TextWriter o)
    {
        int threads = Environment.ProcessorCount;
        var sink = new long[threads * 16];
        double Time(Action<int, Action<int>> parallelFor)
        {
            var times = new List<double>();
            for (int round = 0; round < 5; round++)
            {
                long busy = 0, regions = 2000;
                for (long i = 0; i < regions; i++)
                {
                    var gap = Stopwatch.StartNew();
                    while (gap.Elapsed.TotalMicroseconds < 50) { }
                    long t0 = Stopwatch.GetTimestamp();
                    parallelFor(threads, t => sink[t * 16]++);
                    busy += Stopwatch.GetTimestamp() - t0;
                }
                times.Add(busy * 1e6 / Stopwatch.Frequency / regions);
            }
            times.Sort();
            return times[2];
        }
        double pool = Time((n, body) => Parallel.For(0, n, body));
        double team = Time(Peft.Core.Cpu.CpuParallel.For);
        o.WriteLine($"empty parallel region over {threads} threads, 50 µs apart: Parallel.For {pool:F1} µs, CpuParallel team {team:F1} µs");
    }

    /// <summary>The shapes to time: PEFT_BENCH_SHAPES="MxNxK,…" (to probe one), else the cubes 512³, 1024³, 2048³.</summary>
    private static IEnumerable<(int M, int N, int K)> Shapes()
    {
        var spec = Environment.GetEnvironmentVariable("PEFT_BENCH_SHAPES");
        if (string.IsNullOrWhiteSpace(spec)) return [(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048)];
        return spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(one =>
        {
            var d = one.Split('x').Select(int.Parse).ToArray();
            if (d.Length != 3) throw new ArgumentException($"PEFT_BENCH_SHAPES entry '{one}': expected MxNxK");
            return (d[0], d[1], d[2]);
        }).ToList();
    }
}
