using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// What every LoRA-wrapped layer shares: the <c>base_layer</c>, per-adapter rank and scaling, active/disabled state and
/// LIFO merging into the base weight. Subclasses hold the factors (<see cref="LoraLinear"/>, <see cref="LoraEmbedding"/>).
/// </summary>
public abstract class LoraLayer : Module, IUnaryModule
{
    private readonly Dictionary<string, double> _scaling = new();
    private readonly Dictionary<string, int> _rank = new();
    private readonly List<string> _merged = new();

    /// <summary>Wraps <paramref name="baseLayer"/> whose weight maps <paramref name="inFeatures"/> to <paramref name="outFeatures"/>.</summary>
    protected LoraLayer(Module baseLayer, int inFeatures, int outFeatures)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        RegisterModule("base_layer", baseLayer);
    }

    /// <summary>Wraps a supported layer in the matching LoRA layer.</summary>
    public static LoraLayer For(Module baseLayer) => baseLayer switch
    {
        Linear or Conv1D or QuantizedLinear => new LoraLinear(baseLayer),
        Embedding e => new LoraEmbedding(e),
        _ => throw new NotSupportedException($"LoRA supports Linear, Conv1D and Embedding layers, not {baseLayer.GetType().Name}"),
    };

    /// <summary>Input features (rows of an embedding table).</summary>
    public int InFeatures { get; }

    /// <summary>Output features (embedding width).</summary>
    public int OutFeatures { get; }

    /// <summary>The wrapped layer.</summary>
    public Module BaseLayer => Child<Module>("base_layer");

    /// <summary>Adapters whose output is added (in order).</summary>
    public List<string> ActiveAdapters { get; } = new();

    /// <summary>When true the layer runs only its base layer (unmerging first if needed).</summary>
    public bool DisableAdapters { get; set; }

    /// <summary>Adapters merged into the base weight, in merge order.</summary>
    public IReadOnlyList<string> MergedAdapters => _merged;

    /// <summary>True when any adapter is merged.</summary>
    public bool Merged => _merged.Count > 0;

    /// <summary>Adapters this layer holds.</summary>
    public abstract IEnumerable<string> Adapters { get; }

    /// <summary>The scaling of <paramref name="adapter"/>.</summary>
    public double Scaling(string adapter) => _scaling[adapter];

    /// <summary>The rank of <paramref name="adapter"/>.</summary>
    public int Rank(string adapter) => _rank[adapter];

    /// <summary>Records rank and scaling (alpha/r, or alpha/√r with rsLoRA) after a subclass created the factors.</summary>
    protected void SetRankAndScaling(string adapter, int r, double alpha, bool useRslora)
    {
        _rank[adapter] = r;
        _scaling[adapter] = useRslora ? alpha / Math.Sqrt(r) : alpha / r;
    }

    /// <summary>Checks a requested rank against the layer.</summary>
    protected void CheckRank(int r)
    {
        if (r <= 0) throw new ArgumentOutOfRangeException(nameof(r), $"LoRA rank must be positive, got {r}");
        if (r > Math.Max(InFeatures, OutFeatures))
            throw new ArgumentOutOfRangeException(nameof(r), $"LoRA rank {r} is larger than the layer itself ({InFeatures}→{OutFeatures})");
    }

    /// <summary>Adds (or replaces) an adapter; see <see cref="LoraConfig.InitLoraWeights"/> for <paramref name="init"/>.</summary>
    public abstract void UpdateLayer(string adapter, int r, double alpha, double dropout, string init, bool useRslora, bool loraBias, bool useDora);

    /// <summary>Per-sample adapter names for a mixed batch (set by <see cref="PeftModel.Forward"/>), or null.</summary>
    internal string[]? SampleAdapters { get; set; }

    /// <summary>Runs the base layer, then adds each active adapter's contribution (or, in a mixed batch, each
    /// sample's own adapter).</summary>
    public Tensor Forward(Tensor x)
    {
        var baseLayer = Child<IUnaryModule>("base_layer");
        if (DisableAdapters)
        {
            if (Merged) Unmerge();
            return baseLayer.Forward(x);
        }
        var result = baseLayer.Forward(x);
        if (SampleAdapters != null) return MixedBatch(x, result, SampleAdapters);
        if (Merged) return result;
        foreach (var name in ActiveAdapters)
        {
            if (!Adapters.Contains(name)) continue;
            var next = AddAdapterOutput(name, x, result);
            result.Dispose();
            result = next;
        }
        return result;
    }

    /// <summary>PEFT's _mixed_batch_forward: rows of the batch get the delta of their own adapter ("__base__": none).
    /// Each adapter's delta is computed on the batch and masked to its rows, so autograd needs nothing special.</summary>
    private Tensor MixedBatch(Tensor x, Tensor result, string[] perSample)
    {
        if (Merged) throw new InvalidOperationException("a mixed-adapter batch cannot run while adapters are merged; unmerge first");
        MixedBatchRows.CheckLength(perSample, x);
        foreach (var name in perSample.Distinct().Where(n => n != PeftModel.BaseAdapterName))
        {
            if (!Adapters.Contains(name)) continue; // this layer is not adapted by that adapter
            using var withAdapter = AddAdapterOutput(name, x, result);
            using var delta = withAdapter.Sub(result);
            using var mask = MixedBatchRows.Mask(perSample, name, delta);
            using var masked = delta.Mul(mask);
            var next = result.Add(masked);
            result.Dispose();
            result = next;
        }
        return result;
    }

    /// <summary>result + this adapter's contribution for input <paramref name="x"/>.</summary>
    protected abstract Tensor AddAdapterOutput(string adapter, Tensor x, Tensor result);

    /// <summary>ΔW = s·(B·A) in the base weight's layout.</summary>
    public abstract Tensor DeltaWeight(string adapter);

    /// <summary>The base layer's weight tensor.</summary>
    protected Tensor BaseWeight => BaseLayer.Parameter("weight");

    /// <summary>
    /// Adds each adapter into the base weight. With <paramref name="safe"/>, the new weight is formed on a copy and
    /// checked for NaN/∞ first, and the base is left untouched on failure. Already-merged adapters are skipped.
    /// </summary>
    public void Merge(IEnumerable<string> adapters, bool safe)
    {
        if (BaseLayer is QuantizedLinear)
            throw new NotSupportedException("merging into a quantized base (dequantize → add ΔW → requantize) is not implemented yet");
        using var _ = Autograd.NoGrad();
        foreach (var name in adapters)
        {
            if (!Adapters.Contains(name) || _merged.Contains(name)) continue;
            using var merged = MergedWeight(name);
            if (safe && merged.ToFloatArray().Any(v => !float.IsFinite(v)))
                throw new InvalidOperationException($"NaN or infinity detected in the merged weights of adapter '{name}' (layer {InFeatures}→{OutFeatures}); the adapter seems broken and the base weights were left unchanged");
            BaseWeight.CopyFrom(merged);
            MergeBias(name, +1);
            _merged.Add(name);
        }
    }

    /// <summary>Subtracts merged adapters from the base weight, last merged first.</summary>
    public void Unmerge()
    {
        using var _ = Autograd.NoGrad();
        while (_merged.Count > 0)
        {
            var name = _merged[^1];
            using var restored = UnmergedWeight(name);
            BaseWeight.CopyFrom(restored);
            MergeBias(name, -1);
            _merged.RemoveAt(_merged.Count - 1);
        }
    }

    /// <summary>The base weight with <paramref name="adapter"/> merged in (W + ΔW by default).</summary>
    protected virtual Tensor MergedWeight(string adapter)
    {
        using var delta = DeltaWeight(adapter);
        return BaseWeight.Add(delta);
    }

    /// <summary>The base weight with <paramref name="adapter"/> taken out again (W − ΔW by default).</summary>
    protected virtual Tensor UnmergedWeight(string adapter)
    {
        using var delta = DeltaWeight(adapter);
        return BaseWeight.Sub(delta);
    }

    /// <summary>Adds sign·(adapter bias) to the base bias (lora_bias only).</summary>
    protected virtual void MergeBias(string adapter, int sign) { }

    /// <summary>Removes an adapter's parameters from this layer.</summary>
    public void DeleteAdapter(string adapter)
    {
        if (_merged.Contains(adapter)) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge it before deleting it");
        if (!Adapters.Contains(adapter)) return;
        RemoveFactors(adapter);
        _rank.Remove(adapter);
        _scaling.Remove(adapter);
        ActiveAdapters.Remove(adapter);
    }

    /// <summary>The factors of <paramref name="adapter"/> such that ΔW = s·B·A up to layout: A [r, in], B [out, r]
    /// (the module's own tensors, not copies).</summary>
    public abstract (Tensor A, Tensor B) Factors(string adapter);

    /// <summary>Drops the factors of <paramref name="adapter"/>.</summary>
    protected abstract void RemoveFactors(string adapter);

    /// <summary>Detaches and returns the base layer (the caller puts it back in the model).</summary>
    internal Module TakeBaseLayer() => RemoveModule("base_layer");
}
