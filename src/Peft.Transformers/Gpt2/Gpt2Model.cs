using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.Gpt2;

/// <summary>GPT-2 causal self-attention: fused q/k/v projection (<c>c_attn</c>, Conv1D) and output projection (<c>c_proj</c>).</summary>
public sealed class Gpt2Attention : Module
{
    private readonly Gpt2Config _cfg;
    private readonly int _layerIdx;

    /// <summary>Creates the block's attention.</summary>
    public Gpt2Attention(Gpt2Config cfg, int layerIdx)
    {
        _cfg = cfg;
        _layerIdx = layerIdx;
        RegisterModule("c_attn", new Conv1D(3 * cfg.NEmbd, cfg.NEmbd, std: cfg.InitializerRange));
        // transformers scales c_proj's init by 1/√(2·n_layer) (GPT-2 paper, residual projections).
        RegisterModule("c_proj", new Conv1D(cfg.NEmbd, cfg.NEmbd, std: cfg.InitializerRange / Math.Sqrt(2.0 * cfg.NLayer)));
        RegisterModule("attn_dropout", new Dropout(cfg.AttnPdrop));
        RegisterModule("resid_dropout", new Dropout(cfg.ResidPdrop));
    }

    /// <summary>x [B, T, C] → [B, T, C]; appends to <paramref name="cache"/> when given.</summary>
    public Tensor Forward(Tensor x, Tensor? keyPaddingMask, KvCache? cache)
    {
        int h = _cfg.NHead, d = _cfg.HeadDim, c = _cfg.NEmbd;
        using var qkv = Child<IUnaryModule>("c_attn").Forward(x);
        var parts = qkv.Split([c, c, c], -1);
        using var q = Heads(parts[0]);
        using var k = Heads(parts[1]);
        using var v = Heads(parts[2]);
        foreach (var p in parts) p.Dispose();
        var (kAll, vAll) = cache != null ? cache.Append(_layerIdx, k, v) : (k, v);
        double scale = (_cfg.ScaleAttnWeights ? 1 / Math.Sqrt(d) : 1) / (_cfg.ScaleAttnByInverseLayerIdx ? _layerIdx + 1 : 1);
        var drop = Child<Dropout>("attn_dropout");
        using var y = Tensor.ScaledDotProductAttention(q, kAll, vAll, keyPaddingMask, isCausal: true, scale: scale,
            dropoutP: IsTraining ? drop.P : 0, generator: drop.Generator);
        using var merged = AttentionHeads.Merge(y);
        using var proj = Child<IUnaryModule>("c_proj").Forward(merged);
        return Child<IUnaryModule>("resid_dropout").Forward(proj);

        Tensor Heads(Tensor part) => AttentionHeads.Split(part, h, d);
    }
}

/// <summary>GPT-2 MLP: c_fc (Conv1D) → activation → c_proj (Conv1D) → dropout.</summary>
public sealed class Gpt2Mlp : Module
{
    private readonly Func<Tensor, Tensor> _act;

    /// <summary>Creates the MLP.</summary>
    public Gpt2Mlp(Gpt2Config cfg)
    {
        int inner = cfg.NInner ?? 4 * cfg.NEmbd;
        _act = Activations.Get(cfg.ActivationFunction, cfg.Path);
        RegisterModule("c_fc", new Conv1D(inner, cfg.NEmbd, std: cfg.InitializerRange));
        RegisterModule("c_proj", new Conv1D(cfg.NEmbd, inner, std: cfg.InitializerRange / Math.Sqrt(2.0 * cfg.NLayer)));
        RegisterModule("dropout", new Dropout(cfg.ResidPdrop));
    }

    /// <summary>[B, T, C] → [B, T, C].</summary>
    public Tensor Forward(Tensor x)
    {
        using var hIn = Child<IUnaryModule>("c_fc").Forward(x);
        using var a = _act(hIn);
        using var o = Child<IUnaryModule>("c_proj").Forward(a);
        return Child<IUnaryModule>("dropout").Forward(o);
    }
}

/// <summary>One pre-norm GPT-2 block: x + attn(ln_1(x)), then + mlp(ln_2(·)).</summary>
public sealed class Gpt2Block : Module
{
    /// <summary>Creates block <paramref name="layerIdx"/>.</summary>
    public Gpt2Block(Gpt2Config cfg, int layerIdx)
    {
        RegisterModule("ln_1", new LayerNorm(cfg.NEmbd, cfg.LayerNormEpsilon));
        RegisterModule("attn", new Gpt2Attention(cfg, layerIdx));
        RegisterModule("ln_2", new LayerNorm(cfg.NEmbd, cfg.LayerNormEpsilon));
        RegisterModule("mlp", new Gpt2Mlp(cfg));
    }

    /// <summary>Runs the block.</summary>
    public Tensor Forward(Tensor x, Tensor? keyPaddingMask, KvCache? cache)
    {
        using var n1 = Child<IUnaryModule>("ln_1").Forward(x);
        using var a = Child<Gpt2Attention>("attn").Forward(n1, keyPaddingMask, cache);
        using var x1 = x.Add(a);
        using var n2 = Child<IUnaryModule>("ln_2").Forward(x1);
        using var m = Child<Gpt2Mlp>("mlp").Forward(n2);
        return x1.Add(m);
    }
}

/// <summary>The GPT-2 trunk (transformers' GPT2Model: wte, wpe, drop, h.N, ln_f) producing hidden states.</summary>
public sealed class Gpt2Model : Module
{
    /// <summary>Builds a randomly initialised trunk (N(0, initializer_range), as transformers).</summary>
    public Gpt2Model(Gpt2Config cfg)
    {
        Config = cfg;
        RegisterModule("wte", new Embedding(cfg.VocabSize, cfg.NEmbd, std: cfg.InitializerRange));
        RegisterModule("wpe", new Embedding(cfg.NPositions, cfg.NEmbd, std: cfg.InitializerRange));
        RegisterModule("drop", new Dropout(cfg.EmbdPdrop));
        RegisterModule("h", new ModuleList<Gpt2Block>(Enumerable.Range(0, cfg.NLayer).Select(i => new Gpt2Block(cfg, i))));
        RegisterModule("ln_f", new LayerNorm(cfg.NEmbd, cfg.LayerNormEpsilon));
    }

    /// <summary>The configuration.</summary>
    public Gpt2Config Config { get; }

    /// <summary>The token embedding.</summary>
    public Embedding Wte => Child<Embedding>("wte");

    /// <summary>input ids [B, T] (or inputs_embeds [B, T, C]: a floating-point input is taken as embeddings) → hidden
    /// states [B, T, C]. <paramref name="attentionMask"/> [B, T_past + T] (1 = attend).</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null)
    {
        int t = inputIds.Size(1), past = cache?.Length ?? 0;
        if (past + t > Config.NPositions)
            throw new ArgumentException($"sequence of {past + t} positions exceeds n_positions = {Config.NPositions}");
        using var positions = Tensor.Arange(past, past + t);
        using var tok = TaskHeads.EmbedOrPass(Child<IUnaryModule>("wte"), inputIds);
        using var pos = Child<IUnaryModule>("wpe").Forward(positions);
        using var sum = tok.Add(pos);
        using var mask = TaskHeads.KeyPaddingMask(attentionMask);
        var dropped = Child<IUnaryModule>("drop").Forward(sum);
        using var x = Child<ModuleList<Gpt2Block>>("h").Chain(dropped, [mask], (block, _, h, s) => block.Forward(h, s[0], cache), checkpointable: cache == null);
        return Child<IUnaryModule>("ln_f").Forward(x);
    }
}
