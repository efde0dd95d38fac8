using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.T5;

/// <summary>
/// T5 attention: q/k/v/o without bias, no 1/√d scaling (T5 folds it into the init), plus a learned relative-position
/// bias (<c>relative_attention_bias</c>, only in the first block of each stack; the others reuse its bias).
/// </summary>
public sealed class T5Attention : Module
{
    private readonly T5Config _cfg;
    private readonly bool _decoder;

    /// <summary>Creates the attention; <paramref name="hasRelativeBias"/> for the first block's self-attention.</summary>
    public T5Attention(T5Config cfg, bool hasRelativeBias, bool isDecoder)
    {
        _cfg = cfg;
        _decoder = isDecoder;
        int inner = cfg.NumHeads * cfg.DKv;
        double f = cfg.InitializerFactor;
        RegisterModule("q", new Linear(cfg.DModel, inner, bias: false).NormalInit(f * Math.Pow(cfg.DModel * cfg.DKv, -0.5)));
        RegisterModule("k", new Linear(cfg.DModel, inner, bias: false).NormalInit(f * Math.Pow(cfg.DModel, -0.5)));
        RegisterModule("v", new Linear(cfg.DModel, inner, bias: false).NormalInit(f * Math.Pow(cfg.DModel, -0.5)));
        RegisterModule("o", new Linear(inner, cfg.DModel, bias: false).NormalInit(f * Math.Pow(inner, -0.5)));
        if (hasRelativeBias) RegisterModule("relative_attention_bias", new Embedding(cfg.RelativeAttentionNumBuckets, cfg.NumHeads, std: f * Math.Pow(cfg.DModel, -0.5)));
        HasRelativeBias = hasRelativeBias;
    }

    /// <summary>Whether this attention owns the relative-position table.</summary>
    public bool HasRelativeBias { get; }

    /// <summary>Projects [B, T, d_model] with q/k/v into heads [B, H, T, d_kv].</summary>
    public Tensor Project(string which, Tensor x) => AttentionHeads.Project(Child<IUnaryModule>(which), x, _cfg.NumHeads, _cfg.DKv);

    /// <summary>softmax(q·kᵀ + bias)·v → o. <paramref name="bias"/> [1 or B, H, Tq, Tk] holds position bias and masks.</summary>
    public Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor bias, double dropout)
    {
        using var y = Tensor.ScaledDotProductAttention(q, k, v, bias, scale: 1.0, dropoutP: IsTraining ? dropout : 0);
        using var merged = AttentionHeads.Merge(y);
        return Child<IUnaryModule>("o").Forward(merged);
    }

    /// <summary>Position bias [1, H, q, k] for queries at offsets qStart.. and keys 0..keyLength−1.</summary>
    public Tensor PositionBias(int qStart, int queryLength, int keyLength)
    {
        var buckets = new long[queryLength * keyLength];
        for (int i = 0; i < queryLength; i++)
            for (int j = 0; j < keyLength; j++)
                buckets[i * keyLength + j] = Bucket(j - (qStart + i), !_decoder, _cfg.RelativeAttentionNumBuckets, _cfg.RelativeAttentionMaxDistance);
        using var idx = Tensor.FromArray(buckets, [queryLength, keyLength]);
        using var values = Child<IUnaryModule>("relative_attention_bias").Forward(idx); // [q, k, H]
        using var perm = values.Permute(2, 0, 1);
        return perm.Unsqueeze(0);
    }

    /// <summary>transformers' _relative_position_bucket: exact buckets for small distances, logarithmic beyond,
    /// split by direction when bidirectional.</summary>
    public static long Bucket(int relativePosition, bool bidirectional, int numBuckets, int maxDistance)
    {
        long bucket = 0;
        long rel = relativePosition;
        if (bidirectional)
        {
            numBuckets /= 2;
            if (rel > 0) bucket += numBuckets;
            rel = Math.Abs(rel);
        }
        else rel = -Math.Min(rel, 0);
        int maxExact = numBuckets / 2;
        if (rel < maxExact) return bucket + rel;
        // float32 throughout, as torch evaluates log(rel / max_exact) / log(max_distance / max_exact) · (buckets − max_exact)
        // on a float tensor (the truncation at bucket edges depends on it).
        float ratio = MathF.Log((float)rel / maxExact) / (float)Math.Log((double)maxDistance / maxExact) * (numBuckets - maxExact);
        return bucket + Math.Min(maxExact + (long)ratio, numBuckets - 1);
    }
}
