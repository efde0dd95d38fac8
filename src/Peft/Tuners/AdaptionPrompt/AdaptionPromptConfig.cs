using System.Text.Json.Nodes;

namespace Peft;

/// <summary>
/// PEFT's AdaptionPromptConfig (LLaMA-Adapter, <c>peft_type = "ADAPTION_PROMPT"</c>): adapter_len learned prompt vectors
/// in each of the top adapter_layers attention modules (target_modules, "self_attn" for LLaMA), read through the
/// layer's own k/v projections and added to the attention output through a zero-initialised gate.
/// </summary>
/// <example><code>var config = new AdaptionPromptConfig { AdapterLen = 10, AdapterLayers = 2, TaskType = "CAUSAL_LM" };</code></example>
public sealed class AdaptionPromptConfig : PeftConfig
{
    /// <summary>A config with PEFT's defaults (adapter_len and adapter_layers must be set).</summary>
    public AdaptionPromptConfig() : base(new JsonObject
    {
        ["adapter_layers"] = null, ["adapter_len"] = null, ["auto_mapping"] = null, ["base_model_name_or_path"] = null,
        ["inference_mode"] = false, ["peft_type"] = "ADAPTION_PROMPT", ["revision"] = null, ["target_modules"] = null, ["task_type"] = null,
    }) { }

    internal AdaptionPromptConfig(JsonObject json) : base(json) => Validate();

    /// <summary>Name of the attention submodules to adapt (default "self_attn", as PEFT for LLaMA-family models).</summary>
    public string TargetModules { get => GetString("target_modules") ?? "self_attn"; set => Json["target_modules"] = value; }

    /// <summary>Prompt vectors per adapted layer.</summary>
    public int AdapterLen { get => (int)GetDouble("adapter_len", 0); set => Json["adapter_len"] = value; }

    /// <summary>How many of the top layers get a prompt.</summary>
    public int AdapterLayers { get => (int)GetDouble("adapter_layers", 0); set => Json["adapter_layers"] = value; }

    /// <inheritdoc/>
    public override PeftConfig Clone() => new AdaptionPromptConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        if (AdapterLen <= 0) throw new InvalidOperationException($"adapter_len must be positive, got {AdapterLen}");
        if (AdapterLayers <= 0) throw new InvalidOperationException($"adapter_layers must be positive, got {AdapterLayers}");
        if (ModulesToSave is { Length: > 0 }) throw new InvalidOperationException("adaption prompt does not support modules_to_save");
    }
}
