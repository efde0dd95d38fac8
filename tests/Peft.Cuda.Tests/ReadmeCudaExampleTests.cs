namespace Peft.Cuda.Tests;

/// <summary>README.md's "Using CUDA" sample, line for line, so the README cannot drift from the API.</summary>
public class ReadmeCudaExampleTests : GpuTest
{
    [Test]
    public void TheReadmeCudaSampleRuns()
    {
        if (OnHostEmulation) Assert.Ignore("4096³ products take minutes on the host emulation; BlasAndLoraTests runs the same calls at small sizes there");
        if (!CudaDevice.IsAvailable(out var why)) Console.WriteLine($"no GPU: {why}");
        var gpu = CudaDevice.Get(0);                                   // primary context, one stream, caching allocator
        using var x = Tensor.Randn([4096, 4096], seed: 1).To(DType.BF16).To(gpu.Device);
        using var w = Tensor.Randn([4096, 4096], seed: 2).To(DType.BF16).To(gpu.Device);
        using var a = Tensor.Randn([16, 4096], seed: 3).To(DType.BF16).To(gpu.Device);
        using var b = Tensor.Randn([4096, 16], seed: 4).To(DType.BF16).To(gpu.Device);
        var (y, t) = CudaLora.Forward(x, w, a, b, scale: 2f);          // y = x·Wᵀ + 2·(x·Aᵀ)·Bᵀ
        var (dx, da, db) = CudaLora.Backward(y, x, t, w, a, b, 2f);    // the frozen W never gets a gradient
        using var host = dx!.To(Device.Cpu);                           // back to the CPU
        Console.WriteLine(gpu.Allocator.Stats);                        // allocated / reserved / peak bytes

        Assert.That(host.Shape, Is.EqualTo(new[] { 4096, 4096 }));
        Assert.That(host.ToDoubleArray().Take(1000).All(double.IsFinite), Is.True);
        Assert.That(da.Shape, Is.EqualTo(new[] { 16, 4096 }));
        Assert.That(db.Shape, Is.EqualTo(new[] { 4096, 16 }));
        foreach (var tensor in new[] { y, t, dx, da, db }) tensor.Dispose();
    }

    [Test]
    public void TheReadmeGpuTrainingSampleTrainsOnTheGpu()
    {
        var work = Directory.CreateTempSubdirectory("peft-readme-gpu-").FullName;
        try
        {
            var (first, last, peft) = Peft.TestSupport.ReadmeGpuSample.Run(work);
            using (peft) Assert.That(last, Is.LessThan(first));
            Assert.That(File.Exists(Path.Combine(work, "my-adapter", "adapter_model.safetensors")));
        }
        finally
        {
            Directory.Delete(work, true);
        }
    }
}
