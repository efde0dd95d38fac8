// Build script: dotnet tool restore && dotnet cake --target=<Kernels|Build|Test|Pack|Bench>
var target = Argument("target", "Test");
var configuration = Argument("configuration", "Release");

Task("Kernels")
    .Description("Compile kernels/*.cu with nvcc into build/kernels/peft_kernels.fatbin (skipped, with a warning, without nvcc)")
    .Does(() =>
{
    var hostCompiler = EnvironmentVariable("PEFT_CUDA_HOST_COMPILER") ?? "clang-14";
    Run("cmake", $"-S . -B build -DPEFT_CUDA_HOST_COMPILER={hostCompiler}");
    Run("cmake", "--build build");
});

Task("Build")
    .Does(() => Run("dotnet", $"build Peft.Native.sln -c {configuration}"));

Task("Test")
    .IsDependentOn("Kernels")
    .Does(() => Run("dotnet", $"test Peft.Native.sln -c {configuration}"));

Task("Pack")
    .IsDependentOn("Build")
    .Does(() => Run("dotnet", $"pack Peft.Native.sln -c {configuration} -o artifacts/packages --no-build"));

Task("Bench")
    .Does(() => Run("dotnet", "run -c Release --project bench/Peft.Bench -- gemm"));

RunTarget(target);

void Run(string tool, string args)
{
    var code = StartProcess(tool, new ProcessSettings { Arguments = args });
    if (code != 0) throw new Exception($"{tool} {args} exited with {code}");
}
