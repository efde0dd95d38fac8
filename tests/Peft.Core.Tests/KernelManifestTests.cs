using System.Text.RegularExpressions;

namespace Peft.Core.Tests;

/// <summary>
/// Catches drift between the kernel declarations (native/include/peft_kernels.h, which the C# launchers mirror) and
/// the module nvcc built, without a GPU: every declared kernel must be a `.entry` in the PTX. CI builds the PTX with
/// nvcc before the tests; a machine without nvcc skips with the reason.
/// </summary>
[TestFixture]
public class KernelManifestTests
{
    private static readonly string Header = Path.Combine(RepoPaths.Root, "native", "include", "peft_kernels.h");
    private static readonly string Ptx = Path.Combine(RepoPaths.Root, "build", "kernels", "peft_kernels.ptx");

    internal static IReadOnlyList<string> DeclaredKernels() =>
        Regex.Matches(File.ReadAllText(Header), @"__global__\s+void\s+(\w+)\s*\(").Select(m => m.Groups[1].Value).ToList();

    [Test]
    public void TheHeaderDeclaresKernelsWithDTypeSuffixedNames()
    {
        var names = DeclaredKernels();
        Assert.That(names, Is.Not.Empty);
        Assert.That(names, Is.Unique);
        Assert.That(names, Has.All.Matches(@"(bf16|f16|f32|f64|i8|u8|nf4)"), "kernel names carry their dtype");
    }

    [Test]
    public void EveryDeclaredKernelIsAnEntryOfTheBuiltModule()
    {
        if (!File.Exists(Ptx))
            Assert.Ignore($"{Ptx} is missing: nvcc has not built the kernels on this machine (cmake -S . -B build && cmake --build build)");
        var entries = Regex.Matches(File.ReadAllText(Ptx), @"\.entry\s+(\w+)\(").Select(m => m.Groups[1].Value).ToHashSet();
        Assert.That(DeclaredKernels().Where(k => !entries.Contains(k)), Is.Empty, "declared in peft_kernels.h but absent from the PTX");
        Assert.That(entries.Where(e => !DeclaredKernels().Contains(e)), Is.Empty, "in the PTX but not declared in peft_kernels.h");
    }
}
