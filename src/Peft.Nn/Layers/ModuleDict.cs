using Peft.Core;

namespace Peft.Nn;

/// <summary>Children keyed by name (torch.nn.ModuleDict), e.g. one LoRA factor per adapter: <c>lora_A.default</c>.</summary>
public sealed class ModuleDict<T> : Module where T : Module
{
    /// <summary>Adds or replaces the module under <paramref name="key"/>; a replaced module is disposed.</summary>
    public void Set(string key, T module)
    {
        if (Contains(key)) RemoveModule(key).Dispose();
        RegisterModule(key, module);
    }

    /// <summary>True when <paramref name="key"/> is present.</summary>
    public bool Contains(string key) => HasChild(key);

    /// <summary>The module under <paramref name="key"/>.</summary>
    public T this[string key] => Child<T>(key);

    /// <summary>Keys in insertion order.</summary>
    public IEnumerable<string> Keys => NamedChildren().Select(c => c.Name);

    /// <summary>Removes the module under <paramref name="key"/> and hands it to the caller (not disposed).</summary>
    public T Take(string key) => (T)RemoveModule(key);

    /// <summary>Removes and disposes the module under <paramref name="key"/>.</summary>
    public void Remove(string key) => RemoveModule(key).Dispose();
}
