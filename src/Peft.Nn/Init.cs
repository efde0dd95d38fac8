using Peft.Core;

namespace Peft.Nn;

/// <summary>Parameter initialisers (run without recording gradients).</summary>
public static class Init
{
    /// <summary>transformers' _init_weights for linear layers: weight ~ N(0, <paramref name="std"/>), bias = 0.</summary>
    public static Linear NormalInit(this Linear layer, double std)
    {
        using var _ = Autograd.NoGrad();
        using var w = Tensor.Randn(layer.Weight.Shape, null, layer.Weight.DType, 0, std);
        layer.Weight.CopyFrom(w);
        layer.Bias?.FillInPlace(0);
        return layer;
    }
}
