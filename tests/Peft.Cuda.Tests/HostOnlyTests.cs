using Peft.Cuda.Memory;

namespace Peft.Cuda.Tests;

/// <summary>The parts of Peft.Cuda that need no GPU: they run everywhere, CI included.</summary>
public class HostOnlyTests
{
    [Test]
    public void SizeClassesRoundUpWithBoundedWaste()
    {
        Assert.That(CudaAllocator.SizeClass(1), Is.EqualTo(512));
        Assert.That(CudaAllocator.SizeClass(513), Is.EqualTo(1024));
        Assert.That(CudaAllocator.SizeClass(1 << 20), Is.EqualTo(1 << 20));
        Assert.That(CudaAllocator.SizeClass((1 << 20) + 1), Is.EqualTo(5 << 18), "1.25 MiB");
        Assert.That(CudaAllocator.SizeClass((7 << 18) + 1), Is.EqualTo(1 << 21));
        var random = new System.Random(7);
        for (int i = 0; i < 10_000; i++)
        {
            long bytes = (long)(Math.Exp(random.NextDouble() * Math.Log(64L << 30)));
            long c = CudaAllocator.SizeClass(bytes);
            Assert.That(c, Is.GreaterThanOrEqualTo(bytes));
            Assert.That(c, Is.LessThanOrEqualTo(Math.Max(512, bytes * 5 / 4 + 512)), $"{bytes} → {c}: more than a quarter wasted");
            Assert.That(CudaAllocator.SizeClass(c), Is.EqualTo(c), "a class is its own class");
        }
    }

    [Test]
    public void WithoutADeviceMovingATensorToCudaSaysWhy()
    {
        if (CudaDevice.IsAvailable(out _)) Assert.Ignore("a CUDA device exists here; DeviceTests cover the real path");
        using var x = Tensor.Ones([3]);
        var e = Assert.Throws<InvalidOperationException>(() => x.To(Device.Cuda(0)))!;
        Assert.That(e.Message, Does.StartWith("CUDA is not available: "));
        CudaDevice.IsAvailable(out var reason);
        Assert.That(reason, Is.Not.Empty);
        Assert.That(CudaDevice.Count, Is.Zero);
    }

    [Test]
    public void TheKernelsAreEmbeddedWheneverNvccBuiltThem()
    {
        var fatbin = Path.Combine(RepoRoot(), "build", "kernels", "peft_kernels.fatbin");
        if (!File.Exists(fatbin)) Assert.Ignore($"{fatbin} is missing: nvcc has not built the kernels on this machine");
        Assert.That(Kernels.KernelModule.Embedded, Is.True, "Peft.Cuda embeds build/kernels/peft_kernels.fatbin");
        Assert.That(Kernels.KernelModule.ReadImage(), Is.EqualTo(File.ReadAllBytes(fatbin)));
    }

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Peft.Native.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("repository root not found");
    }
}
