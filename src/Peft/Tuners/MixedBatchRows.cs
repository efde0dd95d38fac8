using Peft.Core;

namespace Peft;

/// <summary>
/// The per-sample adapter list of a mixed-adapter batch (PEFT's <c>adapter_names</c>), shared by the LoRA layers and
/// the modules_to_save wrapper so both check it and select their rows the same way.
/// </summary>
internal static class MixedBatchRows
{
    /// <summary>Throws unless <paramref name="perSample"/> names one adapter per sample of <paramref name="x"/>.</summary>
    public static void CheckLength(string[] perSample, Tensor x)
    {
        if (perSample.Length != x.Size(0))
            throw new ArgumentException($"adapter_names has {perSample.Length} entries but the batch has {x.Size(0)} samples");
    }

    /// <summary>
    /// The batch with each sample's rows run through <paramref name="forwardRows"/>(its name, its rows, their indices in
    /// the batch — null when the group is the whole batch): the samples that name one adapter go together (PEFT's
    /// sub-batches; the segments of SGMV), so every adapter computes on its own rows only, and the outputs come back in
    /// batch order through one gather (autograd sees IndexSelect and Cat).
    /// </summary>
    public static Tensor ByAdapter(Tensor x, string[] perSample, Func<string, Tensor, Tensor?, Tensor> forwardRows)
    {
        var groups = perSample.Select((name, row) => (name, row)).GroupBy(p => p.name).ToList();
        if (groups.Count == 1) return forwardRows(groups[0].Key, x, null);
        var parts = new List<Tensor>(groups.Count);
        var order = new List<int>(perSample.Length);
        try
        {
            foreach (var g in groups)
            {
                using var idx = Tensor.FromArray(g.Select(p => (long)p.row).ToArray());
                using var rows = x.IndexSelect(0, idx);
                parts.Add(forwardRows(g.Key, rows, idx));
                order.AddRange(g.Select(p => p.row));
            }
            var inverse = new long[order.Count];
            for (int p = 0; p < order.Count; p++) inverse[order[p]] = p;
            using var grouped = Tensor.Cat(parts, 0);
            using var back = Tensor.FromArray(inverse);
            return grouped.IndexSelect(0, back);
        }
        finally
        {
            foreach (var t in parts) t.Dispose();
        }
    }

    /// <summary>The rows <paramref name="index"/> of <paramref name="t"/> (all of it, as a new handle, when null).</summary>
    public static Tensor Rows(Tensor t, Tensor? index) => index == null ? t.Contiguous() : t.IndexSelect(0, index);
}
