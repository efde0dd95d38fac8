using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.Gpt2;

/// <summary>Shared plumbing of the GPT-2 head models: the <c>transformer</c> trunk and checkpoint details.</summary>
public abstract class Gpt2PreTrainedModel : PreTrainedModel
{
    /// <summary>Creates the trunk.</summary>
    protected Gpt2PreTrainedModel(Gpt2Config cfg)
    {
        Config = cfg;
        RegisterModule("transformer", new Gpt2Model(cfg));
    }

    /// <summary>The configuration.</summary>
    public Gpt2Config Config { get; }

    /// <summary>The trunk.</summary>
    public Gpt2Model Transformer => Child<Gpt2Model>("transformer");

    /// <inheritdoc/>
    public override string ModelType => "gpt2";

    /// <inheritdoc/>
    public override string BaseModelPrefix => "transformer";

    /// <inheritdoc/>
    public override int NumLayers => Config.NLayer;

    /// <inheritdoc/>
    public override IEnumerable<string> IgnoredCheckpointKeys => [".attn.bias", ".attn.masked_bias"];

    /// <inheritdoc/>
    public override Embedding? InputEmbeddings => Transformer.Wte;

    /// <inheritdoc/>
    public override PromptDimensions? PromptDimensions => new(Config.NEmbd, Config.NLayer, Config.NHead, Config.NHead, Config.HeadDim);
}

/// <summary>transformers' GPT2LMHeadModel: trunk + <c>lm_head</c> (no bias) tied to <c>transformer.wte</c>.</summary>
public sealed class Gpt2LMHeadModel : Gpt2PreTrainedModel
{
    /// <summary>Creates the model (randomly initialised until weights are loaded).</summary>
    public Gpt2LMHeadModel(Gpt2Config cfg) : base(cfg)
    {
        RegisterModule("lm_head", new Linear(cfg.NEmbd, cfg.VocabSize, bias: false));
        TieWeights();
    }

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.CausalLM;

    /// <inheritdoc/>
    public override string ArchitectureName => "GPT2LMHeadModel";

    /// <inheritdoc/>
    public override void TieWeights()
    {
        if (!Config.TieWordEmbeddings) return;
        var head = Child<Linear>("lm_head");
        head.SetParameter("weight", Transformer.Wte.Weight);
    }

    /// <inheritdoc/>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        using var hidden = Transformer.Forward(input, attentionMask, cache);
        var logits = Child<IUnaryModule>("lm_head").Forward(hidden);
        return new ModelOutput(logits, labels == null ? null : TaskHeads.CausalLmLoss(logits, labels), cache);
    }
}

/// <summary>transformers' GPT2ForSequenceClassification: <c>score</c> (no bias) on the last non-padding token.</summary>
public sealed class Gpt2ForSequenceClassification : Gpt2PreTrainedModel
{
    /// <summary>Creates the model.</summary>
    public Gpt2ForSequenceClassification(Gpt2Config cfg) : base(cfg) =>
        RegisterModule("score", new Linear(cfg.NEmbd, cfg.NumLabels, bias: false));

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.SequenceClassification;

    /// <inheritdoc/>
    public override string ArchitectureName => "GPT2ForSequenceClassification";

    /// <inheritdoc/>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        using var hidden = Transformer.Forward(input, attentionMask, cache);
        return TaskHeads.ClassifyLastToken(Child<IUnaryModule>("score"), hidden, input, Config.PadTokenId, Config.NumLabels, labels);
    }
}

/// <summary>transformers' GPT2ForTokenClassification: dropout + <c>classifier</c> on every token.</summary>
public sealed class Gpt2ForTokenClassification : Gpt2PreTrainedModel
{
    /// <summary>Creates the model.</summary>
    public Gpt2ForTokenClassification(Gpt2Config cfg) : base(cfg)
    {
        RegisterModule("dropout", new Dropout(cfg.ClassifierDropout ?? 0.1));
        RegisterModule("classifier", new Linear(cfg.NEmbd, cfg.NumLabels));
    }

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.TokenClassification;

    /// <inheritdoc/>
    public override string ArchitectureName => "GPT2ForTokenClassification";

    /// <inheritdoc/>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        using var hidden = Transformer.Forward(input, attentionMask, cache);
        using var dropped = Child<IUnaryModule>("dropout").Forward(hidden);
        var logits = Child<IUnaryModule>("classifier").Forward(dropped);
        return new ModelOutput(logits, labels == null ? null : TaskHeads.TokenClassificationLoss(logits, labels));
    }
}
