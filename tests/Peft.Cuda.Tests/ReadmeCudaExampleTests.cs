using Peft.Nn;
using Peft.Transformers;

namespace Peft.Cuda.Tests;

/// <summary>README.md's "Using CUDA" sample, line for line, so the README cannot drift from the API.</summary>
public class ReadmeCudaExampleTests : GpuTest
{
    [Test]
    public void TheReadmeCudaSampleRuns()
    {
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
        var cwd = Environment.CurrentDirectory;
        try
        {
            var config = HfConfig.FromJson("""{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 50257, "n_positions": 64}""");
            using (var m = AutoModel.Create(config)) m.SavePretrained(Path.Combine(work, "gpt2-folder"));
            Environment.CurrentDirectory = work;

            using var peft = Peft.PeftModel.Create(AutoModel.FromPretrained("gpt2-folder"),
                new Peft.LoraConfig { R = 16, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
            peft.To(Device.Cuda(0));                                       // parameters and buffers; tied weights stay tied
            var optimizer = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: 2e-4);
            using var ids = Tensor.FromArray(new long[] { 464, 2068, 7586, 21831, 18045 }, [1, -1]).To(Device.Cuda(0));
            double first;
            using (Autograd.NoGrad()) using (Tensor.NewScope()) first = peft.Forward(ids, labels: ids).Loss!.Item();
            for (int step = 0; step < 10; step++)
            {
                using var scope = Tensor.NewScope();
                peft.ZeroGrad();
                peft.Forward(ids, labels: ids).Loss!.Backward();           // forward and backward on the GPU
                optimizer.Step();
            }
            peft.SavePretrained("my-adapter");                             // copied to the host; Hugging Face PEFT format

            double last;
            using (Autograd.NoGrad()) using (Tensor.NewScope()) last = peft.Forward(ids, labels: ids).Loss!.Item();
            Assert.That(last, Is.LessThan(first));
            Assert.That(File.Exists(Path.Combine(work, "my-adapter", "adapter_model.safetensors")));
        }
        finally
        {
            Environment.CurrentDirectory = cwd;
            Directory.Delete(work, true);
        }
    }
}
