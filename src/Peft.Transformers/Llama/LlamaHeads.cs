using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.Llama;

/// <summary>Shared plumbing of the LLaMA head models: the <c>model</c> trunk.</summary>
public abstract class LlamaPreTrainedModel : PreTrainedModel
{
    /// <summary>Creates the trunk.</summary>
    protected LlamaPreTrainedModel(LlamaConfig cfg)
    {
        Config = cfg;
        RegisterModule("model", new LlamaModel(cfg));
    }

    /// <summary>The configuration.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The trunk.</summary>
    public LlamaModel Model => Child<LlamaModel>("model");

    /// <inheritdoc/>
    public override string ModelType => Config.ModelType;

    /// <inheritdoc/>
    public override string BaseModelPrefix => "model";

    /// <summary>"Llama", "Mistral" or "Qwen2": the class-name stem transformers uses for this family member.</summary>
    protected string ArchitecturePrefix => Config.ModelType switch { "mistral" => "Mistral", "qwen2" => "Qwen2", _ => "Llama" };

    /// <inheritdoc/>
    public override int NumLayers => Config.NumHiddenLayers;

    /// <inheritdoc/>
    public override IEnumerable<string> IgnoredCheckpointKeys => [".rotary_emb.inv_freq"];

    /// <inheritdoc/>
    public override Embedding? InputEmbeddings => Model.EmbedTokens;

    /// <inheritdoc/>
    public override PromptDimensions? PromptDimensions =>
        new(Config.HiddenSize, Config.NumHiddenLayers, Config.NumAttentionHeads, Config.NumKeyValueHeads, Config.HeadDim);
}

/// <summary>transformers' LlamaForCausalLM: trunk + <c>lm_head</c> (tied to embed_tokens when tie_word_embeddings).</summary>
public sealed class LlamaForCausalLM : LlamaPreTrainedModel
{
    /// <summary>Creates the model.</summary>
    public LlamaForCausalLM(LlamaConfig cfg) : base(cfg)
    {
        RegisterModule("lm_head", new Linear(cfg.HiddenSize, cfg.VocabSize, bias: false).NormalInit(cfg.InitializerRange));
        TieWeights();
    }

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.CausalLM;

    /// <inheritdoc/>
    public override string ArchitectureName => ArchitecturePrefix + "ForCausalLM";

    /// <inheritdoc/>
    public override void TieWeights()
    {
        if (!Config.TieWordEmbeddings) return;
        var head = Child<Linear>("lm_head");
        head.SetParameter("weight", Model.EmbedTokens.Weight);
    }

    /// <inheritdoc/>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        using var hidden = Model.Forward(input, attentionMask, cache);
        var logits = Child<IUnaryModule>("lm_head").Forward(hidden);
        return new ModelOutput(logits, labels == null ? null : TaskHeads.CausalLmLoss(logits, labels), cache);
    }
}

/// <summary>transformers' LlamaForSequenceClassification: <c>score</c> (no bias) on the last non-padding token.</summary>
public sealed class LlamaForSequenceClassification : LlamaPreTrainedModel
{
    /// <summary>Creates the model.</summary>
    public LlamaForSequenceClassification(LlamaConfig cfg) : base(cfg) =>
        RegisterModule("score", new Linear(cfg.HiddenSize, cfg.NumLabels, bias: false).NormalInit(cfg.InitializerRange));

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.SequenceClassification;

    /// <inheritdoc/>
    public override string ArchitectureName => ArchitecturePrefix + "ForSequenceClassification";

    /// <inheritdoc/>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        using var hidden = Model.Forward(input, attentionMask, cache);
        return TaskHeads.ClassifyLastToken(Child<IUnaryModule>("score"), hidden, input, Config.PadTokenId, Config.NumLabels, labels);
    }
}
