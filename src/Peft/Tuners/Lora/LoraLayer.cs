using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// What every LoRA layer adds to <see cref="TunerLayer"/>: a rank and a scaling per adapter (alpha/r, or alpha/√r with
/// rsLoRA) and factors A, B with ΔW = s·B·A. Subclasses hold the factors (<see cref="LoraLinear"/>, <see cref="LoraEmbedding"/>).
/// </summary>
public abstract class LoraLayer : TunerLayer
{
    private readonly Dictionary<string, double> _scaling = new();
    private readonly Dictionary<string, int> _rank = new();

    /// <summary>Wraps <paramref name="baseLayer"/>.</summary>
    protected LoraLayer(Module baseLayer) : base(baseLayer) { }

    /// <summary>Wraps a supported layer in the matching LoRA layer.</summary>
    public static LoraLayer For(Module baseLayer) => baseLayer switch
    {
        Linear or Conv1D or QuantizedLinear => new LoraLinear(baseLayer),
        Embedding e => new LoraEmbedding(e),
        _ => throw new NotSupportedException($"LoRA supports Linear, Conv1D and Embedding layers, not {baseLayer.GetType().Name}"),
    };

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

    /// <summary>The factors of <paramref name="adapter"/> such that ΔW = s·B·A up to layout: A [r, in], B [out, r]
    /// (the module's own tensors, not copies).</summary>
    public abstract (Tensor A, Tensor B) Factors(string adapter);

    /// <summary>Drops the factors of <paramref name="adapter"/>.</summary>
    protected abstract void RemoveFactors(string adapter);

    /// <inheritdoc/>
    protected sealed override void RemoveAdapterState(string adapter)
    {
        RemoveFactors(adapter);
        _rank.Remove(adapter);
        _scaling.Remove(adapter);
    }
}
