using Peft.Core;
using Peft.Nn;

namespace Peft.Transformers;

/// <summary>The head reshapes every attention implementation shares.</summary>
public static class AttentionHeads
{
    /// <summary>[B, T, H·D] → [B, H, T, D] (a view when the input is contiguous).</summary>
    public static Tensor Split(Tensor projected, int heads, int headDim)
    {
        using var r = projected.Reshape(projected.Size(0), projected.Size(1), heads, headDim);
        return r.Transpose(1, 2);
    }

    /// <summary>x [B, T, C] through <paramref name="projection"/>, split into heads [B, H, T, D].</summary>
    public static Tensor Project(IUnaryModule projection, Tensor x, int heads, int headDim)
    {
        using var p = projection.Forward(x);
        return Split(p, heads, headDim);
    }

    /// <summary>[B, H, T, D] → [B, T, H·D].</summary>
    public static Tensor Merge(Tensor perHead)
    {
        using var t = perHead.Transpose(1, 2);
        return t.Reshape(perHead.Size(0), perHead.Size(2), perHead.Size(1) * perHead.Size(3));
    }
}
