using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.Bert;

/// <summary>Word + position + token-type embeddings, LayerNorm, dropout. RoBERTa numbers positions from
/// pad_token_id + 1 and gives padding the padding position, as transformers' create_position_ids_from_input_ids.</summary>
public sealed class BertEmbeddings : Module
{
    private readonly BertConfig _cfg;

    /// <summary>Creates the embeddings.</summary>
    public BertEmbeddings(BertConfig cfg)
    {
        _cfg = cfg;
        RegisterModule("word_embeddings", new Embedding(cfg.VocabSize, cfg.HiddenSize, std: cfg.InitializerRange));
        RegisterModule("position_embeddings", new Embedding(cfg.MaxPositionEmbeddings, cfg.HiddenSize, std: cfg.InitializerRange));
        RegisterModule("token_type_embeddings", new Embedding(cfg.TypeVocabSize, cfg.HiddenSize, std: cfg.InitializerRange));
        RegisterModule("LayerNorm", new LayerNorm(cfg.HiddenSize, cfg.LayerNormEps));
        RegisterModule("dropout", new Dropout(cfg.HiddenDropoutProb));
    }

    /// <summary>The word embedding (tied to masked-LM decoders).</summary>
    public Embedding WordEmbeddings => Child<Embedding>("word_embeddings");

    /// <summary>ids [B, T] (or inputs_embeds [B, T, H]: a floating-point input is taken as word embeddings) → [B, T, H].</summary>
    public Tensor Forward(Tensor ids, Tensor? tokenTypeIds)
    {
        int b = ids.Size(0), t = ids.Size(1);
        var pos = ids.DType.IsFloatingPoint() ? EmbedsPositionIds(b, t) : PositionIds(ids, b, t);
        long last = pos.Max();
        if (last >= _cfg.MaxPositionEmbeddings)
            throw new ArgumentException($"sequence needs position {last} but max_position_embeddings is {_cfg.MaxPositionEmbeddings}");
        using var positions = Tensor.FromArray(pos, [b, t]);
        using var types = tokenTypeIds?.Contiguous() ?? Tensor.Zeros([b, t], DType.I64);
        using var w = TaskHeads.EmbedOrPass(Child<IUnaryModule>("word_embeddings"), ids);
        using var p = Child<IUnaryModule>("position_embeddings").Forward(positions);
        using var ty = Child<IUnaryModule>("token_type_embeddings").Forward(types);
        using var sum = w.Add(p);
        using var sum2 = sum.Add(ty);
        using var n = Child<IUnaryModule>("LayerNorm").Forward(sum2);
        return Child<IUnaryModule>("dropout").Forward(n);
    }

    /// <summary>Positions for inputs_embeds, where padding cannot be seen: 0.. for BERT, padding_idx + 1.. for RoBERTa
    /// (transformers' create_position_ids_from_inputs_embeds).</summary>
    private long[] EmbedsPositionIds(int b, int t)
    {
        long start = _cfg.IsRoberta ? _cfg.PadTokenId + 1 : 0;
        var pos = new long[b * t];
        for (int i = 0; i < b; i++) for (int j = 0; j < t; j++) pos[i * t + j] = start + j;
        return pos;
    }

    private long[] PositionIds(Tensor ids, int b, int t)
    {
        var pos = new long[b * t];
        if (!_cfg.IsRoberta)
        {
            for (int i = 0; i < b; i++) for (int j = 0; j < t; j++) pos[i * t + j] = j;
        }
        else
        {
            var v = ids.DType == DType.I64 ? ids.ToArray<long>() : ids.ToDoubleArray().Select(x => (long)x).ToArray();
            for (int i = 0; i < b; i++)
            {
                long count = 0;
                for (int j = 0; j < t; j++)
                {
                    bool real = v[i * t + j] != _cfg.PadTokenId;
                    if (real) count++;
                    pos[i * t + j] = real ? count + _cfg.PadTokenId : _cfg.PadTokenId;
                }
            }
        }
        return pos;
    }
}

/// <summary>Multi-head self-attention (query/key/value) followed by output.dense + residual + LayerNorm (post-norm).</summary>
public sealed class BertAttention : Module
{
    private readonly BertConfig _cfg;

    /// <summary>Creates the attention block.</summary>
    public BertAttention(BertConfig cfg)
    {
        _cfg = cfg;
        var self = new BertSelfAttention(cfg);
        RegisterModule("self", self);
        RegisterModule("output", new BertOutput(cfg, cfg.HiddenSize));
    }

    /// <summary>x [B, T, H] → [B, T, H].</summary>
    public Tensor Forward(Tensor x, Tensor? keyPaddingMask)
    {
        using var ctx = Child<BertSelfAttention>("self").Forward(x, keyPaddingMask);
        return Child<BertOutput>("output").Forward(ctx, x);
    }
}

/// <summary>query/key/value projections and scaled dot-product attention (no causal mask).</summary>
public sealed class BertSelfAttention : Module
{
    private readonly BertConfig _cfg;

    /// <summary>Creates the projections.</summary>
    public BertSelfAttention(BertConfig cfg)
    {
        _cfg = cfg;
        foreach (var n in new[] { "query", "key", "value" }) RegisterModule(n, new Linear(cfg.HiddenSize, cfg.HiddenSize).NormalInit(cfg.InitializerRange));
        RegisterModule("dropout", new Dropout(cfg.AttentionProbsDropoutProb));
    }

    /// <summary>x [B, T, H] → context [B, T, H].</summary>
    public Tensor Forward(Tensor x, Tensor? keyPaddingMask)
    {
        int h = _cfg.NumAttentionHeads, d = _cfg.HiddenSize / h;
        using var q = Heads("query");
        using var k = Heads("key");
        using var v = Heads("value");
        var drop = Child<Dropout>("dropout");
        using var y = Tensor.ScaledDotProductAttention(q, k, v, keyPaddingMask, dropoutP: IsTraining ? drop.P : 0, generator: drop.Generator);
        return AttentionHeads.Merge(y);

        Tensor Heads(string name) => AttentionHeads.Project(Child<IUnaryModule>(name), x, h, d);
    }
}

/// <summary>dense → dropout → LayerNorm(· + residual): BERT's "output" blocks after attention and after the MLP.</summary>
public sealed class BertOutput : Module
{
    /// <summary>Creates the block, projecting from <paramref name="inputSize"/> to hidden size.</summary>
    public BertOutput(BertConfig cfg, int inputSize)
    {
        RegisterModule("dense", new Linear(inputSize, cfg.HiddenSize).NormalInit(cfg.InitializerRange));
        RegisterModule("LayerNorm", new LayerNorm(cfg.HiddenSize, cfg.LayerNormEps));
        RegisterModule("dropout", new Dropout(cfg.HiddenDropoutProb));
    }

    /// <summary>LayerNorm(dropout(dense(x)) + residual).</summary>
    public Tensor Forward(Tensor x, Tensor residual)
    {
        using var d = Child<IUnaryModule>("dense").Forward(x);
        using var dr = Child<IUnaryModule>("dropout").Forward(d);
        using var sum = dr.Add(residual);
        return Child<IUnaryModule>("LayerNorm").Forward(sum);
    }
}

/// <summary>One encoder layer: attention, then intermediate.dense → activation → output (post-norm).</summary>
public sealed class BertLayer : Module
{
    private readonly Func<Tensor, Tensor> _act;

    /// <summary>Creates the layer.</summary>
    public BertLayer(BertConfig cfg)
    {
        _act = Activations.Get(cfg.HiddenAct, cfg.Path);
        RegisterModule("attention", new BertAttention(cfg));
        RegisterModule("intermediate", new BertIntermediate(cfg));
        RegisterModule("output", new BertOutput(cfg, cfg.IntermediateSize));
    }

    /// <summary>Runs the layer.</summary>
    public Tensor Forward(Tensor x, Tensor? keyPaddingMask)
    {
        using var a = Child<BertAttention>("attention").Forward(x, keyPaddingMask);
        using var i = Child<BertIntermediate>("intermediate").Forward(a, _act);
        return Child<BertOutput>("output").Forward(i, a);
    }
}

/// <summary>The MLP's up-projection (<c>intermediate.dense</c>) and activation.</summary>
public sealed class BertIntermediate : Module
{
    /// <summary>Creates the projection.</summary>
    public BertIntermediate(BertConfig cfg) =>
        RegisterModule("dense", new Linear(cfg.HiddenSize, cfg.IntermediateSize).NormalInit(cfg.InitializerRange));

    /// <summary>act(dense(x)).</summary>
    public Tensor Forward(Tensor x, Func<Tensor, Tensor> act)
    {
        using var d = Child<IUnaryModule>("dense").Forward(x);
        return act(d);
    }
}

/// <summary>The BERT/RoBERTa trunk: embeddings, encoder.layer.N, optional pooler (dense + tanh on the first token).</summary>
public sealed class BertModel : Module
{
    /// <summary>Builds the trunk.</summary>
    public BertModel(BertConfig cfg, bool addPoolingLayer)
    {
        Config = cfg;
        RegisterModule("embeddings", new BertEmbeddings(cfg));
        RegisterModule("encoder", new BertEncoder(cfg));
        if (addPoolingLayer) RegisterModule("pooler", new BertPooler(cfg));
        HasPooler = addPoolingLayer;
    }

    /// <summary>The configuration.</summary>
    public BertConfig Config { get; }

    /// <summary>Whether the pooler exists.</summary>
    public bool HasPooler { get; }

    /// <summary>The embeddings.</summary>
    public BertEmbeddings Embeddings => Child<BertEmbeddings>("embeddings");

    /// <summary>ids [B, T] → (sequence output [B, T, H], pooled [B, H] or null).</summary>
    public (Tensor Sequence, Tensor? Pooled) Forward(Tensor ids, Tensor? attentionMask, Tensor? tokenTypeIds = null)
    {
        using var mask = TaskHeads.KeyPaddingMask(attentionMask);
        var embedded = Embeddings.Forward(ids, tokenTypeIds);
        var x = Child<BertEncoder>("encoder").Layers.Chain(embedded, [mask], (layer, _, h, s) => layer.Forward(h, s[0]));
        return (x, HasPooler ? Child<BertPooler>("pooler").Forward(x) : null);
    }
}

/// <summary>Holds <c>encoder.layer.N</c>.</summary>
public sealed class BertEncoder : Module
{
    /// <summary>Creates the layers.</summary>
    public BertEncoder(BertConfig cfg) =>
        RegisterModule("layer", new ModuleList<BertLayer>(Enumerable.Range(0, cfg.NumHiddenLayers).Select(_ => new BertLayer(cfg))));

    /// <summary>The layers.</summary>
    public ModuleList<BertLayer> Layers => Child<ModuleList<BertLayer>>("layer");
}

/// <summary>tanh(dense(first token)).</summary>
public sealed class BertPooler : Module
{
    /// <summary>Creates the pooler.</summary>
    public BertPooler(BertConfig cfg) => RegisterModule("dense", new Linear(cfg.HiddenSize, cfg.HiddenSize).NormalInit(cfg.InitializerRange));

    /// <summary>[B, T, H] → [B, H].</summary>
    public Tensor Forward(Tensor x)
    {
        using var first = x.Select(1, 0);
        using var d = Child<IUnaryModule>("dense").Forward(first);
        return d.Tanh();
    }
}

