namespace Peft.Cli.Training;

/// <summary>Builds the PEFT config of <c>peft train --method</c> from the command's options.</summary>
internal static class MethodConfigs
{
    public static readonly string[] Supported = ["lora", "loha", "lokr", "adalora", "ia3", "vera", "oft", "boft", "prompt", "ptuning", "prefix", "llama-adapter"];
    public static readonly string[] NotYet = ["mpt"];

    /// <summary>PEFT's task_type for a CLI task name.</summary>
    public static string TaskType(string task) => task switch
    {
        "causal-lm" => "CAUSAL_LM",
        "seq-cls" => "SEQ_CLS",
        "token-cls" => "TOKEN_CLS",
        "seq2seq" => "SEQ_2_SEQ_LM",
        _ => throw new ArgumentException($"unknown --task '{task}' (causal-lm, seq-cls, token-cls, seq2seq)"),
    };

    /// <summary>The config for <paramref name="method"/>; r and alpha apply where the method has them; target modules
    /// default per architecture as in PEFT; AdaLoRA gets the run's total steps.</summary>
    public static PeftConfig Create(string method, string task, int r, double alpha, string[]? targets, int totalSteps, int virtualTokens, int modelLayers)
    {
        PeftConfig config = method switch
        {
            "lora" => new LoraConfig { R = r, LoraAlpha = alpha },
            "loha" => new LoHaConfig { R = r, Alpha = alpha },
            "lokr" => new LoKrConfig { R = r, Alpha = alpha },
            "adalora" => new AdaLoraConfig { InitR = Math.Max(r, 1) * 3 / 2, TargetR = r, LoraAlpha = alpha, TotalStep = Math.Max(totalSteps, 2), Tinit = totalSteps / 10, Tfinal = totalSteps / 5 },
            "ia3" => new IA3Config(),
            "vera" => new VeraConfig { R = r },
            "oft" => new OftConfig { R = 0, OftBlockSize = 32 },
            "boft" => new BoftConfig { BoftBlockSize = 4 },
            "prompt" => new PromptTuningConfig { NumVirtualTokens = virtualTokens },
            "ptuning" => new PromptEncoderConfig { NumVirtualTokens = virtualTokens },
            "prefix" => new PrefixTuningConfig { NumVirtualTokens = virtualTokens },
            // PEFT's LLaMA-Adapter recipe adapts most layers (30 of 32 for LLaMA-7B): all but the first two here.
            "llama-adapter" => new AdaptionPromptConfig { AdapterLen = virtualTokens, AdapterLayers = Math.Max(1, modelLayers - 2) },
            _ when NotYet.Contains(method) => throw new NotSupportedException($"--method {method} is not in this build yet (multitask prompt tuning needs per-sample task ids, which the data format has no field for); use one of {string.Join(", ", Supported)}"),
            _ => throw new ArgumentException($"unknown --method '{method}' (one of {string.Join(", ", Supported)})"),
        };
        config.TaskType = TaskType(task);
        if (targets != null)
        {
            if (config is not TunerConfig tuner) throw new ArgumentException($"--target-modules does not apply to --method {method} (a prompt-learning method)");
            tuner.TargetModules = targets;
        }
        config.Validate();
        return config;
    }
}
