using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// PEFT's ModulesToSaveWrapper: keeps the <c>original_module</c> frozen and a trainable copy per adapter in
/// <c>modules_to_save.&lt;adapter&gt;</c> (e.g. a freshly initialised classifier head). The active adapter's copy runs.
/// </summary>
public sealed class ModulesToSaveWrapper : Module, IUnaryModule
{
    /// <summary>Wraps <paramref name="original"/>.</summary>
    public ModulesToSaveWrapper(Module original)
    {
        if (original is not IUnaryModule) throw new NotSupportedException($"modules_to_save cannot wrap {original.GetType().Name} (it must map one tensor to one tensor)");
        RegisterModule("original_module", original);
        RegisterModule("modules_to_save", new ModuleDict<Module>());
    }

    /// <summary>The frozen original.</summary>
    public Module Original => Child<Module>("original_module");

    /// <summary>Per-adapter copies.</summary>
    public ModuleDict<Module> Copies => Child<ModuleDict<Module>>("modules_to_save");

    /// <summary>The adapter whose copy runs (null: the original).</summary>
    public string? ActiveAdapter { get; set; }

    /// <summary>When true the original runs.</summary>
    public bool Disabled { get; set; }

    /// <summary>Adds a trainable copy of the original for <paramref name="adapter"/>.</summary>
    public void AddAdapter(string adapter, bool trainable)
    {
        var copy = Original.DeepCopy();
        copy.RequiresGrad(trainable);
        Copies.Set(adapter, copy);
    }

    /// <summary>Per-sample adapter names for a mixed batch, or null.</summary>
    internal string[]? SampleAdapters { get; set; }

    /// <inheritdoc/>
    public Tensor Forward(Tensor x)
    {
        if (!Disabled && SampleAdapters is { } perSample) return MixedBatch(x, perSample);
        var m = Disabled || ActiveAdapter == null || !Copies.Contains(ActiveAdapter) ? Original : Copies[ActiveAdapter];
        return ((IUnaryModule)m).Forward(x);
    }

    /// <summary>Each sample runs through its adapter's copy ("__base__" or an adapter without a copy: the original),
    /// each module on its own rows only.</summary>
    private Tensor MixedBatch(Tensor x, string[] perSample)
    {
        MixedBatchRows.CheckLength(perSample, x);
        var names = perSample.Select(n => n != PeftModel.BaseAdapterName && Copies.Contains(n) ? n : PeftModel.BaseAdapterName).ToArray();
        return MixedBatchRows.ByAdapter(x, names, (name, rows, _) => ((IUnaryModule)(name == PeftModel.BaseAdapterName ? Original : Copies[name])).Forward(rows));
    }

    internal Module TakeOriginal() => RemoveModule("original_module");

    internal Module TakeCopy(string adapter) => Copies.Take(adapter);
}
