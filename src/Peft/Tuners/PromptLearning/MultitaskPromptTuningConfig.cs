using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// PEFT's MultitaskPromptTuningConfig (<c>peft_type = "MULTITASK_PROMPT_TUNING"</c>): a shared prompt times a
/// task-specific low-rank matrix, prompt ⊙ (cols[task]·rows[task]) with <c>prefix_task_cols</c> [tasks, tokens, ranks]
/// and <c>prefix_task_rows</c> [tasks, ranks, token_dim] ~ N(0, 0.02); every forward takes one task id per sample.
/// prompt_tuning_init RANDOM, TEXT, or from a source MPT adapter (prompt_tuning_init_state_dict_path: its
/// adapter_model.safetensors): AVERAGE_SOURCE_TASKS (the mean of the source task matrices), EXACT_SOURCE_TASK
/// (source task prompt_tuning_init_task) or ONLY_SOURCE_SHARED (the shared prompt only), as PEFT.
/// </summary>
public sealed class MultitaskPromptTuningConfig : PromptTuningConfig
{
    /// <summary>A config with PEFT's defaults.</summary>
    public MultitaskPromptTuningConfig() : base(MptDefaults()) { }

    internal MultitaskPromptTuningConfig(JsonObject json) : base(json) => Validate();

    private static JsonObject MptDefaults()
    {
        var json = Defaults("MULTITASK_PROMPT_TUNING");
        json["num_ranks"] = 1;
        json["num_tasks"] = 1;
        json["prompt_tuning_init_state_dict_path"] = null;
        json["prompt_tuning_init_task"] = 0;
        return json;
    }

    /// <summary>Number of tasks.</summary>
    public int NumTasks { get => (int)GetDouble("num_tasks", 1); set => Json["num_tasks"] = value; }

    /// <summary>The source adapter (safetensors) of the AVERAGE_SOURCE_TASKS / EXACT_SOURCE_TASK / ONLY_SOURCE_SHARED inits.</summary>
    public string? PromptTuningInitStateDictPath { get => GetString("prompt_tuning_init_state_dict_path"); set => Json["prompt_tuning_init_state_dict_path"] = value; }

    /// <summary>The source task EXACT_SOURCE_TASK copies.</summary>
    public int PromptTuningInitTask { get => (int)GetDouble("prompt_tuning_init_task", 0); set => Json["prompt_tuning_init_task"] = value; }

    internal bool InitialisesFromSource => PromptTuningInit is "AVERAGE_SOURCE_TASKS" or "EXACT_SOURCE_TASK" or "ONLY_SOURCE_SHARED";

    /// <summary>Rank of each task's matrix.</summary>
    public int NumRanks { get => (int)GetDouble("num_ranks", 1); set => Json["num_ranks"] = value; }

    /// <inheritdoc/>
    public override PeftConfig Clone() => new MultitaskPromptTuningConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        if (NumVirtualTokens <= 0) throw new InvalidOperationException($"num_virtual_tokens must be positive, got {NumVirtualTokens}");
        if (PromptTuningInit is not ("RANDOM" or "TEXT") && !InitialisesFromSource)
            throw new InvalidOperationException($"prompt_tuning_init '{PromptTuningInit}' is not a multitask prompt tuning init (RANDOM, TEXT, AVERAGE_SOURCE_TASKS, EXACT_SOURCE_TASK, ONLY_SOURCE_SHARED)");
        if (InitialisesFromSource && !InferenceMode && string.IsNullOrEmpty(PromptTuningInitStateDictPath))
            throw new InvalidOperationException($"prompt_tuning_init_state_dict_path needs to be specified with the {PromptTuningInit} init");
        if (NumTasks < 1 || NumRanks < 1) throw new InvalidOperationException($"num_tasks and num_ranks must be positive (got {NumTasks}, {NumRanks})");
    }

    internal override bool SupportsEncoderDecoder => false;

    internal override PromptEncoder CreateEncoder(PreTrainedModel model)
    {
        var encoder = new MultitaskPromptEmbedding(TotalVirtualTokens, TokenDim!.Value, NumTasks, NumRanks);
        if (!InferenceMode && PromptTuningInit == "TEXT") encoder.Initialise(this, model);
        if (!InferenceMode && InitialisesFromSource) encoder.InitialiseFromSource(this);
        return encoder;
    }
}
