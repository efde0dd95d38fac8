using Peft.Core.Random;

namespace Peft;

/// <summary>
/// PEFT's merge_utils on flat tensors (one per adapter, equal length): task arithmetic, magnitude pruning, TIES
/// (prune, elect the majority sign, disjoint mean) and DARE (random drop with rescale). DARE's masks come from a
/// Philox <see cref="Generator"/>, so they are reproducible from a seed but not equal to torch's Bernoulli draws.
/// </summary>
public static class TaskArithmetic
{
    /// <summary>Combines <paramref name="tensors"/> with <paramref name="weights"/> by <paramref name="method"/>.</summary>
    public static double[] Combine(string method, IReadOnlyList<double[]> tensors, IReadOnlyList<double> weights, double? density, string majoritySignMethod, Generator? generator)
    {
        if (method != "linear" && density is null) throw new ArgumentException($"combination_type '{method}' needs a density");
        if (density is < 0) throw new ArgumentOutOfRangeException(nameof(density), $"density must be ≥ 0, got {density}");
        var gen = generator ?? Generator.Default;
        var pruned = method switch
        {
            "linear" => tensors.ToList(),
            "magnitude_prune" or "ties" => tensors.Select(t => MagnitudePrune(t, density!.Value)).ToList(),
            "dare_linear" or "dare_ties" => tensors.Select(t => RandomPrune(t, density!.Value, gen)).ToList(),
            _ => throw new NotSupportedException($"combination_type '{method}' is not supported"),
        };
        int n = tensors[0].Length;
        var result = new double[n];
        bool ties = method is "ties" or "dare_ties";
        if (!ties)
        {
            for (int t = 0; t < pruned.Count; t++) for (int i = 0; i < n; i++) result[i] += weights[t] * pruned[t][i];
            return result;
        }
        if (majoritySignMethod is not ("total" or "frequency")) throw new ArgumentException($"majority_sign_method must be 'total' or 'frequency', got '{majoritySignMethod}'");
        for (int i = 0; i < n; i++)
        {
            // Elect the sign from the unweighted pruned tensors (sum or count of signs), then average the agreeing weighted entries.
            double vote = 0;
            foreach (var t in pruned) vote += majoritySignMethod == "total" ? t[i] : Math.Sign(t[i]);
            int majority = vote >= 0 ? 1 : -1;
            double sum = 0;
            int count = 0;
            for (int t = 0; t < pruned.Count; t++)
            {
                if (Math.Sign(pruned[t][i]) != majority) continue;
                sum += weights[t] * pruned[t][i];
                count++;
            }
            result[i] = sum / Math.Max(count, 1);
        }
        return result;
    }

    /// <summary>Keeps the ⌊density·n⌋ largest magnitudes (density ≥ 1: unchanged).</summary>
    public static double[] MagnitudePrune(double[] t, double density)
    {
        if (density >= 1) return (double[])t.Clone();
        int k = (int)(density * t.Length);
        var keep = Enumerable.Range(0, t.Length).OrderByDescending(i => Math.Abs(t[i])).Take(k).ToHashSet();
        return t.Select((v, i) => keep.Contains(i) ? v : 0).ToArray();
    }

    /// <summary>Keeps each entry with probability density and divides survivors by density (DARE's rescale).</summary>
    public static double[] RandomPrune(double[] t, double density, Generator gen)
    {
        if (density >= 1) return (double[])t.Clone();
        using var u = Peft.Core.Tensor.Rand([t.Length], gen, Peft.Core.DType.F64);
        var draws = u.ToArray<double>();
        return t.Select((v, i) => draws[i] < density ? v / density : 0).ToArray();
    }
}
