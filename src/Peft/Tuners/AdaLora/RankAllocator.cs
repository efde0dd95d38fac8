using Peft.Core;

namespace Peft;

/// <summary>
/// AdaLoRA's RankAllocator (PEFT's adalora/layer.py), driven by <see cref="PeftModel.UpdateAndAllocate"/> after each
/// backward: importance of every entry of P, Λ, Q is I = |p ⊙ ∇p|, smoothed Ī = β1·Ī + (1 − β1)·I with uncertainty
/// U = β2·U + (1 − β2)·|I − Ī|; a triplet's score is Ī·U of its Λ entry plus the row mean of P's and the column mean
/// of Q's. The budget (total kept triplets) falls from Σ init_r to target_r·layers on a cubic schedule between tinit and
/// total_step − tfinal; every deltaT steps the lowest-scoring triplets get Λ = 0.
/// </summary>
internal sealed class RankAllocator
{
    private readonly AdaLoraConfig _config;
    private readonly string _adapter;
    private readonly Dictionary<Tensor, (double[] Avg, double[] Unc)> _scores = new(ReferenceEqualityComparer.Instance);

    public RankAllocator(AdaLoraConfig config, string adapter, IReadOnlyList<(string Path, AdaLoraLayer Layer)> layers)
    {
        _config = config;
        _adapter = adapter;
        Layers = layers;
        InitialBudget = layers.Sum(l => l.Layer.Rank(adapter));
        TargetBudget = config.TargetR * layers.Count;
    }

    /// <summary>The adapted layers, by module path.</summary>
    public IReadOnlyList<(string Path, AdaLoraLayer Layer)> Layers { get; }

    /// <summary>Σ init_r over layers.</summary>
    public int InitialBudget { get; }

    /// <summary>target_r × layers.</summary>
    public int TargetBudget { get; }

    /// <summary>(budget, whether to mask) at <paramref name="step"/>, as PEFT's budget_schedule.</summary>
    public (int Budget, bool Mask) BudgetSchedule(int step)
    {
        int tinit = _config.Tinit, tfinal = _config.Tfinal, total = _config.TotalStep!.Value;
        if (step <= tinit) return (InitialBudget, false);
        if (step > total - tfinal) return (TargetBudget, true);
        double mul = 1 - (double)(step - tinit) / (total - tfinal - tinit);
        return ((int)((InitialBudget - TargetBudget) * mul * mul * mul + TargetBudget), step % _config.DeltaT == 0);
    }

    private IEnumerable<Tensor> Parameters() =>
        Layers.SelectMany(l => new[] { l.Layer.A(_adapter), l.Layer.E(_adapter), l.Layer.B(_adapter) });

    /// <summary>Updates the smoothed sensitivity and uncertainty of every entry from the current gradients.</summary>
    public void UpdateImportance()
    {
        double b1 = _config.Beta1, b2 = _config.Beta2;
        foreach (var p in Parameters())
        {
            if (p.Grad == null) continue;
            var v = p.ToFloatArray();
            var g = p.Grad.ToFloatArray();
            if (!_scores.TryGetValue(p, out var s)) _scores[p] = s = (new double[v.Length], new double[v.Length]);
            for (int i = 0; i < v.Length; i++)
            {
                double ipt = Math.Abs((double)v[i] * g[i]);
                s.Avg[i] = b1 * s.Avg[i] + (1 - b1) * ipt;
                s.Unc[i] = b2 * s.Unc[i] + (1 - b2) * Math.Abs(ipt - s.Avg[i]);
            }
        }
    }

    /// <summary>Forgets the accumulated scores (PEFT's reset_ipt, after the final allocation).</summary>
    public void Reset() => _scores.Clear();

    private double Score(Tensor p, int i) => _scores.TryGetValue(p, out var s) ? s.Avg[i] * s.Unc[i] : 0;

    /// <summary>Zeroes Λ for every triplet scoring at or below the k-th smallest score (k = initial − budget) and
    /// returns which triplets survive, per layer, keyed as PEFT saves them ("&lt;path&gt;.lora_E").</summary>
    public Dictionary<string, bool[]> MaskToBudget(int budget)
    {
        var triplets = new List<double[]>();
        foreach (var (_, layer) in Layers)
        {
            Tensor a = layer.A(_adapter), e = layer.E(_adapter), b = layer.B(_adapter);
            int r = a.Shape[0], inF = a.Shape[1], outF = b.Shape[0];
            var score = new double[r];
            for (int k = 0; k < r; k++)
            {
                double rowA = 0, colB = 0;
                for (int j = 0; j < inF; j++) rowA += Score(a, k * inF + j);
                for (int i = 0; i < outF; i++) colB += Score(b, i * r + k);
                score[k] = Score(e, k) + rowA / inF + colB / outF;
            }
            triplets.Add(score);
        }
        int toMask = InitialBudget - budget;
        var pattern = new Dictionary<string, bool[]>();
        double threshold = toMask <= 0 ? double.NegativeInfinity : triplets.SelectMany(s => s).Order().ElementAt(toMask - 1); // torch.kthvalue
        using var _ = Autograd.NoGrad();
        for (int l = 0; l < Layers.Count; l++)
        {
            var keep = triplets[l].Select(s => s > threshold).ToArray();
            pattern[Layers[l].Path + ".lora_E"] = keep;
            Apply(Layers[l].Layer, keep);
        }
        return pattern;
    }

    /// <summary>Zeroes Λ where <paramref name="keep"/> is false.</summary>
    public void Apply(AdaLoraLayer layer, bool[] keep)
    {
        using var _ = Autograd.NoGrad();
        var e = layer.E(_adapter);
        var values = e.ToFloatArray();
        for (int i = 0; i < keep.Length && i < values.Length; i++) if (!keep[i]) values[i] = 0;
        using var masked = Tensor.FromArray(values, e.Shape);
        e.CopyFrom(masked);
    }
}
