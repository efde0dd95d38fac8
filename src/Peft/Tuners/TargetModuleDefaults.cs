namespace Peft;

/// <summary>
/// The modules PEFT adapts when a config names none (utils/constants.py's TRANSFORMERS_MODELS_TO_*_TARGET_MODULES_MAPPING),
/// for the model types this library loads. (IA)³ also gets its default feed-forward modules.
/// </summary>
public static class TargetModuleDefaults
{
    private static readonly Dictionary<string, string[]> Attention = new()
    {
        ["gpt2"] = ["c_attn"], ["llama"] = ["q_proj", "v_proj"], ["mistral"] = ["q_proj", "v_proj"], ["qwen2"] = ["q_proj", "v_proj"],
        ["bert"] = ["query", "value"], ["roberta"] = ["query", "value"], ["t5"] = ["q", "v"], ["mt5"] = ["q", "v"], ["vit"] = ["query", "value"],
    };

    private static readonly Dictionary<string, (string[] Targets, string[] Feedforward)> IA3 = new()
    {
        ["gpt2"] = (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
        ["llama"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["mistral"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["qwen2"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["bert"] = (["key", "value", "output.dense"], ["output.dense"]),
        ["roberta"] = (["key", "value", "output.dense"], ["output.dense"]),
        ["t5"] = (["k", "v", "wo"], ["wo"]),
        ["mt5"] = (["k", "v", "wi_1"], ["wi_1"]),
        ["vit"] = (["query", "value", "output.dense"], ["output.dense"]),
    };

    /// <summary>Fills target_modules (and (IA)³'s feedforward_modules) of <paramref name="config"/> from
    /// <paramref name="modelType"/> when it names none; throws, as PEFT, when there is no default.</summary>
    public static void Apply(TunerConfig config, string modelType)
    {
        if (config.TargetModules != null || config.TargetModulesRegex != null) return;
        if (config is IA3Config ia3)
        {
            if (!IA3.TryGetValue(modelType, out var d)) throw NoDefault(config, modelType);
            ia3.TargetModules = d.Targets;
            ia3.FeedforwardModules ??= d.Feedforward;
            return;
        }
        config.TargetModules = Attention.TryGetValue(modelType, out var t) ? t : throw NoDefault(config, modelType);
    }

    private static ArgumentException NoDefault(TunerConfig config, string modelType) =>
        new($"target_modules is not set and {config.PeftType} has no default for model type '{modelType}': please specify target_modules");
}
