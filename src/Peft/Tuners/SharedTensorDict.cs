using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// Frozen tensors keyed by adapter that a method keeps once for the whole model (PEFT's BufferDict at the
/// <c>base_model</c> level, e.g. VeRA's <c>base_model.vera_A.default</c>). Layers keep this dictionary, not the tensors,
/// so a dtype change or a loaded adapter file (which replace or overwrite the buffers) is seen everywhere.
/// </summary>
public sealed class SharedTensorDict : Module
{
    /// <summary>Adds or replaces the tensor of <paramref name="adapter"/> (the dictionary owns it).</summary>
    public void Set(string adapter, Tensor value)
    {
        if (HasBuffer(adapter)) RemoveBuffer(adapter);
        RegisterBuffer(adapter, value);
    }

    /// <summary>True when <paramref name="adapter"/> has a tensor here.</summary>
    public bool Contains(string adapter) => HasBuffer(adapter);

    /// <summary>The tensor of <paramref name="adapter"/>.</summary>
    public Tensor this[string adapter] => Buffer(adapter);

    /// <summary>Removes and disposes the tensor of <paramref name="adapter"/>.</summary>
    public void Remove(string adapter) => RemoveBuffer(adapter);
}
