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
    case "gpt2-step-small":   // issue 10's comparison point: B = 4, T = 64, full fine-tuning and LoRA
        ModelStepBench.Run(Console.Out, batch: 4, seq: 64, steps: 5, lora: false);
        Console.WriteLine();
        ModelStepBench.Run(Console.Out, batch: 4, seq: 64, steps: 5, lora: true);
        return 0;
    case "tuner-layers":
        TunerLayerBench.Run(Console.Out);
        return 0;
    case "gemm":
        GemmBench.Run(Console.Out);
        return 0;
    default:
        Console.Error.WriteLine($"unknown suite '{suite}'. Suites: gemm, gemm-threads, gpt2-step, gpt2-step-small, tuner-layers");
        return 2;
}
