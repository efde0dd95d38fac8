using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// PEFT's MultitaskPromptTuningConfig (<c>peft_type = "MULTITASK_PROMPT_TUNING"</c>): a shared prompt times a
/// task-specific low-rank matrix, prompt ⊙ (cols[task]·rows[task]) with <c>prefix_task_cols</c> [tasks, tokens, ranks]
/// and <c>prefix_task_rows</c> [tasks, ranks, token_dim] ~ N(0, 0.02); every forward takes one task id per sample.
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

    /// <summary>Rank of each task's matrix.</summary>
    public int NumRanks { get => (int)GetDouble("num_ranks", 1); set => Json["num_ranks"] = value; }

    /// <inheritdoc/>
    public override PeftConfig Clone() => new MultitaskPromptTuningConfig((JsonObject)Json.DeepClone());

    /// <inheritdoc/>
    public override void Validate()
    {
        if (NumVirtualTokens <= 0) throw new InvalidOperationException($"num_virtual_tokens must be positive, got {NumVirtualTokens}");
        if (PromptTuningInit is not ("RANDOM" or "TEXT"))
            throw new NotSupportedException($"prompt_tuning_init '{PromptTuningInit}' is not supported for multitask prompt tuning here (RANDOM, TEXT)");
        if (NumTasks < 1 || NumRanks < 1) throw new InvalidOperationException($"num_tasks and num_ranks must be positive (got {NumTasks}, {NumRanks})");
    }

    internal override bool SupportsEncoderDecoder => false;

    internal override PromptEncoder CreateEncoder(PreTrainedModel model)
    {
        var encoder = new MultitaskPromptEmbedding(TotalVirtualTokens, TokenDim!.Value, NumTasks, NumRanks);
        if (!InferenceMode && PromptTuningInit == "TEXT") encoder.Initialise(this, model);
        return encoder;
    }
}
