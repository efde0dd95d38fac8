namespace Peft.Cli.Training;

/// <summary>Builds the PEFT config of <c>peft train --method</c> from the command's options.</summary>
internal static class MethodConfigs
{
    public static readonly string[] Layered = ["lora", "loha", "lokr", "adalora", "ia3", "vera", "oft", "boft"];
    public static readonly string[] PromptLearning = ["prompt", "prefix", "ptuning", "mpt", "llama-adapter"];

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
    public static TunerConfig Create(string method, string task, int r, double alpha, string[]? targets, int totalSteps)
    {
        TunerConfig config = method switch
        {
            "lora" => new LoraConfig { R = r, LoraAlpha = alpha },
            "loha" => new LoHaConfig { R = r, Alpha = alpha },
            "lokr" => new LoKrConfig { R = r, Alpha = alpha },
            "adalora" => new AdaLoraConfig { InitR = Math.Max(r, 1) * 3 / 2, TargetR = r, LoraAlpha = alpha, TotalStep = Math.Max(totalSteps, 2), Tinit = totalSteps / 10, Tfinal = totalSteps / 5 },
            "ia3" => new IA3Config(),
            "vera" => new VeraConfig { R = r },
            "oft" => new OftConfig { R = 0, OftBlockSize = 32 },
            "boft" => new BoftConfig { BoftBlockSize = 4 },
            _ when PromptLearning.Contains(method) => throw new NotSupportedException($"--method {method}: prompt-learning methods are not in this build yet (they arrive with the prompt-learning issue); use one of {string.Join(", ", Layered)}"),
            _ => throw new ArgumentException($"unknown --method '{method}' (one of {string.Join(", ", Layered)})"),
        };
        config.TaskType = TaskType(task);
        if (targets != null) config.TargetModules = targets;
        config.Validate();
        return config;
    }
}
