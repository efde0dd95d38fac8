using Peft.Core;

namespace Peft.Nn;

/// <summary>torch.nn.ReLU as a module (a step of an nn.Sequential, so indices of the layers around it match PyTorch's).</summary>
public sealed class Relu : Module, IUnaryModule
{
    /// <inheritdoc/>
    public Tensor Forward(Tensor input) => input.Relu();
}

/// <summary>torch.nn.Tanh as a module.</summary>
public sealed class Tanh : Module, IUnaryModule
{
    /// <inheritdoc/>
    public Tensor Forward(Tensor input) => input.Tanh();
}
