using System.Diagnostics;

namespace Peft.Tests;

/// <summary>
/// The NuGet packages are complete: they are packed from this build into a local folder feed, a fresh console app
/// references Peft.Native from that feed only (its other dependencies come from the usual package source), and it runs
/// a LoRA training step and saves the adapter.
/// </summary>
[TestFixture]
public class PackageInstallTests
{
    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Peft.Native.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("repository root not found");
    }

    private static (int Code, string Output) Dotnet(string args, string workingDirectory)
    {
        var psi = new ProcessStartInfo("dotnet", args) { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5))) { p.Kill(true); return (-1, "timed out"); }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    [Test]
    public void AFreshConsoleAppInstallsThePackageAndTrainsALoraStep()
    {
        var dir = Directory.CreateTempSubdirectory("peft-package-").FullName;
        try
        {
            var feed = Path.Combine(dir, "feed");
            // A version of its own, so no package cached by an earlier run can stand in for this build's.
            var version = "0.1.0-test" + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff");
            var configuration = TestContext.CurrentContext.TestDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";
            foreach (var project in new[] { "Peft.Core", "Peft.Nn", "Peft.Transformers", "Peft" })
            {
                var (code, output) = Dotnet($"pack src/{project}/{project}.csproj -c {configuration} --no-build -o \"{feed}\" -p:PackageVersion={version}", RepoRoot());
                Assert.That(code, Is.EqualTo(0), output);
            }
            Assert.That(Directory.GetFiles(feed, "Peft.Native." + version + ".nupkg"), Has.Length.EqualTo(1));
            using (var zip = System.IO.Compression.ZipFile.OpenRead(Path.Combine(feed, $"Peft.Native.{version}.nupkg")))
                Assert.That(zip.Entries.Select(e => e.FullName), Does.Contain("README.md").And.Contain("lib/net10.0/Peft.Native.xml").And.Contain("lib/net10.0/Peft.Native.dll"));

            var app = Path.Combine(dir, "app");
            Directory.CreateDirectory(app);
            File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <add key="peft-local" value="{feed}" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "app.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <Nullable>enable</Nullable>
                    <ImplicitUsings>enable</ImplicitUsings>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="Peft.Native" Version="{version}" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), """"
                using Peft;
                using Peft.Core;
                using Peft.Transformers;

                var config = HfConfig.FromJson("""{"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 40, "n_positions": 16}""");
                using var peft = PeftModel.Create(AutoModel.Create(config), new LoraConfig { R = 4, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
                var ids = Tensor.FromArray(new long[] { 1, 5, 9, 3, 7 }, [1, 5]);
                var loss = peft.Forward(ids, labels: ids).Loss!;
                loss.Backward();
                peft.SavePretrained(Path.Combine(AppContext.BaseDirectory, "adapter"));
                Console.WriteLine($"ok {loss.Item():F4} {peft.TrainableParametersLine()}");
                """");
            var (runCode, runOutput) = Dotnet("run -c Release", app);
            Assert.That(runCode, Is.EqualTo(0), runOutput);
            Assert.That(runOutput, Does.Contain("ok ").And.Contain("trainable params: 256 ||"));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>The Peft.Cuda package carries the kernels nvcc built (build/kernels/peft_kernels.fatbin) inside its
    /// assembly, byte for byte, so an application needs no CUDA toolkit, only the driver.</summary>
    [Test]
    public void ThePeftCudaPackageCarriesTheKernelFatbin()
    {
        var fatbin = Path.Combine(RepoRoot(), "build", "kernels", "peft_kernels.fatbin");
        if (!File.Exists(fatbin)) Assert.Ignore($"{fatbin} is missing: nvcc has not built the kernels on this machine (CI builds them before the tests)");
        var dir = Directory.CreateTempSubdirectory("peft-cuda-package-").FullName;
        try
        {
            var version = "0.1.0-test" + DateTime.UtcNow.ToString("yyyyMMddHHmmssfff");
            var configuration = TestContext.CurrentContext.TestDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";
            var (code, output) = Dotnet($"pack src/Peft.Cuda/Peft.Cuda.csproj -c {configuration} --no-build -o \"{dir}\" -p:PackageVersion={version}", RepoRoot());
            Assert.That(code, Is.EqualTo(0), output);
            using var zip = System.IO.Compression.ZipFile.OpenRead(Path.Combine(dir, $"Peft.Cuda.{version}.nupkg"));
            var dll = zip.GetEntry("lib/net10.0/Peft.Cuda.dll") ?? throw new AssertionException("the package has no lib/net10.0/Peft.Cuda.dll");
            Assert.That(zip.Entries.Select(e => e.FullName), Does.Contain("README.md").And.Contain("lib/net10.0/Peft.Cuda.xml"));
            using var stream = new MemoryStream();
            using (var entry = dll.Open()) entry.CopyTo(stream);
            Assert.That(EmbeddedResource(stream.ToArray(), "peft_kernels.fatbin"), Is.EqualTo(File.ReadAllBytes(fatbin)));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>The bytes of manifest resource <paramref name="name"/> of an assembly image (read with System.Reflection.Metadata: no load).</summary>
    private static byte[] EmbeddedResource(byte[] image, string name)
    {
        using var pe = new System.Reflection.PortableExecutable.PEReader(new MemoryStream(image));
        var md = System.Reflection.Metadata.PEReaderExtensions.GetMetadataReader(pe);
        foreach (var handle in md.ManifestResources)
        {
            var resource = md.GetManifestResource(handle);
            if (md.GetString(resource.Name) != name) continue;
            var section = pe.GetSectionData(pe.PEHeaders.CorHeader!.ResourcesDirectory.RelativeVirtualAddress);
            var reader = section.GetReader((int)resource.Offset, section.Length - (int)resource.Offset);
            int length = reader.ReadInt32();
            return reader.ReadBytes(length);
        }
        throw new AssertionException($"the assembly embeds no resource '{name}'");
    }
}
