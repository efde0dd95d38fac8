using Peft.Core;

namespace Peft.Nn;

/// <summary>Parameters keyed by name (torch.nn.ParameterDict), e.g. <c>lora_embedding_A.default</c>.</summary>
public sealed class ParameterDict : Module
{
    /// <summary>Adds or replaces the parameter under <paramref name="key"/> (trainable unless
    /// <paramref name="requiresGrad"/> is false, e.g. AdaLoRA's ranknum).</summary>
    public void Set(string key, Tensor value, bool requiresGrad = true)
    {
        if (Contains(key)) SetParameter(key, value);
        else RegisterParameter(key, value, requiresGrad);
        if (!requiresGrad) value.RequiresGrad = false;
    }

    /// <summary>True when <paramref name="key"/> is present.</summary>
    public bool Contains(string key) => HasParameter(key);

    /// <summary>The parameter under <paramref name="key"/>.</summary>
    public Tensor this[string key] => Parameter(key);

    /// <summary>Removes and disposes the parameter under <paramref name="key"/>.</summary>
    public void Remove(string key) => RemoveParameter(key);
}
