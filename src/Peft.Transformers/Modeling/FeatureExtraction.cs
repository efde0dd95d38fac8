using Peft.Core;
using Peft.Transformers.Bert;
using Peft.Transformers.Gpt2;
using Peft.Transformers.Llama;

namespace Peft.Transformers;

/// <summary>
/// A bare trunk (transformers' GPT2Model / LlamaModel / BertModel) as a task model: <see cref="ModelOutput.Logits"/>
/// holds the last hidden states [B, T, hidden] (PEFT's FEATURE_EXTRACTION task). The trunk sits under the usual
/// prefix ("transformer", "model", "bert"/"roberta"), so bare checkpoints load through the prefix rule.
/// </summary>
public sealed class FeatureExtractionModel : PreTrainedModel
{
    private readonly Func<Tensor, Tensor?, KvCache?, Tensor> _run;

    private FeatureExtractionModel(string modelType, string prefix, string architecture, int layers, Peft.Nn.Module trunk, Func<Tensor, Tensor?, KvCache?, Tensor> run)
    {
        ModelType = modelType;
        BaseModelPrefix = prefix;
        ArchitectureName = architecture;
        NumLayers = layers;
        _run = run;
        RegisterModule(prefix, trunk);
    }

    /// <summary>GPT-2's trunk.</summary>
    public static FeatureExtractionModel Gpt2(Gpt2Config cfg)
    {
        var trunk = new Gpt2Model(cfg);
        return new FeatureExtractionModel("gpt2", "transformer", "GPT2Model", cfg.NLayer, trunk, (x, m, c) => trunk.Forward(x, m, c));
    }

    /// <summary>The LLaMA-family trunk.</summary>
    public static FeatureExtractionModel Llama(LlamaConfig cfg)
    {
        var trunk = new LlamaModel(cfg);
        var arch = cfg.ModelType switch { "mistral" => "MistralModel", "qwen2" => "Qwen2Model", _ => "LlamaModel" };
        return new FeatureExtractionModel(cfg.ModelType, "model", arch, cfg.NumHiddenLayers, trunk, (x, m, c) => trunk.Forward(x, m, c));
    }

    /// <summary>The BERT/RoBERTa encoder (with its pooler, as transformers' BertModel).</summary>
    public static FeatureExtractionModel Bert(BertConfig cfg)
    {
        var trunk = new BertModel(cfg, addPoolingLayer: true);
        return new FeatureExtractionModel(cfg.ModelType, cfg.IsRoberta ? "roberta" : "bert", cfg.IsRoberta ? "RobertaModel" : "BertModel", cfg.NumHiddenLayers, trunk,
            (x, m, c) =>
            {
                if (c != null) throw new NotSupportedException("encoder models do not use a KV cache");
                var (seq, pooled) = trunk.Forward(x, m);
                pooled?.Dispose();
                return seq;
            });
    }

    /// <inheritdoc/>
    public override string ModelType { get; }

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.FeatureExtraction;

    /// <inheritdoc/>
    public override string ArchitectureName { get; }

    /// <inheritdoc/>
    public override string BaseModelPrefix { get; }

    /// <inheritdoc/>
    public override int NumLayers { get; }

    /// <inheritdoc/>
    public override bool MayBeNewlyInitialized(string key) => key.Contains(".pooler.", StringComparison.Ordinal);

    /// <summary>Last hidden states [B, T, hidden] (no loss: feature extraction has no labels).</summary>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        if (labels != null) throw new ArgumentException("a feature-extraction model takes no labels");
        var hidden = _run(input, attentionMask, cache);
        return new ModelOutput(hidden, null, cache, hidden);
    }
}
