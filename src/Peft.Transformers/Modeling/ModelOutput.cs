using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers;

/// <summary>What a model returns: logits, the loss when labels were given, and the KV cache when one was used.</summary>
public sealed record ModelOutput(Tensor Logits, Tensor? Loss = null, KvCache? Cache = null, Tensor? HiddenStates = null);

/// <summary>The task a model head serves (the heads of transformers AutoModelFor* classes).</summary>
public enum ModelTask
{
    /// <summary>Next-token prediction.</summary>
    CausalLM,
    /// <summary>One label per sequence.</summary>
    SequenceClassification,
    /// <summary>One label per token.</summary>
    TokenClassification,
    /// <summary>Masked-token prediction.</summary>
    MaskedLM,
    /// <summary>Encoder-decoder generation.</summary>
    Seq2SeqLM,
    /// <summary>One label per image.</summary>
    ImageClassification,
    /// <summary>Hidden states of the bare trunk (PEFT's FEATURE_EXTRACTION).</summary>
    FeatureExtraction,
}

/// <summary>Shared losses and pooling of the task heads, written once as transformers does them.</summary>
public static class TaskHeads
{
    /// <summary>The token embedding of integer ids, or the input itself when it is already floating-point embeddings
    /// (transformers' inputs_embeds, used by prompt learning).</summary>
    public static Tensor EmbedOrPass(IUnaryModule embedding, Tensor input) =>
        input.DType.IsFloatingPoint() ? input.Contiguous() : embedding.Forward(input);

    /// <summary>Causal-LM loss: logits at position t predict labels at t+1; −100 labels are ignored.</summary>
    public static Tensor CausalLmLoss(Tensor logits, Tensor labels)
    {
        int t = logits.Size(1);
        using var shiftedLogits = logits.Narrow(1, 0, t - 1);
        using var shiftedLabels = labels.Narrow(1, 1, t - 1);
        using var flatLogits = shiftedLogits.Reshape(-1, logits.Size(-1));
        using var flatLabels = shiftedLabels.Reshape(-1);
        return flatLogits.CrossEntropy(flatLabels);
    }

    /// <summary>
    /// Picks, per sequence, the hidden state of the last token that is not padding (transformers' rule for GPT-2 and
    /// LLaMA classification: the last position whose id differs from <paramref name="padTokenId"/>; the last position
    /// when there is no pad token, which transformers allows only for batch size 1).
    /// </summary>
    public static Tensor PoolLastNonPad(Tensor logits, Tensor inputIds, int? padTokenId)
    {
        int b = inputIds.Size(0), t = inputIds.Size(1);
        if (inputIds.DType.IsFloatingPoint()) padTokenId = null; // inputs_embeds: transformers cannot see padding and takes the last position
        if (inputIds.DType.IsFloatingPoint() && b != 1)
        {
            using var lastFlat = logits.Reshape(b * t, logits.Size(-1));
            using var lastIndex = Tensor.FromArray(Enumerable.Range(0, b).Select(i => (long)i * t + t - 1).ToArray());
            return lastFlat.IndexSelect(0, lastIndex);
        }
        if (padTokenId == null && b != 1)
            throw new InvalidOperationException("cannot find the last token of each sequence in a batch without pad_token_id in config.json");
        var ids = inputIds.DType == DType.I64 ? inputIds.ToArray<long>() : inputIds.ToDoubleArray().Select(v => (long)v).ToArray();
        var rows = new long[b];
        for (int i = 0; i < b; i++)
        {
            int last = t - 1;
            if (padTokenId != null)
            {
                last = -1;
                for (int j = 0; j < t; j++) if (ids[(long)i * t + j] != padTokenId) last = j;
                if (last < 0) last = t - 1; // all padding: transformers' modulo wraps to the last position
            }
            rows[i] = (long)i * t + last;
        }
        using var flat = logits.Reshape(b * t, logits.Size(-1));
        using var index = Tensor.FromArray(rows);
        return flat.IndexSelect(0, index);
    }

    /// <summary>transformers' decoder sequence classification: <paramref name="score"/> on every position, then the
    /// last non-padding token's logits, and the loss when labels are given.</summary>
    public static ModelOutput ClassifyLastToken(IUnaryModule score, Tensor hidden, Tensor inputIds, int? padTokenId, int numLabels, Tensor? labels)
    {
        using var all = score.Forward(hidden);
        var pooled = PoolLastNonPad(all, inputIds, padTokenId);
        return new ModelOutput(pooled, labels == null ? null : SequenceClassificationLoss(pooled, labels, numLabels));
    }

    /// <summary>Sequence-classification loss as transformers infers the problem type: MSE for one label,
    /// cross-entropy for integer labels.</summary>
    public static Tensor SequenceClassificationLoss(Tensor pooledLogits, Tensor labels, int numLabels)
    {
        if (numLabels == 1)
        {
            using var typed = labels.DType == pooledLogits.DType ? labels.Contiguous() : labels.To(pooledLogits.DType);
            using var target = typed.Reshape(-1);
            using var pred = pooledLogits.Reshape(-1);
            using var diff = pred.Sub(target);
            using var sq = diff.Mul(diff);
            return sq.Mean();
        }
        using var flat = labels.Reshape(-1);
        return pooledLogits.CrossEntropy(flat);
    }

    /// <summary>Token-classification loss over every position (−100 ignored).</summary>
    public static Tensor TokenClassificationLoss(Tensor logits, Tensor labels)
    {
        using var flatLogits = logits.Reshape(-1, logits.Size(-1));
        using var flatLabels = labels.Reshape(-1);
        return flatLogits.CrossEntropy(flatLabels);
    }

    /// <summary>1 where the mask is non-zero, as U8.</summary>
    private static Tensor Binary(Tensor mask)
    {
        var v = mask.ToDoubleArray();
        return Tensor.FromArray(v.Select(x => (byte)(x != 0 ? 1 : 0)).ToArray(), mask.Shape);
    }

    /// <summary>The complement of <see cref="KeyPaddingMask"/>: U8 [B, 1, 1, Tk], 1 where the key is padding.</summary>
    public static Tensor PaddingBlockMask(Tensor attentionMask)
    {
        var m = attentionMask.ToDoubleArray();
        var blocked = m.Select(v => (byte)(v == 0 ? 1 : 0)).ToArray();
        return Tensor.FromArray(blocked, [attentionMask.Size(0), 1, 1, attentionMask.Size(1)]);
    }

    /// <summary>A U8 key-padding mask [B, 1, 1, Tk] from transformers' attention_mask [B, Tk] (1 = attend).</summary>
    public static Tensor? KeyPaddingMask(Tensor? attentionMask)
    {
        if (attentionMask == null) return null;
        using var u8 = attentionMask.DType == DType.U8 ? attentionMask.Contiguous() : Binary(attentionMask);
        return u8.Reshape(attentionMask.Size(0), 1, 1, attentionMask.Size(1));
    }
}
