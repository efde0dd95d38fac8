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

    [Test]
    public void EveryCoreOpHasItsOwnCudaOpNumber()
    {
        // The kernels switch on these numbers (kernels/elementwise.cu, kernels/rows.cu list them): one per op, none shared.
        var binary = Enum.GetValues<Peft.Core.Cpu.BinaryOp>().Select(CudaOps.OpCode).ToList();
        var unary = Enum.GetValues<Peft.Core.Cpu.UnaryOp>().Select(CudaOps.OpCode).ToList();
        var reduce = Enum.GetValues<Peft.Core.Cpu.ReduceOp>().Select(CudaOps.ReduceCode).ToList();
        Assert.That(binary, Is.Unique.And.EquivalentTo(Enumerable.Range(0, binary.Count)));
        Assert.That(unary, Is.Unique.And.EquivalentTo(Enumerable.Range(0, unary.Count)));
        Assert.That(reduce, Is.EquivalentTo(new[] { 0, 1, 2 }));
    }

    [Test]
    public unsafe void StridedLayoutsMatchTheKernelStructAndMergeDenseDims()
    {
        Assert.That(sizeof(Kernels.StridedLayout), Is.EqualTo(8 + 3 * 8 * 8), "peft_strides: two int32, three int64[8]");
        var dense = Kernels.StridedLayout.Create([4, 5, 6], [30, 6, 1], [30, 6, 1]);
        Assert.That((dense.Rank, dense.Shape[0], dense.A[0], dense.B[0]), Is.EqualTo((1, 120L, 1L, 1L)), "dense operands are one run");
        var row = Kernels.StridedLayout.Create([4, 1, 5, 6], [30, 30, 6, 1], [0, 0, 6, 1]);
        Assert.That((row.Rank, row.Shape[0], row.Shape[1], row.A[0], row.B[0], row.A[1], row.B[1]), Is.EqualTo((2, 4L, 30L, 30L, 0L, 1L, 1L)),
            "a broadcast [5, 6] operand: the outer dim keeps stride 0, size-1 dims vanish");
        var transposed = Kernels.StridedLayout.Create([3, 7], [1, 3], [7, 1]);
        Assert.That(transposed.Rank, Is.EqualTo(2), "a transposed view cannot merge");
        Assert.Throws<NotSupportedException>(() => Kernels.StridedLayout.Create(
            Enumerable.Repeat(2, 9).ToArray(), Enumerable.Range(0, 9).Select(i => (long)(3 << i)).ToArray(), Enumerable.Repeat(0L, 9).ToArray()));
        var scalar = Kernels.StridedLayout.Create([], [], []);
        Assert.That((scalar.Rank, scalar.Shape[0]), Is.EqualTo((1, 1L)));
    }

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Peft.Native.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("repository root not found");
    }
}
