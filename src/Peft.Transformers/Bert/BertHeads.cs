using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.Bert;

/// <summary>Shared plumbing of BERT/RoBERTa heads: the trunk under "bert" or "roberta".</summary>
public abstract class BertPreTrainedModel : PreTrainedModel
{
    /// <summary>Creates the trunk.</summary>
    protected BertPreTrainedModel(BertConfig cfg, bool addPoolingLayer)
    {
        Config = cfg;
        RegisterModule(cfg.IsRoberta ? "roberta" : "bert", new BertModel(cfg, addPoolingLayer));
    }

    /// <summary>The configuration.</summary>
    public BertConfig Config { get; }

    /// <summary>The trunk.</summary>
    public BertModel Trunk => Child<BertModel>(BaseModelPrefix);

    /// <inheritdoc/>
    public override Embedding? InputEmbeddings => Trunk.Embeddings.WordEmbeddings;

    /// <inheritdoc/>
    public override PromptDimensions? PromptDimensions => new(Config.HiddenSize, Config.NumHiddenLayers, Config.NumAttentionHeads,
        Config.NumAttentionHeads, Config.HiddenSize / Config.NumAttentionHeads, TakesPastKeyValues: false);

    /// <inheritdoc/>
    public override string ModelType => Config.ModelType;

    /// <inheritdoc/>
    public override string BaseModelPrefix => Config.IsRoberta ? "roberta" : "bert";

    /// <inheritdoc/>
    public override int NumLayers => Config.NumHiddenLayers;

    /// <inheritdoc/>
    public override IEnumerable<string> IgnoredCheckpointKeys => [".position_ids", "cls.seq_relationship.weight", "cls.seq_relationship.bias"];

    /// <inheritdoc/>
    public override bool MayBeNewlyInitialized(string key) => base.MayBeNewlyInitialized(key) || key.Contains(".pooler.", StringComparison.Ordinal);

    /// <summary>"Bert" or "Roberta".</summary>
    protected string Stem => Config.IsRoberta ? "Roberta" : "Bert";

    /// <summary>Encoder models have no KV cache.</summary>
    protected static void NoCache(KvCache? cache)
    {
        if (cache != null) throw new NotSupportedException("encoder models do not use a KV cache");
    }
}

/// <summary>Sequence classification: BERT's pooler → dropout → classifier, or RoBERTa's classification head on &lt;s&gt;.</summary>
public sealed class BertForSequenceClassification : BertPreTrainedModel
{
    /// <summary>Creates the model.</summary>
    public BertForSequenceClassification(BertConfig cfg) : base(cfg, addPoolingLayer: !cfg.IsRoberta)
    {
        double drop = cfg.ClassifierDropout ?? cfg.HiddenDropoutProb;
        if (cfg.IsRoberta) RegisterModule("classifier", new RobertaClassificationHead(cfg, drop));
        else
        {
            RegisterModule("dropout", new Dropout(drop));
            RegisterModule("classifier", new Linear(cfg.HiddenSize, cfg.NumLabels).NormalInit(cfg.InitializerRange));
        }
    }

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.SequenceClassification;

    /// <inheritdoc/>
    public override string ArchitectureName => Stem + "ForSequenceClassification";

    /// <inheritdoc/>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        NoCache(cache);
        var (seq, pooled) = Trunk.Forward(input, attentionMask);
        Tensor logits;
        using (seq)
        using (pooled)
        {
            if (Config.IsRoberta) logits = Child<IUnaryModule>("classifier").Forward(seq);
            else
            {
                using var d = Child<IUnaryModule>("dropout").Forward(pooled!);
                logits = Child<IUnaryModule>("classifier").Forward(d);
            }
        }
        return new ModelOutput(logits, labels == null ? null : TaskHeads.SequenceClassificationLoss(logits, labels, Config.NumLabels));
    }
}

/// <summary>RoBERTa's head: dropout → dense → tanh → dropout → out_proj on the first token.</summary>
public sealed class RobertaClassificationHead : Module, IUnaryModule
{
    /// <summary>Creates the head.</summary>
    public RobertaClassificationHead(BertConfig cfg, double dropout)
    {
        RegisterModule("dense", new Linear(cfg.HiddenSize, cfg.HiddenSize).NormalInit(cfg.InitializerRange));
        RegisterModule("dropout", new Dropout(dropout));
        RegisterModule("out_proj", new Linear(cfg.HiddenSize, cfg.NumLabels).NormalInit(cfg.InitializerRange));
    }

    /// <summary>[B, T, H] → [B, labels].</summary>
    public Tensor Forward(Tensor seq)
    {
        var drop = Child<IUnaryModule>("dropout");
        using var first = seq.Select(1, 0);
        using var d1 = drop.Forward(first);
        using var h = Child<IUnaryModule>("dense").Forward(d1);
        using var t = h.Tanh();
        using var d2 = drop.Forward(t);
        return Child<IUnaryModule>("out_proj").Forward(d2);
    }
}

/// <summary>Token classification: dropout → classifier on every token (no pooler).</summary>
public sealed class BertForTokenClassification : BertPreTrainedModel
{
    /// <summary>Creates the model.</summary>
    public BertForTokenClassification(BertConfig cfg) : base(cfg, addPoolingLayer: false)
    {
        RegisterModule("dropout", new Dropout(cfg.ClassifierDropout ?? cfg.HiddenDropoutProb));
        RegisterModule("classifier", new Linear(cfg.HiddenSize, cfg.NumLabels).NormalInit(cfg.InitializerRange));
    }

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.TokenClassification;

    /// <inheritdoc/>
    public override string ArchitectureName => Stem + "ForTokenClassification";

    /// <inheritdoc/>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        NoCache(cache);
        var (seq, _) = Trunk.Forward(input, attentionMask);
        using (seq)
        using (var d = Child<IUnaryModule>("dropout").Forward(seq))
        {
            var logits = Child<IUnaryModule>("classifier").Forward(d);
            return new ModelOutput(logits, labels == null ? null : TaskHeads.TokenClassificationLoss(logits, labels));
        }
    }
}

/// <summary>
/// Masked LM: BERT's <c>cls.predictions</c> (transform.dense → act → transform.LayerNorm → decoder) or RoBERTa's
/// <c>lm_head</c> (dense → gelu → layer_norm → decoder). The decoder weight is the word embedding and its bias is the
/// head's <c>bias</c> parameter, tied as in transformers.
/// </summary>
public sealed class BertForMaskedLM : BertPreTrainedModel
{
    private readonly Func<Tensor, Tensor> _act;

    /// <summary>Creates the model.</summary>
    public BertForMaskedLM(BertConfig cfg) : base(cfg, addPoolingLayer: false)
    {
        _act = Activations.Get(cfg.IsRoberta ? "gelu" : cfg.HiddenAct, cfg.Path);
        if (cfg.IsRoberta) RegisterModule("lm_head", new MaskedLmHead(cfg, "dense", "layer_norm"));
        else RegisterModule("cls", new BertOnlyMlmHead(cfg));
        TieWeights();
    }

    private MaskedLmHead Head => Config.IsRoberta ? Child<MaskedLmHead>("lm_head") : Child<BertOnlyMlmHead>("cls").Predictions;

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.MaskedLM;

    /// <inheritdoc/>
    public override string ArchitectureName => Stem + "ForMaskedLM";

    /// <inheritdoc/>
    public override void TieWeights() => Head.Tie(Trunk.Embeddings.WordEmbeddings.Weight);

    /// <inheritdoc/>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        NoCache(cache);
        var (seq, _) = Trunk.Forward(input, attentionMask);
        using (seq)
        {
            var logits = Head.Forward(seq, _act);
            return new ModelOutput(logits, labels == null ? null : TaskHeads.TokenClassificationLoss(logits, labels));
        }
    }
}

/// <summary>BERT's <c>cls</c> wrapper holding <c>predictions</c>.</summary>
public sealed class BertOnlyMlmHead : Module
{
    /// <summary>Creates the wrapper.</summary>
    public BertOnlyMlmHead(BertConfig cfg) => RegisterModule("predictions", new MaskedLmHead(cfg, "transform", null));

    /// <summary>The prediction head.</summary>
    public MaskedLmHead Predictions => Child<MaskedLmHead>("predictions");
}

/// <summary>
/// The masked-LM prediction head. BERT nests dense/LayerNorm under <c>transform</c>; RoBERTa names them
/// <c>dense</c>/<c>layer_norm</c> directly. Both have <c>decoder</c> and a <c>bias</c> shared with decoder.bias.
/// </summary>
public sealed class MaskedLmHead : Module
{
    private readonly bool _nested;

    /// <summary>Creates the head; <paramref name="transformOrDense"/> = "transform" gives BERT's layout.</summary>
    public MaskedLmHead(BertConfig cfg, string transformOrDense, string? layerNormName)
    {
        _nested = transformOrDense == "transform";
        if (_nested) RegisterModule("transform", new PredictionHeadTransform(cfg));
        else
        {
            RegisterModule("dense", new Linear(cfg.HiddenSize, cfg.HiddenSize).NormalInit(cfg.InitializerRange));
            RegisterModule(layerNormName!, new LayerNorm(cfg.HiddenSize, cfg.LayerNormEps));
        }
        RegisterModule("decoder", new Linear(cfg.HiddenSize, cfg.VocabSize));
        RegisterParameter("bias", Tensor.Zeros([cfg.VocabSize]));
    }

    /// <summary>Ties the decoder's weight to the word embedding and its bias to this head's bias.</summary>
    public void Tie(Tensor wordEmbedding)
    {
        var decoder = Child<Linear>("decoder");
        decoder.SetParameter("weight", wordEmbedding);
        decoder.SetParameter("bias", Parameter("bias"));
    }

    /// <summary>[B, T, H] → [B, T, vocab].</summary>
    public Tensor Forward(Tensor seq, Func<Tensor, Tensor> act)
    {
        Tensor h;
        if (_nested) h = Child<PredictionHeadTransform>("transform").Forward(seq, act);
        else
        {
            using var d = Child<IUnaryModule>("dense").Forward(seq);
            using var a = act(d);
            h = Child<IUnaryModule>("layer_norm").Forward(a);
        }
        using (h) return Child<IUnaryModule>("decoder").Forward(h);
    }
}

/// <summary>BERT's <c>transform</c>: dense → activation → LayerNorm.</summary>
public sealed class PredictionHeadTransform : Module
{
    /// <summary>Creates the transform.</summary>
    public PredictionHeadTransform(BertConfig cfg)
    {
        RegisterModule("dense", new Linear(cfg.HiddenSize, cfg.HiddenSize).NormalInit(cfg.InitializerRange));
        RegisterModule("LayerNorm", new LayerNorm(cfg.HiddenSize, cfg.LayerNormEps));
    }

    /// <summary>LayerNorm(act(dense(x))).</summary>
    public Tensor Forward(Tensor x, Func<Tensor, Tensor> act)
    {
        using var d = Child<IUnaryModule>("dense").Forward(x);
        using var a = act(d);
        return Child<IUnaryModule>("LayerNorm").Forward(a);
    }
}
