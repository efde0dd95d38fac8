using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.Vit;

/// <summary>ViT hyper-parameters with transformers' ViTConfig defaults.</summary>
public sealed record VitConfig
{
    /// <summary>Hidden size.</summary>
    public int HiddenSize { get; init; } = 768;
    /// <summary>Layers.</summary>
    public int NumHiddenLayers { get; init; } = 12;
    /// <summary>Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 12;
    /// <summary>MLP inner size.</summary>
    public int IntermediateSize { get; init; } = 3072;
    /// <summary>Activation.</summary>
    public string HiddenAct { get; init; } = "gelu";
    /// <summary>Hidden dropout.</summary>
    public double HiddenDropoutProb { get; init; }
    /// <summary>Attention dropout.</summary>
    public double AttentionProbsDropoutProb { get; init; }
    /// <summary>Init std.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary>LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-12;
    /// <summary>Square image side in pixels.</summary>
    public int ImageSize { get; init; } = 224;
    /// <summary>Square patch side in pixels.</summary>
    public int PatchSize { get; init; } = 16;
    /// <summary>Input channels.</summary>
    public int NumChannels { get; init; } = 3;
    /// <summary>Bias on q/k/v.</summary>
    public bool QkvBias { get; init; } = true;
    /// <summary>Labels.</summary>
    public int NumLabels { get; init; } = 2;
    /// <summary>Source file.</summary>
    public string Path { get; init; } = "<memory>";

    /// <summary>Patches per image.</summary>
    public int NumPatches => (ImageSize / PatchSize) * (ImageSize / PatchSize);

    /// <summary>Reads a ViT config.json.</summary>
    public static VitConfig From(HfConfig c)
    {
        var cfg = new VitConfig
        {
            HiddenSize = c.PositiveInt("hidden_size", 768), NumHiddenLayers = c.PositiveInt("num_hidden_layers", 12), NumAttentionHeads = c.PositiveInt("num_attention_heads", 12),
            IntermediateSize = c.PositiveInt("intermediate_size", 3072), HiddenAct = c.String("hidden_act", "gelu"),
            HiddenDropoutProb = c.Double("hidden_dropout_prob", 0), AttentionProbsDropoutProb = c.Double("attention_probs_dropout_prob", 0),
            InitializerRange = c.Double("initializer_range", 0.02), LayerNormEps = c.Double("layer_norm_eps", 1e-12),
            ImageSize = c.PositiveInt("image_size", 224), PatchSize = c.PositiveInt("patch_size", 16), NumChannels = c.PositiveInt("num_channels", 3),
            QkvBias = c.Bool("qkv_bias", true), NumLabels = c.NumLabels, Path = c.Path,
        };
        if (cfg.ImageSize % cfg.PatchSize != 0) throw new ConfigException(c.Path, $"image_size {cfg.ImageSize} is not a multiple of patch_size {cfg.PatchSize}");
        if (cfg.HiddenSize % cfg.NumAttentionHeads != 0) throw new ConfigException(c.Path, $"hidden_size {cfg.HiddenSize} is not divisible by num_attention_heads {cfg.NumAttentionHeads}");
        return cfg;
    }
}

/// <summary>Patch embedding (a stride-p convolution done as one matmul over flattened patches), [CLS], positions.</summary>
public sealed class VitEmbeddings : Module
{
    private readonly VitConfig _cfg;

    /// <summary>Creates the embeddings.</summary>
    public VitEmbeddings(VitConfig cfg)
    {
        _cfg = cfg;
        RegisterParameter("cls_token", Tensor.Randn([1, 1, cfg.HiddenSize], null, DType.F32, 0, cfg.InitializerRange));
        RegisterParameter("position_embeddings", Tensor.Randn([1, cfg.NumPatches + 1, cfg.HiddenSize], null, DType.F32, 0, cfg.InitializerRange));
        RegisterModule("patch_embeddings", new VitPatchEmbeddings(cfg));
        RegisterModule("dropout", new Dropout(cfg.HiddenDropoutProb));
    }

    /// <summary>pixels [B, C, H, W] → [B, 1 + patches, hidden].</summary>
    public Tensor Forward(Tensor pixels)
    {
        using var patches = Child<VitPatchEmbeddings>("patch_embeddings").Forward(pixels);
        int b = pixels.Size(0);
        using var cls = Parameter("cls_token").Expand(b, 1, _cfg.HiddenSize);
        using var seq = Tensor.Cat([cls, patches], 1);
        using var withPos = seq.Add(Parameter("position_embeddings"));
        return Child<IUnaryModule>("dropout").Forward(withPos);
    }
}

/// <summary><c>patch_embeddings.projection</c>: Conv2d(C, hidden, kernel = stride = patch) stored as transformers
/// stores it ([hidden, C, p, p] weight, [hidden] bias).</summary>
public sealed class VitPatchEmbeddings : Module
{
    private readonly VitConfig _cfg;

    /// <summary>Creates the projection.</summary>
    public VitPatchEmbeddings(VitConfig cfg)
    {
        _cfg = cfg;
        RegisterModule("projection", new Conv2dPatch(cfg.NumChannels, cfg.HiddenSize, cfg.PatchSize, cfg.InitializerRange));
    }

    /// <summary>pixels [B, C, H, W] → [B, patches, hidden] in row-major patch order.</summary>
    public Tensor Forward(Tensor pixels)
    {
        if (pixels.Rank != 4 || pixels.Size(1) != _cfg.NumChannels || pixels.Size(2) != _cfg.ImageSize || pixels.Size(3) != _cfg.ImageSize)
            throw new ShapeMismatchException($"ViT expects pixel values [B, {_cfg.NumChannels}, {_cfg.ImageSize}, {_cfg.ImageSize}], got {Shapes.Format(pixels.Shape)}");
        return Child<Conv2dPatch>("projection").Forward(pixels);
    }
}

/// <summary>A non-overlapping patch convolution: each p×p×C patch is flattened in (C, p, p) order — the order of the
/// conv weight — and multiplied by the weight viewed as [out, C·p·p].</summary>
public sealed class Conv2dPatch : Module
{
    private readonly int _patch;

    /// <summary>Creates the layer.</summary>
    public Conv2dPatch(int inChannels, int outChannels, int patch, double std)
    {
        _patch = patch;
        RegisterParameter("weight", Tensor.Randn([outChannels, inChannels, patch, patch], null, DType.F32, 0, std));
        RegisterParameter("bias", Tensor.Zeros([outChannels]));
    }

    /// <summary>[B, C, H, W] → [B, (H/p)·(W/p), out].</summary>
    public Tensor Forward(Tensor x)
    {
        int b = x.Size(0), c = x.Size(1), hp = x.Size(2) / _patch, wp = x.Size(3) / _patch, p = _patch;
        using var r = x.Reshape(b, c, hp, p, wp, p);
        using var perm = r.Permute(0, 2, 4, 1, 3, 5);           // [B, h', w', C, p, p]
        using var flat = perm.Reshape(b, hp * wp, c * p * p);
        var w = Parameter("weight");
        using var w2 = w.Reshape(w.Size(0), c * p * p);
        return flat.Linear(w2, Parameter("bias"));
    }
}

/// <summary>One pre-norm ViT layer: x + attn(layernorm_before(x)), then + mlp(layernorm_after(·)).</summary>
public sealed class VitLayer : Module
{
    private readonly VitConfig _cfg;
    private readonly Func<Tensor, Tensor> _act;

    /// <summary>Creates the layer.</summary>
    public VitLayer(VitConfig cfg)
    {
        _cfg = cfg;
        _act = Activations.Get(cfg.HiddenAct, cfg.Path);
        RegisterModule("attention", new VitAttention(cfg));
        RegisterModule("intermediate", new VitDense(cfg.HiddenSize, cfg.IntermediateSize, cfg, dropout: false));
        RegisterModule("output", new VitDense(cfg.IntermediateSize, cfg.HiddenSize, cfg, dropout: true));
        RegisterModule("layernorm_before", new LayerNorm(cfg.HiddenSize, cfg.LayerNormEps));
        RegisterModule("layernorm_after", new LayerNorm(cfg.HiddenSize, cfg.LayerNormEps));
    }

    /// <summary>Runs the layer.</summary>
    public Tensor Forward(Tensor x)
    {
        using var n1 = Child<IUnaryModule>("layernorm_before").Forward(x);
        using var a = Child<VitAttention>("attention").Forward(n1);
        using var h = a.Add(x);
        using var n2 = Child<IUnaryModule>("layernorm_after").Forward(h);
        using var i = Child<VitDense>("intermediate").Forward(n2);
        using var act = _act(i);
        using var o = Child<VitDense>("output").Forward(act);
        return o.Add(h);
    }
}

/// <summary><c>attention.attention.{query,key,value}</c> and <c>attention.output.dense</c>.</summary>
public sealed class VitAttention : Module
{
    private readonly VitConfig _cfg;

    /// <summary>Creates the attention block.</summary>
    public VitAttention(VitConfig cfg)
    {
        _cfg = cfg;
        RegisterModule("attention", new VitSelfAttention(cfg));
        RegisterModule("output", new VitDense(cfg.HiddenSize, cfg.HiddenSize, cfg, dropout: true));
    }

    /// <summary>[B, T, H] → [B, T, H].</summary>
    public Tensor Forward(Tensor x)
    {
        using var ctx = Child<VitSelfAttention>("attention").Forward(x);
        return Child<VitDense>("output").Forward(ctx);
    }
}

/// <summary>q/k/v projections and bidirectional attention.</summary>
public sealed class VitSelfAttention : Module
{
    private readonly VitConfig _cfg;

    /// <summary>Creates the projections.</summary>
    public VitSelfAttention(VitConfig cfg)
    {
        _cfg = cfg;
        foreach (var n in new[] { "query", "key", "value" }) RegisterModule(n, new Linear(cfg.HiddenSize, cfg.HiddenSize, cfg.QkvBias).NormalInit(cfg.InitializerRange));
    }

    /// <summary>[B, T, H] → context [B, T, H].</summary>
    public Tensor Forward(Tensor x)
    {
        int h = _cfg.NumAttentionHeads, d = _cfg.HiddenSize / h;
        using var q = Heads("query");
        using var k = Heads("key");
        using var v = Heads("value");
        using var y = Tensor.ScaledDotProductAttention(q, k, v, dropoutP: IsTraining ? _cfg.AttentionProbsDropoutProb : 0);
        return AttentionHeads.Merge(y);

        Tensor Heads(string name) => AttentionHeads.Project(Child<IUnaryModule>(name), x, h, d);
    }
}

/// <summary>A <c>dense</c> projection followed by dropout (ViT's intermediate/output blocks).</summary>
public sealed class VitDense : Module
{
    /// <summary>Creates the block.</summary>
    public VitDense(int inSize, int outSize, VitConfig cfg, bool dropout)
    {
        RegisterModule("dense", new Linear(inSize, outSize).NormalInit(cfg.InitializerRange));
        if (dropout) RegisterModule("dropout", new Dropout(cfg.HiddenDropoutProb));
    }

    /// <summary>dropout(dense(x)).</summary>
    public Tensor Forward(Tensor x)
    {
        var d = Child<IUnaryModule>("dense").Forward(x);
        if (!HasChild("dropout")) return d;
        using (d) return Child<IUnaryModule>("dropout").Forward(d);
    }
}

/// <summary>transformers' ViTForImageClassification: <c>vit</c> (embeddings, encoder.layer.N, layernorm) and a
/// <c>classifier</c> on the [CLS] token.</summary>
public sealed class VitForImageClassification : PreTrainedModel
{
    /// <summary>Creates the model.</summary>
    public VitForImageClassification(VitConfig cfg)
    {
        Config = cfg;
        RegisterModule("vit", new VitModel(cfg));
        RegisterModule("classifier", new Linear(cfg.HiddenSize, cfg.NumLabels).NormalInit(cfg.InitializerRange));
    }

    /// <summary>The configuration.</summary>
    public VitConfig Config { get; }

    /// <inheritdoc/>
    public override string ModelType => "vit";

    /// <inheritdoc/>
    public override ModelTask Task => ModelTask.ImageClassification;

    /// <inheritdoc/>
    public override string ArchitectureName => "ViTForImageClassification";

    /// <inheritdoc/>
    public override string BaseModelPrefix => "vit";

    /// <inheritdoc/>
    public override int NumLayers => Config.NumHiddenLayers;

    /// <inheritdoc/>
    public override bool MayBeNewlyInitialized(string key) => base.MayBeNewlyInitialized(key) || key.Contains(".pooler.", StringComparison.Ordinal);

    /// <summary>Classifies pixel values [B, C, H, W] (F32); <paramref name="labels"/> are class ids [B].</summary>
    public override ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null)
    {
        if (cache != null) throw new NotSupportedException("ViT has no KV cache");
        using var seq = Child<VitModel>("vit").Forward(input);
        using var first = seq.Select(1, 0);
        var logits = Child<IUnaryModule>("classifier").Forward(first);
        return new ModelOutput(logits, labels == null ? null : TaskHeads.SequenceClassificationLoss(logits, labels, Config.NumLabels));
    }
}

/// <summary>The ViT trunk: embeddings, encoder.layer.N, final layernorm.</summary>
public sealed class VitModel : Module
{
    /// <summary>Creates the trunk.</summary>
    public VitModel(VitConfig cfg)
    {
        RegisterModule("embeddings", new VitEmbeddings(cfg));
        RegisterModule("encoder", new VitEncoder(cfg));
        RegisterModule("layernorm", new LayerNorm(cfg.HiddenSize, cfg.LayerNormEps));
    }

    /// <summary>pixels → normalised sequence [B, 1 + patches, H].</summary>
    public Tensor Forward(Tensor pixels)
    {
        var embedded = Child<VitEmbeddings>("embeddings").Forward(pixels);
        using var x = Child<VitEncoder>("encoder").Layers.Chain(embedded, (layer, h) => layer.Forward(h));
        return Child<IUnaryModule>("layernorm").Forward(x);
    }
}

/// <summary>Holds <c>encoder.layer.N</c>.</summary>
public sealed class VitEncoder : Module
{
    /// <summary>Creates the layers.</summary>
    public VitEncoder(VitConfig cfg) =>
        RegisterModule("layer", new ModuleList<VitLayer>(Enumerable.Range(0, cfg.NumHiddenLayers).Select(_ => new VitLayer(cfg))));

    /// <summary>The layers.</summary>
    public ModuleList<VitLayer> Layers => Child<ModuleList<VitLayer>>("layer");
}
