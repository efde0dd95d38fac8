using Peft.Core.SafeTensors;

namespace Peft.Core.Tests;

/// <summary>The C# sample in README.md, line for line, so the README cannot drift from the API.</summary>
[TestFixture]
public class ReadmeExampleTests
{
    [Test]
    public void TheReadmeSampleRunsAndProducesAGradient()
    {
        var dir = Directory.CreateTempSubdirectory("peft-readme-").FullName;
        var cwd = Environment.CurrentDirectory;
        Environment.CurrentDirectory = dir;
        try
        {
            using var scope = Tensor.NewScope();                       // frees every tensor made inside
            var w = Tensor.Randn([16, 64], seed: 1).RequiresGradient(); // a trainable weight
            var x = Tensor.Randn([8, 64], seed: 2);
            var labels = Tensor.FromArray(new long[] { 0, 3, 1, 15, 2, 2, 9, 4 });
            var loss = x.Linear(w).CrossEntropy(labels);                // fused log-softmax + NLL
            loss.Backward();                                            // w.Grad holds dL/dW
            SafeTensorsWriter.Save("w.safetensors", new Dictionary<string, Tensor> { ["w"] = w }); // atomic write

            Assert.That(w.Grad!.Shape, Is.EqualTo(new[] { 16, 64 }));
            using var f = SafeTensorsFile.Open("w.safetensors");
            Assert.That(f.Info("w").Shape, Is.EqualTo(new[] { 16, 64 }));
        }
        finally
        {
            Environment.CurrentDirectory = cwd;
            Directory.Delete(dir, true);
        }
    }
}
