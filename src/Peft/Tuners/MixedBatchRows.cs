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

    /// <summary>A [B, 1, …, 1] mask in <paramref name="like"/>'s dtype and rank: 1 on the rows whose sample uses
    /// <paramref name="adapter"/>, 0 elsewhere (broadcasts against <paramref name="like"/>).</summary>
    public static Tensor Mask(string[] perSample, string adapter, Tensor like)
    {
        var rows = perSample.Select(n => n == adapter ? 1.0 : 0.0).ToArray();
        var shape = Enumerable.Repeat(1, like.Rank).ToArray();
        shape[0] = rows.Length;
        using var raw = Tensor.FromArray(rows, shape);
        using var typed = raw.To(like.DType);
        return typed.To(like.Device);   // built on the host, used beside activations that may live on a device
    }
}
