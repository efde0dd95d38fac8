using System.Diagnostics;
using Peft.Core.SafeTensors;

namespace Peft.Tests.Reliability;

/// <summary>
/// Atomic saves under a hard kill: a child process (tests/Peft.SaveLoop) rewrites one adapter folder in a loop, and is
/// killed (SIGKILL) at seeded random moments. After every kill the folder must hold a complete adapter — the last save
/// the child reported, or the one it finished just before dying — never a torn or mixed file.
/// </summary>
[TestFixture]
public class KillMidSaveTests
{
    private static int Kills => int.TryParse(Environment.GetEnvironmentVariable("PEFT_KILL_POINTS"), out int n) ? n : 12;

    [Test]
    public void AKilledSaveLeavesThePreviousAdapterIntactAndLoadable()
    {
        var dir = Directory.CreateTempSubdirectory("peft-kill-").FullName;
        var child = Path.Combine(TestContext.CurrentContext.TestDirectory, "Peft.SaveLoop.dll");
        Assert.That(File.Exists(child), Is.True, $"{child} is built with the tests");
        var random = new System.Random(20261123);
        int killedAfterASave = 0;
        try
        {
            for (int kill = 0; kill < Kills; kill++)
            {
                int last = 0;
                var psi = new ProcessStartInfo("dotnet", $"\"{child}\" \"{dir}\"") { RedirectStandardOutput = true, RedirectStandardError = true };
                using var p = Process.Start(psi)!;
                p.OutputDataReceived += (_, e) => { if (int.TryParse(e.Data, out int i)) Volatile.Write(ref last, i); };
                p.BeginOutputReadLine();
                var stderr = p.StandardError.ReadToEndAsync();
                // Wait for the first save (startup varies), then a random slice of the save loop.
                var sw = Stopwatch.StartNew();
                while (Volatile.Read(ref last) == 0 && !p.HasExited && sw.ElapsedMilliseconds < 30_000) Thread.Sleep(5);
                if (p.HasExited) Assert.Fail($"the save loop died on its own: {stderr.Result}");   // (Result only once it has exited)
                Assert.That(Volatile.Read(ref last), Is.GreaterThan(0), "no save finished within 30 s");
                Thread.Sleep(random.Next(0, 250));
                p.Kill(entireProcessTree: true);
                p.WaitForExit();
                int reported = Volatile.Read(ref last);
                if (reported > 0) killedAfterASave++;

                var value = LoadedValue(dir);
                Assert.That(value, Is.InRange(reported, reported + 1),
                    $"kill {kill}: the folder holds save {value}; the child had reported {reported} (the save after it may have completed unreported)");
            }
            Assert.That(killedAfterASave, Is.EqualTo(Kills), "every kill landed inside the save loop");
            // Temp files of the killed writers stay until the next save into the folder, which removes them.
            using (var scope = Tensor.NewScope())
            using (var peft = PeftModel.FromPretrained(Cases.Create(Cases.Gpt2), dir))
                peft.SavePretrained(dir);
            Assert.That(Directory.GetFiles(dir, "*.tmp"), Is.Empty, "the next save cleans the dead writers' temp files");
            TestContext.Out.WriteLine($"{Kills} kill points survived; the folder loaded after each");
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>The save number stored in the folder's adapter: every lora_B element equal, else the file is torn.</summary>
    private static int LoadedValue(string dir)
    {
        var config = PeftConfig.Load(dir);
        Assert.That(config, Is.InstanceOf<LoraConfig>(), "adapter_config.json parses");
        using var file = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
        var values = new HashSet<float>();
        foreach (var info in file.Tensors.Where(t => t.Name.Contains("lora_B")))
        {
            using var t = file.Load(info.Name);
            foreach (var v in t.ToFloatArray()) values.Add(v);
        }
        Assert.That(values, Has.Count.EqualTo(1), "every lora_B element comes from the same save");
        return (int)values.Single();
    }
}
