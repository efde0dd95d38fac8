using NUnit.Framework;
using Peft.Core.Cpu;

namespace Peft.Core.Tests;

/// <summary>The CPU kernels' thread team: every iteration exactly once, whatever the region's shape or caller.</summary>
public class CpuParallelTests
{
    /// <summary>Runs <paramref name="action"/> on its own thread and fails the test if it has not finished within 60 s:
    /// a lost iteration would otherwise leave the caller waiting for ever and the test run hanging.</summary>
    private static void Within60s(Action action)
    {
        Exception? error = null;
        var runner = new Thread(() => { try { action(); } catch (Exception e) { error = e; } }) { IsBackground = true };
        runner.Start();
        if (!runner.Join(TimeSpan.FromSeconds(60))) Assert.Fail("the parallel region did not complete within 60 s");
        if (error != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(error).Throw();
    }

    [TestCase(2)]
    [TestCase(7)]
    [TestCase(64)]
    [TestCase(10_007)]
    public void EveryIterationRunsExactlyOnce(int count)
    {
        // Many regions back to back, so workers join some while spinning and some after sleeping.
        Within60s(() =>
        {
            for (int round = 0; round < 50; round++)
            {
                var hits = new int[count];
                CpuParallel.For(count, i => Interlocked.Increment(ref hits[i]));
                Assert.That(hits, Is.All.EqualTo(1), $"round {round}");
            }
        });
    }

    [Test]
    public void RegionsAfterTheWorkersSleptStillComplete()
    {
        // Longer than the spin budget (200 µs by default): the workers block and must be woken.
        Within60s(() =>
        {
            for (int round = 0; round < 5; round++)
            {
                Thread.Sleep(5);
                long sum = 0;
                CpuParallel.For(1000, i => Interlocked.Add(ref sum, i));
                Assert.That(sum, Is.EqualTo(999L * 1000 / 2));
            }
        });
    }

    [Test]
    public void TheFirstExceptionReachesTheCallerWithItsOwnType()
    {
        var ran = new int[100];
        var e = Assert.Throws<InvalidOperationException>(() => Within60s(() => CpuParallel.For(100, i =>
        {
            Interlocked.Increment(ref ran[i]);
            if (i == 37) throw new InvalidOperationException("iteration 37");
        })));
        Assert.That(e!.Message, Is.EqualTo("iteration 37"));
        // The team is usable afterwards.
        int after = 0;
        CpuParallel.For(10, _ => Interlocked.Increment(ref after));
        Assert.That(after, Is.EqualTo(10));
    }

    [Test]
    public void NestedRegionsRunInline()
    {
        var hits = new int[8, 8];
        Within60s(() => CpuParallel.For(8, i => CpuParallel.For(8, j => Interlocked.Increment(ref hits[i, j]))));
        Assert.That(hits.Cast<int>(), Is.All.EqualTo(1));
    }

    [Test]
    public void ConcurrentCallersEachGetTheirOwnIterations()
    {
        // Four user threads at once: one holds the team, the others take the thread-pool path; none may mix up
        // another's region.
        var totals = new long[4];
        var callers = Enumerable.Range(0, 4).Select(c => new Thread(() =>
        {
            for (int round = 0; round < 200; round++)
                CpuParallel.For(37, i => Interlocked.Add(ref totals[c], i + 1));
        })).ToList();
        Within60s(() =>
        {
            callers.ForEach(t => t.Start());
            callers.ForEach(t => t.Join());
        });
        Assert.That(totals, Is.All.EqualTo(200L * 37 * 38 / 2));
    }
}
