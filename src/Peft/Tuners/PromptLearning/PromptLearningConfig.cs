using System.Text.Json.Nodes;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// What the soft-prompt methods share (PEFT's PromptLearningConfig): num_virtual_tokens, and the sizes PEFT fills in
/// from the model when absent — token_dim, num_layers, num_attention_heads, num_transformer_submodules (1 for decoder
/// models). Their adapter file holds one tensor, <c>prompt_embeddings</c>: the encoder's output, which a loaded
/// (inference) adapter uses directly.
/// </summary>
public abstract class PromptLearningConfig : PeftConfig
{
    /// <summary>Creates a config over <paramref name="json"/>.</summary>
    protected PromptLearningConfig(JsonObject json) : base(json) { }

    /// <summary>The fields every prompt-learning config writes.</summary>
    protected static JsonObject CommonDefaults(string peftType) => new()
    {
        ["auto_mapping"] = null, ["base_model_name_or_path"] = null, ["inference_mode"] = false, ["modules_to_save"] = null,
        ["num_attention_heads"] = null, ["num_layers"] = null, ["num_transformer_submodules"] = null, ["num_virtual_tokens"] = null,
        ["peft_type"] = peftType, ["revision"] = null, ["task_type"] = null, ["token_dim"] = null,
    };

    /// <summary>Number of virtual tokens (required).</summary>
    public int NumVirtualTokens { get => (int)GetDouble("num_virtual_tokens", 0); set => Json["num_virtual_tokens"] = value; }

    /// <summary>Embedding width (filled from the model).</summary>
    public int? TokenDim { get => Json["token_dim"] == null ? null : (int)GetDouble("token_dim", 0); set => Json["token_dim"] = value; }

    /// <summary>Decoder layers (filled from the model).</summary>
    public int? NumLayers { get => Json["num_layers"] == null ? null : (int)GetDouble("num_layers", 0); set => Json["num_layers"] = value; }

    /// <summary>Attention heads of the prefix keys/values (filled from the model).</summary>
    public int? NumAttentionHeads { get => Json["num_attention_heads"] == null ? null : (int)GetDouble("num_attention_heads", 0); set => Json["num_attention_heads"] = value; }

    /// <summary>1 for decoder models, 2 for encoder-decoder models (filled from the model).</summary>
    public int? NumTransformerSubmodules { get => Json["num_transformer_submodules"] == null ? null : (int)GetDouble("num_transformer_submodules", 1); set => Json["num_transformer_submodules"] = value; }

    /// <summary>Virtual tokens times submodules: the rows of <c>prompt_embeddings</c> for prompt-style methods.</summary>
    public int TotalVirtualTokens => NumVirtualTokens * (NumTransformerSubmodules ?? 1);

    /// <inheritdoc/>
    public override void Validate()
    {
        if (NumVirtualTokens <= 0) throw new InvalidOperationException($"num_virtual_tokens must be positive, got {NumVirtualTokens}");
    }

    /// <summary>PEFT's _prepare_prompt_learning_config: fills the model sizes that are absent.</summary>
    internal virtual void FillFrom(PreTrainedModel model)
    {
        var dims = model.PromptDimensions
            ?? throw new NotSupportedException($"{PeftType} needs a model that takes inputs_embeds (GPT-2, LLaMA family, BERT/RoBERTa, T5); {model.ArchitectureName} does not yet");
        if (model.Task is not (ModelTask.CausalLM or ModelTask.SequenceClassification or ModelTask.Seq2SeqLM))
            throw new NotSupportedException($"{PeftType} supports the CAUSAL_LM, SEQ_CLS and SEQ_2_SEQ_LM tasks here, not {model.Task}");
        if (model.Task == ModelTask.Seq2SeqLM && !SupportsEncoderDecoder)
            throw new NotSupportedException($"{PeftType} on an encoder-decoder model is not supported here yet (prompt tuning and P-tuning are)");
        NumLayers ??= dims.Layers;
        TokenDim ??= dims.TokenDim;
        NumAttentionHeads ??= dims.AttentionHeads;
        NumTransformerSubmodules ??= model.Task == ModelTask.Seq2SeqLM ? 2 : 1;   // PEFT: encoder + decoder
    }

    /// <summary>True for the methods that work on T5-style encoder-decoder models here (prompts before the encoder input).</summary>
    internal virtual bool SupportsEncoderDecoder => false;

    /// <summary>The trainable module that produces the prompts (or prefix) for <paramref name="model"/>.</summary>
    internal abstract PromptEncoder CreateEncoder(PreTrainedModel model);
}
