using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace Peft.Core.Cpu;

/// <summary>
/// The CPU kernels' parallel loop: a team of persistent worker threads that spin for a short while after each
/// region before they sleep, the way OpenMP runtimes keep their threads hot. A training step runs thousands of short
/// parallel regions (every GEMM K-slice, norm, element-wise op); through <see cref="Parallel.For(int, int, Action{int})"/>
/// each one woke thread-pool workers one after another, and on a VM every wake-up is a hypervisor round trip, so
/// the later workers joined a region after the early ones had done its work (a profile of the GPT-2 step put a fifth
/// of the CPU time in those waits). Here a region is one object published to workers that are already polling for it.
/// <para>Iterations are claimed dynamically in chunks, so a late worker costs nothing but its own share; the calling
/// thread always takes part. A region started from inside another one runs inline on its thread; one started while
/// another thread's region holds the team goes through <see cref="Parallel.For(int, int, Action{int})"/>, so
/// concurrent callers stay correct. The first exception thrown by an iteration is rethrown on the caller once all
/// claimed iterations have finished.</para>
/// </summary>
internal static class CpuParallel
{
    /// <summary>Workers plus the calling thread: <c>PEFT_NUM_THREADS</c> when set, else the logical core count.</summary>
    public static int Threads { get; } = ReadThreads();

    // How long an idle worker polls for the next region before it blocks: long enough to bridge the serial stretches
    // of a step (autograd bookkeeping, small serial ops: tens of microseconds), short enough to give the core back
    // to the GC and the JIT when the library is idle. PEFT_CPU_SPIN_US overrides it (0 = block at once).
    private static readonly long SpinTicks = (long)(ReadSpinMicroseconds() * Stopwatch.Frequency / 1e6);

    private static readonly object Gate = new();
    private static Region? current;
    private static int sleeping;
    private static int busy;
    private static bool started;

    [ThreadStatic] private static bool insideRegion;

    /// <summary>Runs <paramref name="body"/>(i) for every i in [0, <paramref name="count"/>), in parallel.</summary>
    public static void For(int count, Action<int> body)
    {
        if (count <= 0) return;
        if (count == 1 || Threads == 1 || insideRegion) { for (int i = 0; i < count; i++) body(i); return; }
        if (Interlocked.CompareExchange(ref busy, 1, 0) != 0)
        {
            // Another thread's region holds the team: share the machine through the thread pool instead.
            Parallel.For(0, count, body);
            return;
        }
        try
        {
            EnsureStarted();
            var region = new Region(body, count, Math.Max(1, count / (Threads * 4)));
            insideRegion = true;
            Interlocked.Exchange(ref current, region);   // full fence: pairs with a worker's sleeping++ (see Worker)
            if (Volatile.Read(ref sleeping) > 0) lock (Gate) Monitor.PulseAll(Gate);
            region.Work();
            var spin = new SpinWait();
            while (Volatile.Read(ref region.Remaining) > 0) spin.SpinOnce(sleep1Threshold: -1);
            region.Error?.Throw();
        }
        finally
        {
            insideRegion = false;
            Volatile.Write(ref busy, 0);
        }
    }

    /// <summary><see cref="For(int, Action{int})"/> over a long count of chunks (callers keep their chunks few).</summary>
    public static void For(long count, Action<long> body)
    {
        if (count > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(count), count, "at most int.MaxValue parallel chunks");
        For((int)count, i => body(i));
    }

    private static void EnsureStarted()
    {
        if (Volatile.Read(ref started)) return;
        lock (Gate)
        {
            if (started) return;
            for (int w = 1; w < Threads; w++)
                new Thread(Worker) { IsBackground = true, Name = $"Peft CPU worker {w}" }.Start();
            Volatile.Write(ref started, true);
        }
    }

    private static void Worker()
    {
        insideRegion = true;   // a region started by an iteration runs inline on this worker
        Region? seen = null;
        while (true)
        {
            long spinStart = Stopwatch.GetTimestamp();
            var spinner = new SpinWait();
            Region? next;
            while ((next = Volatile.Read(ref current)) == seen)
            {
                // SpinWait yields the core after its first few busy spins, so where threads outnumber free cores
                // (PEFT_NUM_THREADS too high, other processes) a polling worker does not hold back a working one.
                if (Stopwatch.GetTimestamp() - spinStart < SpinTicks) { spinner.SpinOnce(sleep1Threshold: -1); continue; }
                lock (Gate)
                {
                    // sleeping++ is a full fence, and the publisher's exchange of `current` is one: either this
                    // re-check sees the new region or the publisher sees a sleeper and pulses (under the lock,
                    // which Wait releases atomically) — a region is never missed.
                    Interlocked.Increment(ref sleeping);
                    if (Volatile.Read(ref current) == seen) Monitor.Wait(Gate);
                    Interlocked.Decrement(ref sleeping);
                }
                spinStart = Stopwatch.GetTimestamp();
                spinner.Reset();
            }
            seen = next;
            next!.Work();
        }
    }

    private static int ReadThreads()
    {
        var text = Environment.GetEnvironmentVariable("PEFT_NUM_THREADS");
        if (string.IsNullOrWhiteSpace(text)) return Environment.ProcessorCount;
        if (!int.TryParse(text, out int n) || n < 1)
            throw new ArgumentException($"PEFT_NUM_THREADS='{text}': expected a positive whole number of CPU threads");
        return n;
    }

    private static double ReadSpinMicroseconds()
    {
        var text = Environment.GetEnvironmentVariable("PEFT_CPU_SPIN_US");
        if (string.IsNullOrWhiteSpace(text)) return 200;
        if (!double.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out double us) || us < 0)
            throw new ArgumentException($"PEFT_CPU_SPIN_US='{text}': expected a non-negative number of microseconds");
        return us;
    }

    /// <summary>One parallel loop: iterations are claimed a grain at a time until none is left.</summary>
    private sealed class Region(Action<int> body, int count, int grain)
    {
        private readonly int count = count;
        private int next;
        public int Remaining = count;
        public ExceptionDispatchInfo? Error;

        public void Work()
        {
            while (true)
            {
                int start = Interlocked.Add(ref next, grain) - grain;
                if (start >= count) return;
                int end = Math.Min(count, start + grain);
                try
                {
                    for (int i = start; i < end; i++) body(i);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref Error, ExceptionDispatchInfo.Capture(e), null);
                }
                finally
                {
                    Interlocked.Add(ref Remaining, -(end - start));
                }
            }
        }
    }
}
