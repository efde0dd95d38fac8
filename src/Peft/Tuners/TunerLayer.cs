using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// What every PEFT layer shares, whatever the method (PEFT's BaseTunerLayer): the wrapped <c>base_layer</c>, the
/// adapters it holds, which are active, the disabled switch, LIFO merging into the base weight, mixed-adapter batches
/// and handing the base layer back on unload. A method supplies its parameters and its forward/merge maths.
/// </summary>
public abstract class TunerLayer : Module, IUnaryModule
{
    private readonly List<string> _merged = new();

    /// <summary>Wraps <paramref name="baseLayer"/> (Linear, GPT-2 Conv1D, a quantized linear or an Embedding).</summary>
    protected TunerLayer(Module baseLayer)
    {
        (InFeatures, OutFeatures) = FeaturesOf(baseLayer);
        // The layer decides, as PEFT corrects a wrong fan_in_fan_out (with a warning): Conv1D stores [in, out], Linear [out, in].
        FanInFanOut = baseLayer is Conv1D;
        RegisterModule("base_layer", baseLayer);
    }

    /// <summary>(in, out) features of a layer PEFT can wrap (rows and width for an embedding table).</summary>
    public static (int In, int Out) FeaturesOf(Module m) => m switch
    {
        Conv1D c => (c.InFeatures, c.OutFeatures),
        Linear l => (l.InFeatures, l.OutFeatures),
        QuantizedLinear q => (q.InFeatures, q.OutFeatures),
        Embedding e => (e.NumEmbeddings, e.EmbeddingDim),
        _ => throw new NotSupportedException($"PEFT layers wrap Linear, Conv1D, quantized linear and Embedding layers, not {m.GetType().Name}"),
    };

    /// <summary>Input features (rows of an embedding table).</summary>
    public int InFeatures { get; }

    /// <summary>Output features (embedding width).</summary>
    public int OutFeatures { get; }

    /// <summary>True when the base weight is [in, out] (Conv1D), so [out, in] matrices are transposed before merging.</summary>
    public bool FanInFanOut { get; }

    /// <summary>The wrapped layer.</summary>
    public Module BaseLayer => Child<Module>("base_layer");

    /// <summary>Adapters applied in forward (in order).</summary>
    public List<string> ActiveAdapters { get; } = new();

    /// <summary>When true the layer runs only its base layer (unmerging first if needed).</summary>
    public bool DisableAdapters { get; set; }

    /// <summary>Adapters merged into the base weight, in merge order.</summary>
    public IReadOnlyList<string> MergedAdapters => _merged;

    /// <summary>True when any adapter is merged.</summary>
    public bool Merged => _merged.Count > 0;

    /// <summary>Adapters this layer holds.</summary>
    public abstract IEnumerable<string> Adapters { get; }

    /// <summary>Per-sample adapter names for a mixed batch (set by <see cref="PeftModel.Forward"/>), or null.</summary>
    internal string[]? SampleAdapters { get; set; }

    /// <summary>The base layer's forward.</summary>
    protected Tensor BaseForward(Tensor x) => Child<IUnaryModule>("base_layer").Forward(x);

    /// <summary>Runs the base layer with the active adapters applied (or, in a mixed batch, each sample's own adapter).</summary>
    public Tensor Forward(Tensor x)
    {
        if (DisableAdapters)
        {
            if (Merged) Unmerge();
            return BaseForward(x);
        }
        if (SampleAdapters != null) return MixedBatch(x, SampleAdapters);
        if (Merged) return BaseForward(x);
        return AdaptedForward(x, ActiveAdapters.Where(a => Adapters.Contains(a)).ToList());
    }

    /// <summary>
    /// The output with <paramref name="adapters"/> applied. The default suits additive methods (LoRA, LoHa, LoKr,
    /// VeRA): base(x) plus each adapter's contribution; methods that scale or rotate override it.
    /// </summary>
    protected virtual Tensor AdaptedForward(Tensor x, IReadOnlyList<string> adapters)
    {
        var result = BaseForward(x);
        foreach (var name in adapters)
        {
            var next = AddAdapterOutput(name, x, result);
            result.Dispose();
            result = next;
        }
        return result;
    }

    /// <summary>The element-wise product of <paramref name="vectors"/> flattened (several active scaling adapters
    /// multiply, as (IA)³'s l and BOFT's s), as a new tensor recorded by autograd.</summary>
    protected static Tensor FlatProduct(IEnumerable<Tensor> vectors)
    {
        Tensor? product = null;
        foreach (var v in vectors)
        {
            using var flat = v.Flatten();
            var next = product == null ? flat.Contiguous() : product.Mul(flat);
            product?.Dispose();
            product = next;
        }
        return product ?? throw new ArgumentException("no vectors to multiply");
    }

    /// <summary>True when an adapter's effect is an added term (so a mixed batch can reuse the base output).</summary>
    protected virtual bool IsAdditive => true;

    /// <summary>result + this adapter's contribution for input <paramref name="x"/> (additive methods).</summary>
    protected virtual Tensor AddAdapterOutput(string adapter, Tensor x, Tensor result) =>
        throw new NotSupportedException($"{GetType().Name} is not an additive adapter");

    /// <summary>PEFT's _mixed_batch_forward: rows of the batch get their own adapter ("__base__", or an adapter this
    /// layer does not hold: none). Additive adapters: the base layer runs once over the whole batch (one large product)
    /// and each adapter adds its change on its own rows only; the others run whole per group of rows.</summary>
    private Tensor MixedBatch(Tensor x, string[] perSample)
    {
        if (Merged) throw new InvalidOperationException("a mixed-adapter batch cannot run while adapters are merged; unmerge first");
        MixedBatchRows.CheckLength(perSample, x);
        var names = perSample.Select(n => n != PeftModel.BaseAdapterName && Adapters.Contains(n) ? n : PeftModel.BaseAdapterName).ToArray();
        if (!IsAdditive)
            return MixedBatchRows.ByAdapter(x, names, (name, rows, _) => name == PeftModel.BaseAdapterName ? BaseForward(rows) : AdaptedForward(rows, [name]));
        using var full = BaseForward(x);
        if (FusedMixedBatch(x, names, full) is { } fused) return fused;
        return MixedBatchRows.ByAdapter(x, names, (name, rows, index) =>
        {
            if (name == PeftModel.BaseAdapterName) return MixedBatchRows.Rows(full, index);
            using var baseRows = MixedBatchRows.Rows(full, index);
            return AddAdapterOutput(name, rows, baseRows);
        });
    }

    /// <summary>A mixed batch of an additive method in one fused op on top of the base output <paramref name="baseOutput"/>
    /// (LoRA's SGMV on devices), or null to take the per-adapter path. <paramref name="perSample"/> already maps unknown
    /// names to the base.</summary>
    protected virtual Tensor? FusedMixedBatch(Tensor x, string[] perSample, Tensor baseOutput) => null;

    /// <summary>What merging <paramref name="adapter"/> adds to the base weight, in the base weight's layout.</summary>
    public abstract Tensor DeltaWeight(string adapter);

    /// <summary>The base layer's weight tensor.</summary>
    protected Tensor BaseWeight => BaseLayer.Parameter("weight");

    /// <summary>The base layer's bias, or null.</summary>
    protected Tensor? BaseBias => BaseLayer switch { Linear l => l.Bias, Conv1D c => c.Bias, QuantizedLinear q => q.Bias, _ => null };

    /// <summary>The base weight as [out, in] whatever its storage layout (a view for Conv1D).</summary>
    protected Tensor WeightOutIn() => FanInFanOut ? BaseWeight.Transpose(0, 1) : BaseWeight.Contiguous();

    /// <summary>An [out, in] matrix in the base weight's layout (transposed for Conv1D), as a new tensor.</summary>
    protected Tensor InBaseLayout(Tensor outIn)
    {
        if (!FanInFanOut) return outIn.Contiguous();
        using var t = outIn.Transpose(0, 1);
        return t.Contiguous();
    }

    /// <summary>
    /// Merges each adapter into the base weight. With <paramref name="safe"/>, the new weight is formed on a copy and
    /// checked for NaN/∞ first, and the base is left untouched on failure. Already-merged adapters are skipped.
    /// </summary>
    public void Merge(IEnumerable<string> adapters, bool safe)
    {
        using var _ = Autograd.NoGrad();
        foreach (var name in adapters)
        {
            if (!Adapters.Contains(name) || _merged.Contains(name)) continue;
            if (BaseLayer is QuantizedLinear quantized)
            {
                MergeQuantized(quantized, name, safe, +1);
                _merged.Add(name);
                continue;
            }
            using var merged = MergedWeight(name);
            if (safe && merged.ToFloatArray().Any(v => !float.IsFinite(v)))
                throw new InvalidOperationException($"NaN or infinity detected in the merged weights of adapter '{name}' (layer {InFeatures}→{OutFeatures}); the adapter seems broken and the base weights were left unchanged");
            BaseWeight.CopyFrom(merged);
            MergeBias(name, +1);
            _merged.Add(name);
        }
    }

    /// <summary>Takes merged adapters out of the base weight again, last merged first.</summary>
    public void Unmerge()
    {
        using var _ = Autograd.NoGrad();
        while (_merged.Count > 0)
        {
            var name = _merged[^1];
            if (BaseLayer is QuantizedLinear quantized)
            {
                MergeQuantized(quantized, name, safe: false, -1);
                _merged.RemoveAt(_merged.Count - 1);
                continue;
            }
            using var restored = UnmergedWeight(name);
            BaseWeight.CopyFrom(restored);
            MergeBias(name, -1);
            _merged.RemoveAt(_merged.Count - 1);
        }
    }

    /// <summary>
    /// PEFT's merge into a bitsandbytes base: dequantize, add (or subtract) ΔW, requantize. Only additive adapters have a
    /// ΔW that can be added this way (as in PEFT, where LoRA merges into int8/4-bit bases); the rounding of the new
    /// quantized weight means unmerge restores the base only to quantization precision, as PEFT warns.
    /// </summary>
    private void MergeQuantized(QuantizedLinear quantized, string name, bool safe, int sign)
    {
        if (!IsAdditive || this is LoraLinear dora && dora.UsesDora(name))
            throw new NotSupportedException($"{GetType().Name} adapters cannot be merged into a quantized base (only additive ΔW, as PEFT's LoRA)");
        using var w = quantized.DequantizedWeight();
        using var delta = DeltaWeight(name);
        using var merged = sign > 0 ? w.Add(delta) : w.Sub(delta);
        if (safe && merged.ToFloatArray().Any(v => !float.IsFinite(v)))
            throw new InvalidOperationException($"NaN or infinity detected in the merged weights of adapter '{name}'; the quantized base was left unchanged");
        quantized.Requantize(merged);
        MergeBias(name, sign);
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

    /// <summary>Merges (sign +1) or unmerges (−1) what the adapter does to the base bias, if anything.</summary>
    protected virtual void MergeBias(string adapter, int sign) { }

    /// <summary>Removes an adapter's parameters from this layer; refuses a merged one.</summary>
    public void DeleteAdapter(string adapter)
    {
        if (_merged.Contains(adapter)) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge it before deleting it");
        if (!Adapters.Contains(adapter)) return;
        RemoveAdapterState(adapter);
        ActiveAdapters.Remove(adapter);
    }

    /// <summary>Drops everything this layer holds for <paramref name="adapter"/>.</summary>
    protected abstract void RemoveAdapterState(string adapter);

    /// <summary>Detaches and returns the base layer (the caller puts it back in the model).</summary>
    internal Module TakeBaseLayer() => RemoveModule("base_layer");
}
