using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// A Linear or GPT-2 Conv1D wrapped with LoRA adapters, laid out as PEFT lays it out in memory: <c>base_layer</c>,
/// <c>lora_A.&lt;adapter&gt;</c> (Linear in→r, no bias), <c>lora_B.&lt;adapter&gt;</c> (Linear r→out) and
/// <c>lora_dropout.&lt;adapter&gt;</c>. y = base(x) + Σ_active s·B(A(dropout(x))), s = alpha/r (alpha/√r with rsLoRA).
/// The frozen base weight never gets a gradient: autograd only builds dA and dB.
/// </summary>
public sealed class LoraLayer : Module, IUnaryModule
{
    private readonly Dictionary<string, double> _scaling = new();
    private readonly Dictionary<string, int> _rank = new();
    private readonly List<string> _merged = new();

    /// <summary>Wraps <paramref name="baseLayer"/> (a <see cref="Linear"/> or <see cref="Conv1D"/>).</summary>
    public LoraLayer(Module baseLayer, bool fanInFanOut)
    {
        (InFeatures, OutFeatures) = baseLayer switch
        {
            Linear l => (l.InFeatures, l.OutFeatures),
            Conv1D c => (c.InFeatures, c.OutFeatures),
            _ => throw new NotSupportedException($"LoRA supports Linear and Conv1D layers, not {baseLayer.GetType().Name}"),
        };
        // PEFT corrects fan_in_fan_out to match the layer it meets (with a warning): Conv1D stores [in, out].
        FanInFanOut = baseLayer is Conv1D || (fanInFanOut && baseLayer is not Linear);
        RegisterModule("base_layer", baseLayer);
        RegisterModule("lora_dropout", new ModuleDict<Dropout>());
        RegisterModule("lora_A", new ModuleDict<Linear>());
        RegisterModule("lora_B", new ModuleDict<Linear>());
    }

    /// <summary>Input features of the base layer.</summary>
    public int InFeatures { get; }

    /// <summary>Output features of the base layer.</summary>
    public int OutFeatures { get; }

    /// <summary>True when the base weight is [in, out] (Conv1D), so ΔW is transposed before merging.</summary>
    public bool FanInFanOut { get; }

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
    public IEnumerable<string> Adapters => LoraA.Keys;

    private ModuleDict<Linear> LoraA => Child<ModuleDict<Linear>>("lora_A");
    private ModuleDict<Linear> LoraB => Child<ModuleDict<Linear>>("lora_B");
    private ModuleDict<Dropout> DropoutDict => Child<ModuleDict<Dropout>>("lora_dropout");

    /// <summary>The scaling of <paramref name="adapter"/>.</summary>
    public double Scaling(string adapter) => _scaling[adapter];

    /// <summary>The rank of <paramref name="adapter"/>.</summary>
    public int Rank(string adapter) => _rank[adapter];

    /// <summary>Adds (or replaces) an adapter with PEFT's initialisation <paramref name="init"/>: "true" (A ~ U(±1/√in)
    /// — kaiming_uniform(a=√5) — and B = 0, so the layer starts as the base), "gaussian" (A ~ N(0, 1/r), B = 0) or
    /// "false" (both random as nn.Linear: a non-trivial adapter for tests).</summary>
    public void UpdateLayer(string adapter, int r, double alpha, double dropout, string init, bool useRslora, bool loraBias)
    {
        if (r <= 0) throw new ArgumentOutOfRangeException(nameof(r), $"LoRA rank must be positive, got {r}");
        if (r > Math.Max(InFeatures, OutFeatures))
            throw new ArgumentOutOfRangeException(nameof(r), $"LoRA rank {r} is larger than the layer itself ({InFeatures}→{OutFeatures})");
        var a = new Linear(InFeatures, r, bias: false);
        var b = new Linear(r, OutFeatures, bias: loraBias);
        using (Autograd.NoGrad())
        {
            switch (init)
            {
                case "true":
                    b.Weight.FillInPlace(0);
                    b.Bias?.FillInPlace(0);
                    break;
                case "gaussian":
                    using (var g = Tensor.Randn(a.Weight.Shape, null, a.Weight.DType, 0, 1.0 / r)) a.Weight.CopyFrom(g);
                    b.Weight.FillInPlace(0);
                    b.Bias?.FillInPlace(0);
                    break;
                case "false":
                    break; // nn.Linear's own init for both factors
                default:
                    throw new NotSupportedException($"init_lora_weights '{init}' is not supported yet");
            }
        }
        LoraA.Set(adapter, a);
        LoraB.Set(adapter, b);
        DropoutDict.Set(adapter, new Dropout(dropout));
        _rank[adapter] = r;
        _scaling[adapter] = useRslora ? alpha / Math.Sqrt(r) : alpha / r;
    }

    /// <inheritdoc/>
    public Tensor Forward(Tensor x)
    {
        var baseLayer = Child<IUnaryModule>("base_layer");
        if (DisableAdapters)
        {
            if (Merged) Unmerge();
            return baseLayer.Forward(x);
        }
        var result = baseLayer.Forward(x);
        if (Merged) return result;
        foreach (var name in ActiveAdapters)
        {
            if (!LoraA.Contains(name)) continue;
            using var dropped = DropoutDict[name].Forward(x);
            using var t = LoraA[name].Forward(dropped);
            using var u = LoraB[name].Forward(t);
            using var scaled = u.Mul(_scaling[name]);
            using var old = result;
            result = old.Add(scaled);
        }
        return result;
    }

    /// <summary>ΔW = s·B·A in the base weight's layout ([out, in], or [in, out] for Conv1D).</summary>
    public Tensor DeltaWeight(string adapter)
    {
        using var _ = Autograd.NoGrad();
        using var ba = LoraB[adapter].Weight.MatMul(LoraA[adapter].Weight);
        using var scaled = ba.Mul(_scaling[adapter]);
        return FanInFanOut ? scaled.Transpose(0, 1).Contiguous() : scaled.Contiguous();
    }

    private Tensor BaseWeight => BaseLayer.Parameter("weight");

    private Tensor? BaseBias => BaseLayer switch { Linear l => l.Bias, Conv1D c => c.Bias, _ => null };

    /// <summary>
    /// Adds ΔW of each adapter into the base weight (and B's bias into the base bias). With <paramref name="safe"/>,
    /// the sum is formed on a copy and checked for NaN/∞ first, and the base is left untouched on failure.
    /// Already-merged adapters are skipped.
    /// </summary>
    public void Merge(IEnumerable<string> adapters, bool safe)
    {
        using var _ = Autograd.NoGrad();
        foreach (var name in adapters)
        {
            if (!LoraA.Contains(name) || _merged.Contains(name)) continue;
            using var delta = DeltaWeight(name);
            if (safe)
            {
                using var candidate = BaseWeight.Add(delta);
                if (candidate.ToFloatArray().Any(v => !float.IsFinite(v)))
                    throw new InvalidOperationException($"NaN or infinity detected in the merged weights of adapter '{name}' (layer {InFeatures}→{OutFeatures}); the adapter seems broken and the base weights were left unchanged");
                BaseWeight.CopyFrom(candidate);
            }
            else BaseWeight.AddInPlace(delta);
            if (LoraB[name].Bias is { } lb) BaseBias!.AddInPlace(lb, _scaling[name]);
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
            using var delta = DeltaWeight(name);
            BaseWeight.AddInPlace(delta, -1);
            if (LoraB[name].Bias is { } lb) BaseBias!.AddInPlace(lb, -_scaling[name]);
            _merged.RemoveAt(_merged.Count - 1);
        }
    }

    /// <summary>Removes an adapter's parameters from this layer.</summary>
    public void DeleteAdapter(string adapter)
    {
        if (_merged.Contains(adapter)) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge it before deleting it");
        if (!LoraA.Contains(adapter)) return;
        LoraA.Remove(adapter);
        LoraB.Remove(adapter);
        DropoutDict.Remove(adapter);
        _rank.Remove(adapter);
        _scaling.Remove(adapter);
        ActiveAdapters.Remove(adapter);
    }

    /// <summary>Detaches and returns the base layer (the caller puts it back in the model); this layer is then empty.</summary>
    internal Module TakeBaseLayer() => RemoveModule("base_layer");
}
