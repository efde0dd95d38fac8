namespace Peft;

/// <summary>
/// BOFT's block butterfly permutations (PEFT's block_butterfly_perm): factor i of the butterfly interleaves half-blocks
/// of size b/2 inside chunks of n / (blocks / 2^i) features — the even-numbered half-blocks first, then the odd ones.
/// Factor 0 is the identity.
/// </summary>
public static class ButterflyPermutation
{
    /// <summary>perm with P[i, perm[i]] = 1 for a permutation of <paramref name="n"/> features into
    /// <paramref name="blocks"/> blocks of half-size <paramref name="half"/> (no butterfly: the identity).</summary>
    public static int[] Indices(int n, int blocks, int half, int butterflyFactors)
    {
        var indices = Enumerable.Range(0, n).ToArray();
        if (butterflyFactors == 0) return indices;
        if (blocks * half * 2 > n) throw new ArgumentException($"invalid butterfly: {blocks} blocks of 2×{half} do not fit {n} features");
        int chunk = n / blocks;
        double step = (double)chunk / half;
        var sequence = new List<int>();
        for (double p = 0; p < step; p += 2) sequence.Add((int)p);
        for (double p = 1; p < step; p += 2) sequence.Add((int)p);
        var order = new int[chunk];
        for (int i = 0; i < sequence.Count; i++)
            for (int k = 0; k < half; k++) order[i * half + k] = sequence[i] * half + k;
        for (int start = 0; start < n; start += chunk)
        {
            var window = indices[start..(start + chunk)];
            for (int j = 0; j < chunk; j++) indices[start + j] = window[order[j]];
        }
        return indices;
    }

    /// <summary>The inverse permutation.</summary>
    public static int[] Inverse(int[] perm)
    {
        var inv = new int[perm.Length];
        for (int i = 0; i < perm.Length; i++) inv[perm[i]] = i;
        return inv;
    }

    /// <summary>True for the identity.</summary>
    public static bool IsIdentity(int[] perm) => perm.Select((p, i) => p == i).All(b => b);
}
