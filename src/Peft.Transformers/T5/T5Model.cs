using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers.T5;

/// <summary>Feed-forward: <c>DenseReluDense</c> with wi → act → wo, or gated wi_0/wi_1 (act(wi_0·x) ⊙ wi_1·x) → wo.</summary>
public sealed class T5DenseActDense : Module
{
    private readonly T5Config _cfg;
    private readonly Func<Tensor, Tensor> _act;

    /// <summary>Creates the block.</summary>
    public T5DenseActDense(T5Config cfg)
    {
        _cfg = cfg;
        _act = Activations.Get(cfg.DenseActFn, cfg.Path);
        double f = cfg.InitializerFactor;
        if (cfg.IsGatedAct)
        {
            RegisterModule("wi_0", new Linear(cfg.DModel, cfg.DFf, bias: false).NormalInit(f * Math.Pow(cfg.DModel, -0.5)));
            RegisterModule("wi_1", new Linear(cfg.DModel, cfg.DFf, bias: false).NormalInit(f * Math.Pow(cfg.DModel, -0.5)));
        }
        else RegisterModule("wi", new Linear(cfg.DModel, cfg.DFf, bias: false).NormalInit(f * Math.Pow(cfg.DModel, -0.5)));
        RegisterModule("wo", new Linear(cfg.DFf, cfg.DModel, bias: false).NormalInit(f * Math.Pow(cfg.DFf, -0.5)));
        RegisterModule("dropout", new Dropout(cfg.DropoutRate));
    }

    /// <summary>[B, T, d_model] → [B, T, d_model].</summary>
    public Tensor Forward(Tensor x)
    {
        Tensor hidden;
        if (_cfg.IsGatedAct)
        {
            using var g = Child<IUnaryModule>("wi_0").Forward(x);
            using var a = _act(g);
            using var l = Child<IUnaryModule>("wi_1").Forward(x);
            hidden = a.Mul(l);
        }
        else
        {
            using var h = Child<IUnaryModule>("wi").Forward(x);
            hidden = _act(h);
        }
        using (hidden)
        using (var d = Child<IUnaryModule>("dropout").Forward(hidden))
            return Child<IUnaryModule>("wo").Forward(d);
    }
}

/// <summary>A pre-norm sub-layer <c>layer.N</c>: layer_norm → (SelfAttention | EncDecAttention | DenseReluDense) → dropout → + x.</summary>
public sealed class T5SubLayer : Module
{
    private readonly string _kind;
    private readonly T5Config _cfg;

    /// <summary>Creates the sub-layer: <paramref name="kind"/> is "SelfAttention", "EncDecAttention" or "DenseReluDense".</summary>
    public T5SubLayer(T5Config cfg, string kind, bool relativeBias, bool isDecoder)
    {
        _kind = kind;
        _cfg = cfg;
        if (kind == "DenseReluDense") RegisterModule(kind, new T5DenseActDense(cfg));
        else RegisterModule(kind, new T5Attention(cfg, relativeBias, isDecoder));
        RegisterModule("layer_norm", new RmsNorm(cfg.DModel, cfg.LayerNormEpsilon));
        RegisterModule("dropout", new Dropout(cfg.DropoutRate));
    }

    /// <summary>The attention of this sub-layer.</summary>
    public T5Attention Attention => Child<T5Attention>(_kind);

    /// <summary>x + dropout(f(layer_norm(x))).</summary>
    public Tensor Forward(Tensor x, Func<Tensor, Tensor> f)
    {
        using var n = Child<IUnaryModule>("layer_norm").Forward(x);
        using var y = f(n);
        using var d = Child<IUnaryModule>("dropout").Forward(y);
        return x.Add(d);
    }

    /// <summary>The feed-forward sub-layer.</summary>
    public Tensor FeedForward(Tensor x) => Forward(x, n => Child<T5DenseActDense>(_kind).Forward(n));
}

/// <summary>Cross-attention keys/values of the encoder output, per decoder layer (computed once per sequence).</summary>
public sealed class T5CrossCache : IDisposable
{
    private readonly Dictionary<int, (Tensor K, Tensor V)> _kv = new();

    internal (Tensor K, Tensor V) GetOrAdd(int layer, Func<(Tensor, Tensor)> make)
    {
        if (!_kv.TryGetValue(layer, out var kv))
        {
            var (k, v) = make();
            _kv[layer] = kv = (k.Detach().KeepAlive(), v.Detach().KeepAlive());
        }
        return kv;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var (k, v) in _kv.Values) { k.Dispose(); v.Dispose(); }
        _kv.Clear();
    }
}

/// <summary>An encoder or decoder stack: <c>embed_tokens</c> (tied to the model's <c>shared</c> table),
/// <c>block.N.layer.M</c> and <c>final_layer_norm</c>.</summary>
public sealed class T5Stack : Module
{
    private readonly T5Config _cfg;
    private readonly bool _decoder;

    /// <summary>Creates the stack.</summary>
    public T5Stack(T5Config cfg, bool isDecoder)
    {
        _cfg = cfg;
        _decoder = isDecoder;
        int n = isDecoder ? cfg.NumDecoderLayers : cfg.NumLayers;
        RegisterModule("embed_tokens", new Embedding(cfg.VocabSize, cfg.DModel, std: 0));
        RegisterModule("block", new ModuleList<T5Block>(Enumerable.Range(0, n).Select(i => new T5Block(cfg, isDecoder, i == 0))));
        RegisterModule("final_layer_norm", new RmsNorm(cfg.DModel, cfg.LayerNormEpsilon));
        RegisterModule("dropout", new Dropout(cfg.DropoutRate));
    }

    /// <summary>The token embedding (the model's shared table once tied).</summary>
    public Embedding EmbedTokens => Child<Embedding>("embed_tokens");

    /// <summary>Runs the stack on embeddings [B, T, d]. For the decoder, <paramref name="encoderOutput"/> and its
    /// padding mask feed cross-attention and <paramref name="cache"/> holds past self-attention keys/values.</summary>
    public Tensor Forward(Tensor embeddings, Tensor? selfMask, Tensor? encoderOutput = null, Tensor? encoderMask = null,
        KvCache? cache = null, T5CrossCache? crossCache = null)
    {
        var blocks = Child<ModuleList<T5Block>>("block");
        int t = embeddings.Size(1), past = cache?.Length ?? 0;
        using var positionBias = blocks[0].SelfAttention.PositionBias(past, t, past + t);
        using var selfBias = CombineMasks(positionBias, selfMask, causal: _decoder, past);
        using var crossBias = encoderOutput == null ? null : CombineMasks(null, encoderMask, causal: false, 0, encoderOutput.Size(1), embeddings.DType, embeddings.Device);
        var dropped = Child<IUnaryModule>("dropout").Forward(embeddings);
        // The biases and the encoder output go in as side inputs: a checkpointed block's recomputation must route their
        // gradients (a trainable position bias, an adapted encoder) back to the outer graph.
        using var x = blocks.Chain(dropped, [selfBias, encoderOutput, crossBias], (block, i, h, s) => block.Forward(h, s[0]!, i, s[1], s[2], cache, crossCache),
            checkpointable: cache == null && crossCache == null);
        using var n = Child<IUnaryModule>("final_layer_norm").Forward(x);
        return Child<IUnaryModule>("dropout").Forward(n);
    }

    private static Tensor ZerosOn(int[] shape, DType dtype, Device device)
    {
        var zeros = Tensor.Zeros(shape, dtype);
        if (device.Type == DeviceType.Cpu) return zeros;
        using (zeros) return zeros.To(device);
    }

    /// <summary>Position bias plus −∞ where a key is padding or (decoder) in the future, as one additive [B|1, H|1, q, k] tensor.</summary>
    private Tensor CombineMasks(Tensor? positionBias, Tensor? padMask, bool causal, int past, int keyLength = -1, DType dtype = DType.F32, Device? device = null)
    {
        var bias = positionBias?.Contiguous() ?? ZerosOn([1, 1, 1, keyLength], dtype, device ?? Device.Cpu);
        if (causal)
        {
            int q = bias.Size(2), k = bias.Size(3);
            using var future = Tensor.TriangleMask(q, k, past, lower: true);
            using var old = bias;
            bias = old.MaskedFill(future, double.NegativeInfinity);
        }
        if (padMask != null)
        {
            using var pad = TaskHeads.PaddingBlockMask(padMask);            // [B, 1, 1, k], 1 = padding
            using var old = bias;
            bias = old.MaskedFill(pad, double.NegativeInfinity);
        }
        return bias;
    }
}

/// <summary>One T5 block: self-attention, (decoder) cross-attention, feed-forward.</summary>
public sealed class T5Block : Module
{
    private readonly T5Config _cfg;
    private readonly bool _decoder;

    /// <summary>Creates the block.</summary>
    public T5Block(T5Config cfg, bool isDecoder, bool relativeBias)
    {
        _cfg = cfg;
        _decoder = isDecoder;
        var layers = new List<T5SubLayer> { new(cfg, "SelfAttention", relativeBias, isDecoder) };
        if (isDecoder) layers.Add(new T5SubLayer(cfg, "EncDecAttention", false, isDecoder));
        layers.Add(new T5SubLayer(cfg, "DenseReluDense", false, isDecoder));
        RegisterModule("layer", new ModuleList<T5SubLayer>(layers));
    }

    /// <summary>The self-attention (its first block owns the relative-position table).</summary>
    public T5Attention SelfAttention => Child<ModuleList<T5SubLayer>>("layer")[0].Attention;

    /// <summary>Runs the block.</summary>
    public Tensor Forward(Tensor x, Tensor selfBias, int index, Tensor? encoderOutput, Tensor? crossBias, KvCache? cache, T5CrossCache? crossCache)
    {
        var layers = Child<ModuleList<T5SubLayer>>("layer");
        using var h1 = layers[0].Forward(x, n =>
        {
            var att = layers[0].Attention;
            using var q = att.Project("q", n);
            using var k = att.Project("k", n);
            using var v = att.Project("v", n);
            var (kAll, vAll) = cache != null ? cache.Append(index, k, v) : (k, v);
            return att.Attend(q, kAll, vAll, selfBias, _cfg.DropoutRate);
        });
        Tensor h2 = h1;
        if (_decoder)
        {
            h2 = layers[1].Forward(h1, n =>
            {
                var att = layers[1].Attention;
                using var q = att.Project("q", n);
                (Tensor K, Tensor V) Make() => (att.Project("k", encoderOutput!), att.Project("v", encoderOutput!));
                var (k, v) = crossCache != null ? crossCache.GetOrAdd(index, Make) : Make();
                return att.Attend(q, k, v, crossBias!, _cfg.DropoutRate);
            });
        }
        using (_decoder ? h2 : null)
            return layers[_decoder ? 2 : 1].FeedForward(h2);
    }
}
