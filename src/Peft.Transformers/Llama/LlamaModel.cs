using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.Llama;

/// <summary>What a LLaMA decoder layer calls as its <c>self_attn</c>: the attention itself, or a wrapper around it
/// (LLaMA-Adapter's adapted attention).</summary>
public interface ILlamaAttention
{
    /// <summary>x [B, T, hidden] → [B, T, hidden], with the rotary tables of these positions.</summary>
    Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? keyPaddingMask, KvCache? cache);
}

/// <summary>LLaMA attention: q/k/v/o projections, RoPE, grouped-query attention (k/v heads repeated).</summary>
public sealed class LlamaAttention : Module, ILlamaAttention
{
    private readonly LlamaConfig _cfg;
    private readonly int _layerIdx;

    /// <summary>Creates layer <paramref name="layerIdx"/>'s attention.</summary>
    public LlamaAttention(LlamaConfig cfg, int layerIdx)
    {
        _cfg = cfg;
        _layerIdx = layerIdx;
        int h = cfg.NumAttentionHeads * cfg.HeadDim, kv = cfg.NumKeyValueHeads * cfg.HeadDim;
        bool qkvBias = cfg.AttentionBias || cfg.QkvBias;
        RegisterModule("q_proj", Init(new Linear(cfg.HiddenSize, h, qkvBias)));
        RegisterModule("k_proj", Init(new Linear(cfg.HiddenSize, kv, qkvBias)));
        RegisterModule("v_proj", Init(new Linear(cfg.HiddenSize, kv, qkvBias)));
        RegisterModule("o_proj", Init(new Linear(h, cfg.HiddenSize, cfg.AttentionBias)));
    }

    private Linear Init(Linear l) => l.NormalInit(_cfg.InitializerRange);

    /// <summary>x [B, T, hidden] → [B, T, hidden].</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? keyPaddingMask, KvCache? cache)
    {
        int d = _cfg.HeadDim, h = _cfg.NumAttentionHeads, kvh = _cfg.NumKeyValueHeads;
        using var q = Heads("q_proj", h);
        using var k = Heads("k_proj", kvh);
        using var v = Heads("v_proj", kvh);
        using var qr = RotaryEmbedding.Apply(q, cos, sin);
        using var kr = RotaryEmbedding.Apply(k, cos, sin);
        var (kAll, vAll) = cache != null ? cache.Append(_layerIdx, kr, v) : (kr, v);
        using var kRep = RepeatKv(kAll, h / kvh);
        using var vRep = RepeatKv(vAll, h / kvh);
        using var y = Tensor.ScaledDotProductAttention(qr, kRep, vRep, keyPaddingMask, isCausal: true,
            dropoutP: IsTraining ? _cfg.AttentionDropout : 0);
        using var merged = AttentionHeads.Merge(y);
        return Child<IUnaryModule>("o_proj").Forward(merged);

        Tensor Heads(string proj, int heads) => AttentionHeads.Project(Child<IUnaryModule>(proj), x, heads, d);
    }

    /// <summary>The configuration.</summary>
    public LlamaConfig Config => _cfg;

    /// <summary>The rotary-embedded queries [B, heads, T, head_dim] of <paramref name="x"/> (what LLaMA-Adapter
    /// recomputes to attend to its prompt).</summary>
    public Tensor QueryStates(Tensor x, Tensor cos, Tensor sin)
    {
        using var q = AttentionHeads.Project(Child<IUnaryModule>("q_proj"), x, _cfg.NumAttentionHeads, _cfg.HeadDim);
        return RotaryEmbedding.Apply(q, cos, sin);
    }

    /// <summary>[B, KVH, S, D] → [B, KVH·n, S, D], each k/v head serving n query heads (transformers' repeat_kv).</summary>
    public static Tensor RepeatKv(Tensor kv, int n)
    {
        if (n == 1) return kv.Contiguous();
        int b = kv.Size(0), kvh = kv.Size(1), s = kv.Size(2), d = kv.Size(3);
        using var u = kv.Unsqueeze(2);
        using var e = u.Expand(b, kvh, n, s, d);
        return e.Reshape(b, kvh * n, s, d);
    }
}

/// <summary>LLaMA MLP: down(act(gate(x)) ⊙ up(x)).</summary>
public sealed class LlamaMlp : Module
{
    private readonly Func<Tensor, Tensor> _act;

    /// <summary>Creates the MLP.</summary>
    public LlamaMlp(LlamaConfig cfg)
    {
        _act = Activations.Get(cfg.HiddenAct, cfg.Path);
        RegisterModule("gate_proj", new Linear(cfg.HiddenSize, cfg.IntermediateSize, cfg.MlpBias).NormalInit(cfg.InitializerRange));
        RegisterModule("up_proj", new Linear(cfg.HiddenSize, cfg.IntermediateSize, cfg.MlpBias).NormalInit(cfg.InitializerRange));
        RegisterModule("down_proj", new Linear(cfg.IntermediateSize, cfg.HiddenSize, cfg.MlpBias).NormalInit(cfg.InitializerRange));
    }

    /// <summary>[B, T, hidden] → [B, T, hidden].</summary>
    public Tensor Forward(Tensor x)
    {
        using var g = Child<IUnaryModule>("gate_proj").Forward(x);
        using var a = _act(g);
        using var u = Child<IUnaryModule>("up_proj").Forward(x);
        using var p = a.Mul(u);
        return Child<IUnaryModule>("down_proj").Forward(p);
    }
}

/// <summary>One pre-norm decoder layer.</summary>
public sealed class LlamaDecoderLayer : Module
{
    /// <summary>Creates layer <paramref name="layerIdx"/>.</summary>
    public LlamaDecoderLayer(LlamaConfig cfg, int layerIdx)
    {
        RegisterModule("self_attn", new LlamaAttention(cfg, layerIdx));
        RegisterModule("mlp", new LlamaMlp(cfg));
        RegisterModule("input_layernorm", new RmsNorm(cfg.HiddenSize, cfg.RmsNormEps));
        RegisterModule("post_attention_layernorm", new RmsNorm(cfg.HiddenSize, cfg.RmsNormEps));
    }

    /// <summary>Runs the layer.</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? keyPaddingMask, KvCache? cache)
    {
        using var n1 = Child<IUnaryModule>("input_layernorm").Forward(x);
        using var a = Child<ILlamaAttention>("self_attn").Forward(n1, cos, sin, keyPaddingMask, cache);
        using var x1 = x.Add(a);
        using var n2 = Child<IUnaryModule>("post_attention_layernorm").Forward(x1);
        using var m = Child<LlamaMlp>("mlp").Forward(n2);
        return x1.Add(m);
    }
}

/// <summary>The LLaMA trunk (transformers' LlamaModel: embed_tokens, layers.N, norm).</summary>
public sealed class LlamaModel : Module
{
    private readonly RotaryEmbedding _rope;

    /// <summary>Builds a randomly initialised trunk.</summary>
    public LlamaModel(LlamaConfig cfg)
    {
        Config = cfg;
        _rope = new RotaryEmbedding(cfg.HeadDim, cfg.RopeTheta, cfg.RopeScaling, cfg.Path);
        RegisterModule("embed_tokens", new Embedding(cfg.VocabSize, cfg.HiddenSize, std: cfg.InitializerRange));
        RegisterModule("layers", new ModuleList<LlamaDecoderLayer>(Enumerable.Range(0, cfg.NumHiddenLayers).Select(i => new LlamaDecoderLayer(cfg, i))));
        RegisterModule("norm", new RmsNorm(cfg.HiddenSize, cfg.RmsNormEps));
    }

    /// <summary>The configuration.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The token embedding.</summary>
    public Embedding EmbedTokens => Child<Embedding>("embed_tokens");

    /// <summary>input ids [B, T] (or inputs_embeds [B, T, hidden]: a floating-point input is taken as embeddings) →
    /// hidden states [B, T, hidden].</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null)
    {
        int t = inputIds.Size(1), past = cache?.Length ?? 0;
        using var mask = TaskHeads.KeyPaddingMask(attentionMask);
        var embedded = TaskHeads.EmbedOrPass(Child<IUnaryModule>("embed_tokens"), inputIds);
        var (cos, sin) = _rope.Tables(past, t, embedded.Device); // on the hidden states' device
        using (cos)
        using (sin)
        {
            using var x = Child<ModuleList<LlamaDecoderLayer>>("layers").Chain(embedded, [cos, sin, mask], (layer, _, h, s) => layer.Forward(h, s[0]!, s[1]!, s[2], cache), checkpointable: cache == null);
            return Child<IUnaryModule>("norm").Forward(x);
        }
    }
}

