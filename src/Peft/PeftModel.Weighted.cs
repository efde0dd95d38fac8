using Peft.Core;
using Peft.Core.Linalg;

namespace Peft;

public sealed partial class PeftModel
{
    /// <summary>
    /// Combines LoRA adapters into a new one, as PEFT's <c>add_weighted_adapter</c> (the new adapter is not activated;
    /// its lora_alpha equals its rank, so its scaling is 1):
    /// <list type="bullet">
    /// <item><c>linear</c>: A' = Σ sign(wᵢ)·√|wᵢsᵢ|·Aᵢ, B' = Σ √|wᵢsᵢ|·Bᵢ (PEFT's rule; equal ranks required),</item>
    /// <item><c>cat</c>: the scaled factors stacked along the rank, so B'A' = Σ wᵢsᵢBᵢAᵢ exactly (rank Σrᵢ),</item>
    /// <item><c>svd</c>: the best rank-<paramref name="svdRank"/> approximation of Σ wᵢsᵢBᵢAᵢ (default: the largest rᵢ),
    /// computed from the factors without forming the full matrix.</item>
    /// </list>
    /// </summary>
    public void AddWeightedAdapter(IReadOnlyList<string> adapters, IReadOnlyList<double> weights, string adapterName, string combinationType = "svd", int? svdRank = null)
    {
        if (adapters.Count == 0 || adapters.Count != weights.Count)
            throw new ArgumentException($"add_weighted_adapter needs one weight per adapter (got {adapters.Count} adapters, {weights.Count} weights)");
        var configs = adapters.Select(a => _configs.TryGetValue(a, out var c) ? c as LoraConfig ?? throw new NotSupportedException($"adapter '{a}' is not a LoRA adapter")
            : throw new KeyNotFoundException($"no adapter named '{a}'")).ToList();
        if (configs.Any(c => c.UseDora)) throw new NotSupportedException("weighted combination of DoRA adapters is not supported");
        if (configs.Any(c => c.ModulesToSave is { Length: > 0 }))
            throw new NotSupportedException("weighted combination of adapters with modules_to_save is not supported: their trained heads cannot be combined");
        if (configs.Any(c => c.RankPattern.Count > 0 || c.AlphaPattern.Count > 0))
            throw new NotSupportedException("weighted combination of adapters with rank_pattern/alpha_pattern is not supported yet");
        var ranks = configs.Select(c => c.R).ToList();
        int newRank = combinationType switch
        {
            "linear" => ranks.Distinct().Count() == 1 ? ranks[0] : throw new ArgumentException($"'linear' combination needs adapters of equal rank, got [{string.Join(", ", ranks)}]; use 'cat' or 'svd'"),
            "cat" => ranks.Sum(),
            "svd" => svdRank ?? ranks.Max(),
            _ => throw new NotSupportedException($"combination_type '{combinationType}' is not supported yet (linear, cat, svd)"),
        };
        if (newRank <= 0) throw new ArgumentOutOfRangeException(nameof(svdRank), "the combined rank must be positive");

        var config = (LoraConfig)configs[0].Clone();
        config.R = newRank;
        config.LoraAlpha = newRank;
        config.InitLoraWeights = "true";
        if (configs.All(c => c.TargetModulesRegex == null))
            config.TargetModules = configs.SelectMany(c => c.TargetModules ?? []).Distinct().ToArray();
        else
            config.TargetModulesRegex = string.Join("|", configs.Select(c => $"({c.TargetModulesRegex ?? string.Join("|", (c.TargetModules ?? []).Select(t => $".*\\.{System.Text.RegularExpressions.Regex.Escape(t)}"))})"));
        Inject(adapterName, config);

        using var _ = Autograd.NoGrad();
        foreach (var (_, layer) in LoraLayers())
        {
            if (!layer.Adapters.Contains(adapterName)) continue;
            var present = adapters.Select((a, i) => (Name: a, Weight: weights[i], Rank: ranks[i])).Where(p => layer.Adapters.Contains(p.Name)).ToList();
            var (aNew, bNew) = layer.Factors(adapterName);
            var (aOut, bOut) = Combine(layer, present, combinationType, newRank, aNew.Size(1), bNew.Size(0));
            using (var at = Tensor.FromArray(aOut, [newRank, aNew.Size(1)]).To(aNew.DType)) aNew.CopyFrom(at);
            using (var bt = Tensor.FromArray(bOut, [bNew.Size(0), newRank]).To(bNew.DType)) bNew.CopyFrom(bt);
        }
        ApplyActiveState();
    }

    private static (double[] A, double[] B) Combine(LoraLayer layer, List<(string Name, double Weight, int Rank)> parts, string type, int newRank, int inDim, int outDim)
    {
        var a = new double[newRank * inDim];
        var b = new double[outDim * newRank];
        if (type == "svd")
        {
            int k = parts.Sum(p => p.Rank);
            if (k == 0) return (a, b);
            var bCat = new double[outDim, k];
            var aCat = new double[k, inDim];
            int off = 0;
            foreach (var p in parts)
            {
                var (ai, bi) = layer.Factors(p.Name);
                var av = ai.ToDoubleArray();
                var bv = bi.ToDoubleArray();
                double f = p.Weight * layer.Scaling(p.Name);
                for (int r = 0; r < p.Rank; r++)
                {
                    for (int j = 0; j < inDim; j++) aCat[off + r, j] = av[r * inDim + j];
                    for (int i = 0; i < outDim; i++) bCat[i, off + r] = f * bv[i * p.Rank + r];
                }
                off += p.Rank;
            }
            var (bt, at) = Decompositions.TruncatedLowRank(bCat, aCat, newRank);
            for (int r = 0; r < bt.GetLength(1); r++)
            {
                for (int j = 0; j < inDim; j++) a[r * inDim + j] = at[r, j];
                for (int i = 0; i < outDim; i++) b[i * newRank + r] = bt[i, r];
            }
            return (a, b);
        }
        int offset = 0;
        foreach (var p in parts)
        {
            var (ai, bi) = layer.Factors(p.Name);
            var av = ai.ToDoubleArray();
            var bv = bi.ToDoubleArray();
            double magnitude = Math.Sqrt(Math.Abs(p.Weight * layer.Scaling(p.Name)));
            double signed = Math.Sign(p.Weight) * magnitude;
            for (int r = 0; r < p.Rank; r++)
            {
                int target = type == "cat" ? offset + r : r;
                for (int j = 0; j < inDim; j++) a[target * inDim + j] += signed * av[r * inDim + j];
                for (int i = 0; i < outDim; i++) b[i * newRank + target] += magnitude * bv[i * p.Rank + r];
            }
            if (type == "cat") offset += p.Rank;
        }
        return (a, b);
    }
}
