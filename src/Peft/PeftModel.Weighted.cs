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
    /// computed from the factors without forming the full matrix,</item>
    /// <item><c>ties</c>, <c>dare_linear</c>, <c>dare_ties</c>, <c>magnitude_prune</c>: PEFT's merge_utils applied to the
    /// A's and to the B's separately (weights sign(wᵢ)√|wᵢsᵢ| and √|wᵢsᵢ|; equal ranks; <paramref name="density"/>),</item>
    /// <item><c>ties_svd</c>, <c>dare_linear_svd</c>, <c>dare_ties_svd</c>, <c>magnitude_prune_svd</c>: the same functions on the
    /// full ΔWᵢ with weights wᵢ, then the truncated SVD; <paramref name="svdClamp"/> clamps the factors at that quantile
    /// of their absolute values, as PEFT's svd_clamp.</item>
    /// </list>
    /// </summary>
    public void AddWeightedAdapter(IReadOnlyList<string> adapters, IReadOnlyList<double> weights, string adapterName, string combinationType = "svd",
        int? svdRank = null, double? density = null, string majoritySignMethod = "total", double? svdClamp = null, Peft.Core.Random.Generator? generator = null)
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
        string[] factorWise = ["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"];
        string[] svdWise = ["svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd"];
        int newRank = combinationType switch
        {
            _ when factorWise.Contains(combinationType) => ranks.Distinct().Count() == 1 ? ranks[0]
                : throw new ArgumentException($"'{combinationType}' combination needs adapters of equal rank, got [{string.Join(", ", ranks)}]; use 'cat' or an *svd type"),
            "cat" => ranks.Sum(),
            _ when svdWise.Contains(combinationType) => svdRank ?? ranks.Max(),
            _ => throw new NotSupportedException($"combination_type '{combinationType}' is not supported (linear, cat, svd, ties, dare_linear, dare_ties, magnitude_prune and their _svd forms)"),
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
        foreach (var layer in TunerLayers().Select(l => l.Layer).OfType<LoraLayer>())
        {
            if (!layer.Adapters.Contains(adapterName)) continue;
            var present = adapters.Select((a, i) => (Name: a, Weight: weights[i], Rank: ranks[i])).Where(p => layer.Adapters.Contains(p.Name)).ToList();
            var (aNew, bNew) = layer.Factors(adapterName);
            var (aOut, bOut) = combinationType switch
            {
                "cat" or "svd" => Combine(layer, present, combinationType, newRank, aNew.Size(1), bNew.Size(0)),
                _ when combinationType.EndsWith("_svd", StringComparison.Ordinal) =>
                    CombineDeltasThenSvd(layer, present, combinationType[..^4], newRank, aNew.Size(1), bNew.Size(0), density, majoritySignMethod, generator),
                _ when present.Count == 0 => (new double[newRank * aNew.Size(1)], new double[bNew.Size(0) * newRank]),
                _ => CombineFactorWise(layer, present, combinationType, newRank, density, majoritySignMethod, generator),
            };
            if (svdClamp is double q && combinationType.Contains("svd", StringComparison.Ordinal)) ClampAtQuantile(aOut, bOut, q);
            using (var at = Tensor.FromArray(aOut, [newRank, aNew.Size(1)])) aNew.CopyFrom(at);   // CopyFrom converts the dtype
            using (var bt = Tensor.FromArray(bOut, [bNew.Size(0), newRank])) bNew.CopyFrom(bt);
        }
        ApplyActiveState();
    }

    /// <summary>PEFT's _generalized_task_arithmetic_weighted_adapter: merge_utils on the stacked A's and B's.</summary>
    private static (double[] A, double[] B) CombineFactorWise(LoraLayer layer, List<(string Name, double Weight, int Rank)> parts, string type, int newRank,
        double? density, string signMethod, Peft.Core.Random.Generator? gen)
    {
        var wA = parts.Select(p => Math.Sign(p.Weight * layer.Scaling(p.Name)) * Math.Sqrt(Math.Abs(p.Weight * layer.Scaling(p.Name)))).ToList();
        var wB = parts.Select(p => Math.Sqrt(Math.Abs(p.Weight * layer.Scaling(p.Name)))).ToList();
        var aList = parts.Select(p => layer.Factors(p.Name).A.ToDoubleArray()).ToList();
        var bList = parts.Select(p => layer.Factors(p.Name).B.ToDoubleArray()).ToList();
        return (TaskArithmetic.Combine(type, aList, wA, density, signMethod, gen), TaskArithmetic.Combine(type, bList, wB, density, signMethod, gen));
    }

    /// <summary>PEFT's _svd_generalized_task_arithmetic_weighted_adapter for the *_svd types: merge_utils on the full
    /// ΔWᵢ (weights wᵢ), then the best rank-r factors of the result.</summary>
    private static (double[] A, double[] B) CombineDeltasThenSvd(LoraLayer layer, List<(string Name, double Weight, int Rank)> parts, string type, int newRank,
        int inDim, int outDim, double? density, string signMethod, Peft.Core.Random.Generator? gen)
    {
        var a = new double[newRank * inDim];
        var b = new double[outDim * newRank];
        if (parts.Count == 0) return (a, b);
        var deltas = parts.Select(p =>
        {
            var (ai, bi) = layer.Factors(p.Name);
            using var ba = bi.MatMul(ai);               // [out, in] in the factors' orientation
            using var scaled = ba.Mul(layer.Scaling(p.Name));
            return scaled.ToDoubleArray();
        }).ToList();
        var mixed = TaskArithmetic.Combine(type, deltas, parts.Select(p => p.Weight).ToList(), density, signMethod, gen);
        var m = new double[outDim, inDim];
        for (int i = 0; i < outDim; i++) for (int j = 0; j < inDim; j++) m[i, j] = mixed[i * inDim + j];
        var (u, s, v) = Decompositions.Svd(m);
        int rank = Math.Min(newRank, s.Length);
        for (int r = 0; r < rank; r++)
        {
            for (int i = 0; i < outDim; i++) b[i * newRank + r] = u[i, r] * s[r];
            for (int j = 0; j < inDim; j++) a[r * inDim + j] = v[j, r];
        }
        return (a, b);
    }

    /// <summary>PEFT's svd_clamp: clamp both factors to ±(the q-quantile of all their entries, linear interpolation as torch.quantile).</summary>
    private static void ClampAtQuantile(double[] a, double[] b, double q)
    {
        var all = a.Concat(b).Order().ToArray();
        if (all.Length == 0) return;
        double pos = q * (all.Length - 1);
        int lo = (int)Math.Floor(pos);
        double hi = lo + 1 < all.Length ? all[lo] + (pos - lo) * (all[lo + 1] - all[lo]) : all[lo];
        for (int i = 0; i < a.Length; i++) a[i] = Math.Clamp(a[i], -hi, hi);
        for (int i = 0; i < b.Length; i++) b[i] = Math.Clamp(b[i], -hi, hi);
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
                for (int j = 0; j < inDim; j++) a[(offset + r) * inDim + j] = signed * av[r * inDim + j];
                for (int i = 0; i < outDim; i++) b[i * newRank + offset + r] = magnitude * bv[i * p.Rank + r];
            }
            offset += p.Rank;
        }
        return (a, b);
    }
}
