namespace Peft.Cuda.Tests;

/// <summary>Driver bindings, host↔device copies and the caching allocator on a real device.</summary>
public class DeviceTests : GpuTest
{
    [Test]
    public void TheDeviceDescribesItself()
    {
        Assert.That(Gpu.Name, Is.Not.Empty);
        Assert.That(Gpu.ComputeCapability.Major, Is.GreaterThanOrEqualTo(8), "the kernels are built for sm_80 and newer");
        Assert.That(Gpu.MultiprocessorCount, Is.GreaterThan(0));
        var (free, total) = Gpu.MemoryInfo();
        Assert.That(total, Is.EqualTo(Gpu.TotalMemoryBytes));
        Assert.That(free, Is.InRange(1, total));
        Assert.That(CudaDevice.DriverVersion, Is.GreaterThanOrEqualTo(11080));
    }

    [TestCase(DType.F32, 1)]
    [TestCase(DType.F32, 3_000_017)]   // several staging chunks and a ragged last one
    [TestCase(DType.BF16, 777)]
    [TestCase(DType.I64, 4099)]
    [TestCase(DType.U8, 12_582_913)]
    public void RoundTripIsBitExact(DType dtype, int n)
    {
        using var host = Tensor.Randn([n], Fresh()).Mul(100).To(dtype);
        using var device = host.To(Gpu.Device);
        Assert.That(device.Device, Is.EqualTo(Gpu.Device));
        using var back = device.To(Device.Cpu);
        Assert.That(back.Device, Is.EqualTo(Device.Cpu));
        Assert.That(Bytes(back), Is.EqualTo(Bytes(host)));
    }

    [Test]
    public void AStridedDeviceViewComesBackAsItsValues()
    {
        using var host = Tensor.Randn([6, 7, 5], Fresh());
        using var device = host.To(Gpu.Device);
        using var view = device.Transpose(0, 2).Narrow(1, 2, 3); // [5, 3, 6], not contiguous
        using var hostView = host.Transpose(0, 2).Narrow(1, 2, 3);
        using var back = view.To(Device.Cpu);
        Assert.That(back.ToFloatArray(), Is.EqualTo(hostView.ToFloatArray()));
    }

    [Test]
    public void TheAllocatorReusesFreedBlocksAndCountsThem()
    {
        var allocator = Gpu.Allocator;
        GC.Collect();
        GC.WaitForPendingFinalizers(); // a leaked tensor's finalizer returning its block mid-test would move the counters
        allocator.EmptyCache();
        var before = allocator.Stats;
        using (CudaTensors.Empty([1000, 1000], DType.F32, Gpu)) { }
        var afterFirst = allocator.Stats;
        Assert.That(afterFirst.DriverAllocations, Is.EqualTo(before.DriverAllocations + 1));
        Assert.That(afterFirst.AllocatedBytes, Is.EqualTo(before.AllocatedBytes), "the block went back to the cache");
        Assert.That(afterFirst.ReservedBytes, Is.EqualTo(before.ReservedBytes + Memory.CudaAllocator.SizeClass(4_000_000)));
        allocator.ResetPeak();
        using (var t = CudaTensors.Empty([999, 1001], DType.F32, Gpu))  // same size class: served from the cache
        {
            var during = allocator.Stats;
            Assert.That(during.DriverAllocations, Is.EqualTo(afterFirst.DriverAllocations));
            Assert.That(during.AllocatedBytes, Is.EqualTo(afterFirst.AllocatedBytes + Memory.CudaAllocator.SizeClass(4_000_000)));
            Assert.That(during.PeakAllocatedBytes, Is.EqualTo(during.AllocatedBytes));
        }
        allocator.EmptyCache();
        Assert.That(allocator.Stats.ReservedBytes, Is.EqualTo(before.ReservedBytes), "EmptyCache gave the cached block back to the driver");
    }

    [Test]
    public void AFailingDriverCallNamesItself()
    {
        var e = Assert.Throws<CudaException>(() => Gpu.Kernels.Function("no_such_kernel_f32"))!;
        Assert.That(e.Call, Does.Contain("cuModuleGetFunction(no_such_kernel_f32)"));
        Assert.That(e.StatusName, Is.EqualTo("CUDA_ERROR_NOT_FOUND"));
        Assert.That(e.Message, Does.Contain("CUDA_ERROR_NOT_FOUND"));
    }

    [Test]
    public unsafe void ReadingADeviceTensorCopiesItButHostPointersAreRefused()
    {
        // ToArray / ToFloatArray / Item copy device tensors to the host (as torch's tolist()); a host pointer into
        // device memory (what a CPU kernel would dereference) is refused with the way out in the message.
        using var host = Tensor.Randn([4], Fresh());
        using var device = host.To(Gpu.Device);
        Assert.That(device.ToFloatArray(), Is.EqualTo(host.ToFloatArray()));
        var e = Assert.Throws<InvalidOperationException>(() => { var p = device.Storage.Pointer; })!;
        Assert.That(e.Message, Does.Contain("cuda:0").And.Contain(".To(Device.Cpu)"));
    }

    private static byte[] Bytes(Tensor t) => t.DType switch
    {
        DType.F32 => MemoryMarshalBytes(t.ToArray<float>()),
        DType.BF16 => MemoryMarshalBytes(t.ToArray<BFloat16>()),
        DType.I64 => MemoryMarshalBytes(t.ToArray<long>()),
        DType.U8 => t.ToArray<byte>(),
        _ => throw new NotSupportedException(),
    };

    private static byte[] MemoryMarshalBytes<T>(T[] values) where T : unmanaged =>
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
