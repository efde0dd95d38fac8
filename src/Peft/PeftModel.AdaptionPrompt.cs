using Peft.Transformers.Llama;

namespace Peft;

// LLaMA-Adapter (PEFT's AdaptionPromptModel): the top adapter_layers attention modules are wrapped once; each adapter
// adds its prompt and gate to every wrapper, and one adapter is active at a time.
public sealed partial class PeftModel
{
    private IEnumerable<(string Name, AdaptedAttention Wrapper)> AdaptedAttentions() =>
        Model.NamedModules().Where(m => m.Module is AdaptedAttention).Select(m => (m.Name, (AdaptedAttention)m.Module));

    private void InjectAdaptionPrompt(string adapter, AdaptionPromptConfig config)
    {
        config.Validate();
        // PEFT: every module whose name ends with target_modules, in model order; the last adapter_layers of them.
        var targets = Model.NamedModules()
            .Where(m => m.Name.Length > 0 && (m.Name == config.TargetModules || m.Name.EndsWith("." + config.TargetModules, StringComparison.Ordinal)))
            .Where(m => m.Module is LlamaAttention or AdaptedAttention)
            .Select(m => m.Name).ToList();
        if (targets.Count == 0)
            throw new NotSupportedException($"adaption prompt found no LLaMA-family attention named '{config.TargetModules}' in {Model.ArchitectureName}");
        if (targets.Count < config.AdapterLayers)
            throw new ArgumentException($"adapter_layers ({config.AdapterLayers}) exceeds the {targets.Count} '{config.TargetModules}' modules of the model");
        foreach (var name in targets.Skip(targets.Count - config.AdapterLayers))
        {
            var module = Model.GetSubmodule(name);
            if (module is not AdaptedAttention wrapper)
            {
                wrapper = new AdaptedAttention((LlamaAttention)module);
                Model.SetSubmodule(name, wrapper);
            }
            wrapper.AddAdapter(adapter, config.AdapterLen);
        }
        _configs[adapter] = config;
    }

    /// <summary>Puts the wrapped attention modules back (unload).</summary>
    private void UnwrapAdaptedAttentions()
    {
        foreach (var (name, wrapper) in AdaptedAttentions().ToList())
        {
            Model.SetSubmodule(name, wrapper.TakeAttention());
            wrapper.Dispose();
        }
    }
}
