using Peft.Nn;
using Peft.Transformers;

namespace Peft.Tests.Device;

/// <summary>README.md's "training on a GPU" sample, line for line, on the emulated device (so it compiles and runs
/// its device path on every machine; Peft.Cuda.Tests runs the same lines on a real GPU).</summary>
[TestFixture, NonParallelizable]
public class ReadmeGpuTrainingSampleTests
{
    [Test]
    public void TheReadmeGpuTrainingSampleRunsOnTheDevicePath()
    {
        var work = Directory.CreateTempSubdirectory("peft-readme-gpu-").FullName;
        var cwd = Environment.CurrentDirectory;
        var (emulated, registration) = EmulatedDevice.Install();
        try
        {
            var config = HfConfig.FromJson("""{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 50257, "n_positions": 64}""");
            using (var m = AutoModel.Create(config)) m.SavePretrained(Path.Combine(work, "gpt2-folder"));
            Environment.CurrentDirectory = work;

            using var peft = PeftModel.Create(AutoModel.FromPretrained("gpt2-folder"),
                new LoraConfig { R = 16, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
            peft.To(Peft.Core.Device.Cuda(0));                             // parameters and buffers; tied weights stay tied
            var optimizer = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: 2e-4);
            using var ids = Tensor.FromArray(new long[] { 464, 2068, 7586, 21831, 18045 }, [1, -1]).To(Peft.Core.Device.Cuda(0));
            double first = ReadmeLoraExampleTests.Loss(peft, ids);
            for (int step = 0; step < 10; step++)
            {
                using var scope = Tensor.NewScope();
                peft.ZeroGrad();
                peft.Forward(ids, labels: ids).Loss!.Backward();           // forward and backward on the GPU
                optimizer.Step();
            }
            peft.SavePretrained("my-adapter");                             // copied to the host; Hugging Face PEFT format

            Assert.That(ReadmeLoraExampleTests.Loss(peft, ids), Is.LessThan(first));
            Assert.That(peft.Parameters().All(p => p.Device == Peft.Core.Device.Cuda(0)));
            Assert.That(emulated.Calls["MatMul"], Is.GreaterThan(10));
            using var reloaded = PeftModel.FromPretrained(AutoModel.FromPretrained("gpt2-folder"), "my-adapter");
            Assert.That(reloaded.CountParameters(trainableOnly: false), Is.EqualTo(peft.CountParameters(trainableOnly: false)));
        }
        finally
        {
            registration.Dispose();
            Environment.CurrentDirectory = cwd;
            Directory.Delete(work, true);
        }
    }
}
