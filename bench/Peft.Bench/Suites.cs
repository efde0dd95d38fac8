namespace Peft.Bench;

/// <summary>The benchmark suites by name, shared by this program and the <c>peft bench</c> verb.</summary>
public static class Suites
{
    /// <summary>Suite names, in the order <c>all</c> runs them.</summary>
    public static readonly IReadOnlyList<string> Names = ["gemm", "gemm-threads", "gpt2-step", "gpt2-step-small", "tuner-layers", "lora-thin", "training-memory", "kernels"];

    /// <summary>Runs <paramref name="suite"/>, writing its report to <paramref name="o"/>; false for an unknown name.</summary>
    public static bool Run(string suite, TextWriter o)
    {
        switch (suite)
        {
            case "gemm-blocking":
                GemmBlocking.Run(o);
                return true;
            case "gemm-threads":
                GemmThreads.Run(o);
                return true;
            case "gpt2-step":
                ModelStepBench.Run(o);
                return true;
            case "gpt2-step-small":   // issue 10's comparison point: B = 4, T = 64, full fine-tuning and LoRA
                ModelStepBench.Run(o, batch: 4, seq: 64, steps: 5, lora: false);
                o.WriteLine();
                ModelStepBench.Run(o, batch: 4, seq: 64, steps: 5, lora: true);
                return true;
            case "tuner-layers":
                TunerLayerBench.Run(o);
                return true;
            case "lora-thin":
                LoraThinAb.Run(o);
                return true;
            case "training-memory":
                TrainingMemoryBench.Run(o);
                return true;
            case "kernels":   // needs a CUDA GPU; says so and returns otherwise
                CudaKernelBench.Run(o);
                return true;
            case "kernels-lora":   // the LoRA part of `kernels` alone (to profile it)
                CudaKernelBench.Run(o, loraOnly: true);
                return true;
            case "gemm":
                GemmBench.Run(o);
                return true;
            default:
                return false;
        }
    }
}
