namespace Peft.Core;

// The autograd-facing members of Tensor.
public sealed partial class Tensor
{
    /// <summary>Back-propagates from this tensor (a scalar unless <paramref name="gradient"/> is given).</summary>
    public void Backward(Tensor? gradient = null) => Autograd.Backward(this, gradient);

    /// <summary>A view of the same memory that is cut out of the autograd graph.</summary>
    public Tensor Detach()
    {
        Storage.AddRef();
        return new Tensor(Storage, (int[])_shape.Clone(), (long[])_strides.Clone(), Offset, DType);
    }

    /// <summary>Disposes and clears <see cref="Grad"/> (call between optimizer steps).</summary>
    public void ZeroGrad()
    {
        Grad?.Dispose();
        Grad = null;
    }
}
