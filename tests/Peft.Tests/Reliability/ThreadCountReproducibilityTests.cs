using System.Diagnostics;
using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft.Tests.Reliability;

/// <summary>
/// The same seed gives the same adapter bit for bit whatever the thread count: <c>peft train</c> runs LoRA on a
/// GPT-2 folder in child processes told they have 1, 2 and 4 processors (DOTNET_PROCESSOR_COUNT). The model is sized
/// so that the thread count matters — its GEMMs (up to 512 × 128 × 50257) split their rows over every thread and the
/// element-wise kernels split their rows into tasks — yet every thread owns whole output elements and reductions keep a
/// fixed order, so the bytes must agree.
/// </summary>
[TestFixture]
public class ThreadCountReproducibilityTests
{
    [Test]
    public void ALoraAdapterIsBitIdenticalOnOneTwoAndFourThreads()
    {
        var dir = Directory.CreateTempSubdirectory("peft-threads-").FullName;
        try
        {
            var model = Path.Combine(dir, "gpt2");
            var config = HfConfig.FromJson("""{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 128, "n_head": 4, "vocab_size": 50257, "n_positions": 128}""");
            Peft.Core.Random.Generator.Default.ManualSeed(8);
            using (var m = AutoModel.Create(config)) m.SavePretrained(model);
            Peft.TestSupport.Gpt2Vocabulary.CopyInto(model);
            var data = Path.Combine(dir, "lm.jsonl");
            string Line(int i) => new JsonObject { ["text"] = string.Join(' ', Enumerable.Range(0, 40).Select(k => $"word{(i * 7 + k * 3) % 50}")) }.ToJsonString();
            File.WriteAllLines(data, Enumerable.Range(0, 16).Select(Line));
            var eval = Path.Combine(dir, "eval.jsonl");
            File.WriteAllLines(eval, Enumerable.Range(16, 2).Select(Line));

            var cli = Path.Combine(TestContext.CurrentContext.TestDirectory, "peft.dll");   // Peft.Cli's assembly
            Assert.That(File.Exists(cli), $"{cli} is built with the tests");
            byte[] Train(int processors)
            {
                var output = Path.Combine(dir, $"p{processors}");
                var psi = new ProcessStartInfo("dotnet", $"\"{cli}\" train --model \"{model}\" --data \"{data}\" --eval-data \"{eval}\" --epochs 1 --batch-size 8 --max-length 64 --lr 1e-3 --output \"{output}\"")
                    { RedirectStandardOutput = true, RedirectStandardError = true };
                psi.Environment["DOTNET_PROCESSOR_COUNT"] = processors.ToString(System.Globalization.CultureInfo.InvariantCulture);
                using var p = Process.Start(psi)!;
                var stdout = p.StandardOutput.ReadToEndAsync();
                var stderr = p.StandardError.ReadToEndAsync();
                Assert.That(p.WaitForExit(300_000), "training finishes within 5 minutes");
                Assert.That(p.ExitCode, Is.EqualTo(0), stderr.Result);
                Assert.That(stdout.Result, Does.Contain("throughput: "));
                return File.ReadAllBytes(Path.Combine(output, "adapter_model.safetensors"));
            }
            var sw = Stopwatch.StartNew();
            var one = Train(1);
            Assert.That(Train(2), Is.EqualTo(one), "2 threads vs 1");
            Assert.That(Train(4), Is.EqualTo(one), "4 threads vs 1");
            TestContext.Out.WriteLine($"1, 2 and 4 threads: identical {one.Length:N0}-byte adapters ({sw.Elapsed.TotalSeconds:F0} s)");
        }
        finally { Directory.Delete(dir, true); }
    }
}
