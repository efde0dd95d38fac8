using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.T5;

/// <summary>
/// transformers' T5ForConditionalGeneration: <c>shared</c> embedding (tied into <c>encoder.embed_tokens</c> and
/// <c>decoder.embed_tokens</c>), encoder and decoder stacks, <c>lm_head</c>. With tied embeddings the decoder output
/// is scaled by d_model^-0.5 before the head, as in Mesh TensorFlow.
/// </summary>
public sealed class T5ForConditionalGeneration : PreTrainedModel
{
    /// <summary>Creates the model.</summary>
    public T5ForConditionalGeneration(T5Config cfg)
    {
        Config = cfg;
        RegisterModule("shared", new Embedding(cfg.VocabSize, cfg.DModel, std: cfg.InitializerFactor));
        RegisterModule("encoder", new T5Stack(cfg, isDecoder: false));
        RegisterModule("decoder", new T5Stack(cfg, isDecoder: true));
        RegisterModule("lm_head", new Linear(cfg.DModel, cfg.VocabSize, bias: false).NormalInit(cfg.InitializerFactor));
        TieWeights();
    }

    /// <summary>The configuration.</summary>
    public T5Config Config { get; }

    /// <inheritdoc/>
    public override string ModelType => Config.ModelType;

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.Seq2SeqLM;

    /// <inheritdoc/>
    public override string ArchitectureName => Config.ModelType == "mt5" ? "MT5ForConditionalGeneration" : "T5ForConditionalGeneration";

    /// <summary>T5 checkpoints have no single trunk prefix; every key is checked as part of the model.</summary>
    public override string BaseModelPrefix => "";

    /// <inheritdoc/>
    public override bool MayBeNewlyInitialized(string key) => false;

    /// <summary>Decoder layers.</summary>
    public override int NumLayers => Config.NumDecoderLayers;

    /// <inheritdoc/>
    public override Embedding? InputEmbeddings => Child<Embedding>("shared");

    /// <inheritdoc/>
    public override PromptDimensions? PromptDimensions => new(Config.DModel, Config.NumDecoderLayers, Config.NumHeads, Config.NumHeads, Config.DKv);

    /// <inheritdoc/>
    public override void TieWeights()
    {
        var shared = Child<Embedding>("shared").Weight;
        Child<T5Stack>("encoder").EmbedTokens.SetParameter("weight", shared);
        Child<T5Stack>("decoder").EmbedTokens.SetParameter("weight", shared);
        if (Config.TieWordEmbeddings) Child<Linear>("lm_head").SetParameter("weight", shared);
    }

    /// <summary>Encodes input ids [B, S] (or inputs_embeds [B, S, d_model]: a floating-point input is taken as
    /// embeddings) → [B, S, d_model].</summary>
    public Tensor Encode(Tensor inputIds, Tensor? attentionMask)
    {
        var enc = Child<T5Stack>("encoder");
        using var emb = TaskHeads.EmbedOrPass(enc.EmbedTokens, inputIds);
        return enc.Forward(emb, attentionMask);
    }

    /// <summary>Decodes <paramref name="decoderInputIds"/> against an encoder output; returns logits [B, T, vocab].</summary>
    public Tensor Decode(Tensor decoderInputIds, Tensor encoderOutput, Tensor? encoderMask, KvCache? cache = null, T5CrossCache? crossCache = null)
    {
        var dec = Child<T5Stack>("decoder");
        using var emb = dec.EmbedTokens.Forward(decoderInputIds);
        using var hidden = dec.Forward(emb, null, encoderOutput, encoderMask, cache, crossCache);
        using var scaled = Config.ScaleDecoderOutputs ? hidden.Mul(Math.Pow(Config.DModel, -0.5)) : hidden.Contiguous();
        return Child<IUnaryModule>("lm_head").Forward(scaled);
    }

    /// <summary>transformers' _shift_right: decoder inputs are the labels moved one step right after the start token,
    /// with −100 replaced by the pad id.</summary>
    public Tensor ShiftRight(Tensor labels)
    {
        int b = labels.Size(0), t = labels.Size(1);
        var l = labels.ToDoubleArray();
        var shifted = new long[b * t];
        for (int i = 0; i < b; i++)
        {
            shifted[i * t] = Config.DecoderStartTokenId;
            for (int j = 1; j < t; j++)
            {
                long v = (long)l[i * t + j - 1];
                shifted[i * t + j] = v == -100 ? Config.PadTokenId : v;
            }
        }
        return Tensor.FromArray(shifted, [b, t]);
    }

    /// <summary>Encoder-decoder forward; decoder inputs are <paramref name="labels"/> shifted right (or just the start
    /// token when no labels are given). Use <see cref="Forward(Tensor, Tensor?, Tensor, Tensor?, KvCache?)"/> to pass them.</summary>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        if (cache != null) throw new NotSupportedException("pass decoder caches through Decode (see Seq2SeqGeneration)");
        using var decoderInputs = labels != null ? ShiftRight(labels) : Tensor.Full([input.Size(0), 1], Config.DecoderStartTokenId, DType.I64);
        return Forward(input, attentionMask, decoderInputs, labels);
    }

    /// <summary>Encoder-decoder forward with explicit decoder input ids; the loss is cross-entropy on <paramref name="labels"/>.
    /// <paramref name="decoderCache"/> holds past decoder self-attention keys/values (a prefix-tuning prefix).</summary>
    public ModelOutput Forward(Tensor input, Tensor? attentionMask, Tensor decoderInputIds, Tensor? labels, KvCache? decoderCache = null)
    {
        using var encoded = Encode(input, attentionMask);
        var logits = Decode(decoderInputIds, encoded, attentionMask, decoderCache);
        return new ModelOutput(logits, labels == null ? null : TaskHeads.TokenClassificationLoss(logits, labels));
    }
}
