namespace Peft.Bench;

/// <summary>The benchmark suites by name, shared by this program and the <c>peft bench</c> verb.</summary>
public static class Suites
{
    /// <summary>Suite names (the device ones say what they need and return where it is missing).</summary>
    public static readonly IReadOnlyList<string> Names = ["gemm", "gemm-threads", "gpt2-step", "gpt2-step-small", "tuner-layers", "lora-thin", "training-memory", "gemm-blocking", "kernels", "gpu-train", "mixed-batch"];

    /// <summary>Runs <paramref name="suite"/>, writing its report to <paramref name="o"/>; false for an unknown name.</summary>
    public static bool Run(string suite, TextWriter o)
    {
        switch (suite)
        {
            case "gpu-train":   // needs a CUDA GPU and PEFT_TRAIN_DIR from bench/gpu/hf_train_peer.py; says so otherwise
                GpuTrainBench.Run(o);
                return true;
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
            case "mixed-batch":
                MixedBatchBench.Run(o);
                return true;
            default:
                return false;
        }
    }
}
