using Peft.Bench;

// Peft.Bench: benchmark suites. Usage: dotnet run -c Release --project bench/Peft.Bench -- gemm
var suite = args.Length > 0 ? args[0] : "gemm";
switch (suite)
{
    case "gemm-threads":
        GemmThreads.Run(Console.Out);
        return 0;
    case "gpt2-step":
        ModelStepBench.Run(Console.Out);
        return 0;
    case "gemm":
        GemmBench.Run(Console.Out);
        return 0;
    default:
        Console.Error.WriteLine($"unknown suite '{suite}'. Suites: gemm, gemm-threads, gpt2-step");
        return 2;
}
