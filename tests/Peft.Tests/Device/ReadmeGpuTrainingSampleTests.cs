using Peft.TestSupport;
using Peft.Transformers;

namespace Peft.Tests.Device;

/// <summary>README.md's "training on a GPU" sample (<see cref="ReadmeGpuSample"/>) on the emulated device, so it
/// compiles and runs its device path on every machine; Peft.Cuda.Tests runs the same lines on a real GPU.</summary>
[TestFixture, NonParallelizable]
public class ReadmeGpuTrainingSampleTests
{
    [Test]
    public void TheReadmeGpuTrainingSampleRunsOnTheDevicePath()
    {
        var work = Directory.CreateTempSubdirectory("peft-readme-gpu-").FullName;
        var (emulated, registration) = EmulatedDevice.Install();
        try
        {
            var (first, last, peft) = ReadmeGpuSample.Run(work);
            using (peft)
            {
                Assert.That(last, Is.LessThan(first));
                Assert.That(peft.Parameters().All(p => p.Device == Peft.Core.Device.Cuda(0)));
                Assert.That(emulated.Calls["MatMul"], Is.GreaterThan(10));
                using var reloaded = PeftModel.FromPretrained(AutoModel.FromPretrained(Path.Combine(work, "gpt2-folder")), Path.Combine(work, "my-adapter"));
                Assert.That(reloaded.CountParameters(trainableOnly: false), Is.EqualTo(peft.CountParameters(trainableOnly: false)));
            }
        }
        finally
        {
            registration.Dispose();
            Directory.Delete(work, true);
        }
    }
}
