namespace Peft.Cuda.Tests;

/// <summary>
/// Base of every test that needs a CUDA device: skipped, with the reason, where none exists (CI, the developer VM);
/// run on the lent GPU machine by bench/gpu/run.sh. Inputs are fresh random draws per run (the seed is printed, so
/// a failure can be replayed); outputs are poisoned with NaN before each kernel so an unwritten element fails.
/// </summary>
[Category("Gpu")]
public abstract class GpuTest
{
    /// <summary>Device 0.</summary>
    protected CudaDevice Gpu { get; private set; } = null!;

    [OneTimeSetUp]
    public void RequireGpu()
    {
        if (!CudaDevice.IsAvailable(out var reason)) Assert.Ignore($"no CUDA device: {reason}");
        Gpu = CudaDevice.Get(0);
        TestContext.Progress.WriteLine($"GPU: {Gpu}");
    }

    /// <summary>True on native/emulation's host stand-in for a GPU (CI runs this suite there too): a check of what
    /// the kernels and launchers compute, with none of a GPU's speed.</summary>
    protected bool OnHostEmulation => Gpu.Name.StartsWith("host emulation", StringComparison.Ordinal);

    /// <summary>A generator with a fresh seed for this draw; the seed is printed with the test's output.</summary>
    protected static Generator Fresh()
    {
        ulong seed = TestContext.CurrentContext.Random.NextULong();
        TestContext.Out.WriteLine($"seed {seed}");
        return new Generator(seed);
    }

    /// <summary>
    /// Makes the next allocation of <paramref name="bytes"/> bytes receive NaN-filled memory: the caching allocator
    /// hands out the most recently returned block of a size class first, so a block filled with 0xFF and returned now is
    /// what the kernel under test writes its output into. Any element it fails to write stays NaN.
    /// </summary>
    protected static void PoisonNext(CudaDevice gpu, long bytes)
    {
        using var poison = CudaTensors.Empty([checked((int)((bytes + 3) / 4))], DType.F32, gpu);
        CudaTensors.FillBytes(poison, 0xFF);
    }

    /// <summary>‖got − want‖ / ‖want‖ over two equally long arrays; NaN anywhere gives NaN (which fails every ≤ check).</summary>
    protected static double RelativeError(ReadOnlySpan<float> got, ReadOnlySpan<double> want)
    {
        Assert.That(got.Length, Is.EqualTo(want.Length));
        double num = 0, den = 0;
        for (int i = 0; i < got.Length; i++)
        {
            double d = got[i] - want[i];
            num += d * d;
            den += want[i] * want[i];
        }
        return Math.Sqrt(num / den);
    }
}
