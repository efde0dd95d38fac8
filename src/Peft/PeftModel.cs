using System.Globalization;
using Peft.Core;
using Peft.Nn;
using Peft.Transformers;

namespace Peft;

/// <summary>
/// A transformer with PEFT adapters: .NET's <c>get_peft_model</c>. Module paths are PEFT's
/// (<c>base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight</c>), so adapter files match Python
/// <c>peft</c> key for key.
/// </summary>
/// <example><code>
/// using var model = AutoModel.FromPretrained("gpt2-folder");
/// using var peft = PeftModel.Create(model, new LoraConfig { R = 8, LoraAlpha = 32, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
/// peft.PrintTrainableParameters();   // trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364
/// // ... train ...
/// peft.SavePretrained("my-adapter"); // adapter_config.json + adapter_model.safetensors
/// </code></example>
public sealed partial class PeftModel : Module
{
    private readonly Dictionary<string, PeftConfig> _configs = new();
    private List<string> _active = new();

    private PeftModel(PreTrainedModel model)
    {
        RegisterModule("base_model", new TunerModel(model));
        Model = model;
    }

    /// <summary>The adapted transformer (its layers now include the adapter layers).</summary>
    public PreTrainedModel Model { get; private set; }

    /// <summary>Adapter configs by name.</summary>
    public IReadOnlyDictionary<string, PeftConfig> PeftConfigs => _configs;

    /// <summary>Adapters whose outputs are added, in order.</summary>
    public IReadOnlyList<string> ActiveAdapters => _active;

    /// <summary>The first active adapter.</summary>
    public string ActiveAdapter => _active.Count > 0 ? _active[0] : throw new InvalidOperationException("no adapter is active");

    /// <summary>
    /// Injects <paramref name="config"/>'s adapters into <paramref name="model"/> (which the PeftModel then owns) and
    /// freezes everything but them, as <c>get_peft_model</c>. A SEQ_CLS task adds <c>classifier</c> and <c>score</c>
    /// to modules_to_save, as PEFT's PeftModelForSequenceClassification does.
    /// </summary>
    public static PeftModel Create(PreTrainedModel model, PeftConfig config, string adapterName = "default")
    {
        var cfg = Prepare(config);
        var peft = new PeftModel(model);
        model.RequiresGrad(false);
        peft.Inject(adapterName, cfg);
        peft._active = [adapterName];
        peft.ApplyActiveState();
        return peft;
    }

    /// <summary>A validated copy of <paramref name="config"/>; a SEQ_CLS task adds the classification heads to
    /// modules_to_save, as PEFT's PeftModelForSequenceClassification does in its constructor and add_adapter.</summary>
    private static PeftConfig Prepare(PeftConfig config)
    {
        var cfg = config.Clone();
        if (cfg.TaskType == "SEQ_CLS")
        {
            var mts = (cfg.ModulesToSave ?? []).ToList();
            foreach (var head in new[] { "classifier", "score" }) if (!mts.Contains(head)) mts.Add(head);
            cfg.ModulesToSave = mts.ToArray();
        }
        cfg.Validate();
        return cfg;
    }

    private IEnumerable<(string Name, TunerLayer Layer)> TunerLayers() =>
        Model.NamedModules().Where(m => m.Module is TunerLayer).Select(m => (m.Name, (TunerLayer)m.Module));

    private IEnumerable<(string Name, ModulesToSaveWrapper Wrapper)> Wrappers() =>
        Model.NamedModules().Where(m => m.Module is ModulesToSaveWrapper).Select(m => (m.Name, (ModulesToSaveWrapper)m.Module));

    private void Inject(string adapter, PeftConfig config)
    {
        if (_configs.ContainsKey(adapter)) throw new ArgumentException($"an adapter named '{adapter}' already exists");
        if (adapter.Contains('.') || adapter.Length == 0) throw new ArgumentException($"adapter names must be non-empty and contain no '.', got '{adapter}'");
        if (_configs.Values.FirstOrDefault() is { } existing && existing.PeftType != config.PeftType)
            throw new ArgumentException($"cannot add a {config.PeftType} adapter next to {existing.PeftType} adapters: one PeftModel holds one method, as in PEFT (without PeftMixedModel)");
        if (config is PromptLearningConfig prompt)
        {
            InjectPrompt(adapter, prompt);
            return;
        }
        if (config is AdaptionPromptConfig adaption)
        {
            InjectAdaptionPrompt(adapter, adaption);
            return;
        }
        if (config is not TunerConfig tuner) throw new NotSupportedException($"peft_type {config.PeftType} is not supported yet");
        InjectTunerLayers(adapter, tuner);
    }

    /// <summary>The layer-injecting methods: wrap modules_to_save, find the targets, let the method correct its config
    /// and make its shared tensors, then wrap (or extend) each target layer.</summary>
    private void InjectTunerLayers(string adapter, TunerConfig config)
    {
        if (config is AdaLoraConfig { InferenceMode: false } && _trainableAdaLora != null)
            throw new ArgumentException($"AdaLoRA supports one trainable adapter ('{_trainableAdaLora}' is); add further AdaLoRA adapters with inference_mode = true");
        var mtsNames = config.ModulesToSave ?? [];
        WrapModulesToSave(adapter, mtsNames, trainable: !config.InferenceMode);
        var protectedPaths = Wrappers().Select(w => w.Name).ToList();
        TargetModuleDefaults.Apply(config, Model.ModelType);
        var targets = TargetMatcher.Targets(Model, config, protectedPaths);
        var baseLayers = targets.Select(t => Model.GetSubmodule(t)).Select(m => m is TunerLayer l ? l.BaseLayer : m).ToList();
        for (int i = 0; i < targets.Count; i++)
            if (!config.CanWrap(baseLayers[i]))
                throw new NotSupportedException($"cannot add {config.PeftType} adapter '{adapter}' to module '{targets[i]}': {baseLayers[i].GetType().Name} layers are not supported by this method");
        config.FitTo(baseLayers);
        foreach (var (dict, tensor) in config.SharedTensors(baseLayers)) BaseModelLevel.AddShared(dict, adapter, tensor);
        var shared = BaseModelLevel.Shared;
        foreach (var name in targets)
        {
            var module = Model.GetSubmodule(name);
            var layer = module as TunerLayer;
            if (layer == null)
            {
                layer = config.NewLayer(module, name);
                Model.SetSubmodule(name, layer);
            }
            try { config.AddTo(layer, adapter, name, shared); }
            catch (NotSupportedException e)
            {
                throw new NotSupportedException($"cannot add adapter '{adapter}' to module '{name}': {e.Message}", e);
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"cannot add adapter '{adapter}' to module '{name}': {e.Message}", e);
            }
        }
        _configs[adapter] = config;
        if (config is AdaLoraConfig ada) PrepareAdaLora(adapter, ada);
    }

    private TunerModel BaseModelLevel => Child<TunerModel>("base_model");

    private void WrapModulesToSave(string adapter, string[] names, bool trainable)
    {
        if (names.Length == 0) return;
        foreach (var (path, module) in Model.NamedModules().ToList())
        {
            if (path.Length == 0 || !names.Any(n => path == n || path.EndsWith(n, StringComparison.Ordinal))) continue;
            if (Wrappers().Any(w => path.StartsWith(w.Name + ".", StringComparison.Ordinal))) continue; // inside a wrapper
            var wrapper = module as ModulesToSaveWrapper;
            if (wrapper == null)
            {
                if (module is not IUnaryModule) continue;
                wrapper = new ModulesToSaveWrapper(module);
                Model.SetSubmodule(path, wrapper);
            }
            wrapper.AddAdapter(adapter, trainable);
        }
    }

    /// <summary>
    /// Makes exactly the active adapters' parameters trainable (unless their config is in inference mode), with the
    /// bias rule of their config; everything else stays frozen.
    /// </summary>
    private void ApplyActiveState()
    {
        foreach (var (_, layer) in TunerLayers())
        {
            layer.ActiveAdapters.Clear();
            layer.ActiveAdapters.AddRange(_active.Where(a => layer.Adapters.Contains(a)));
        }
        foreach (var (_, w) in Wrappers()) w.ActiveAdapter = _active.FirstOrDefault(a => w.Copies.Contains(a));
        foreach (var (_, w) in AdaptedAttentions()) w.ActiveAdapter = _active.FirstOrDefault(a => w.Adapters.Contains(a));
        foreach (var (name, p) in NamedParameters())
        {
            var adapter = AdapterOf(name);
            if (adapter == null) continue;
            p.RequiresGrad = _active.Contains(adapter) && !_configs[adapter].InferenceMode;
        }
        foreach (var adapter in _active)
        {
            if (_configs[adapter] is not TunerConfig { BiasRule: not "none" } lc || lc.InferenceMode) continue;
            foreach (var (name, p) in NamedParameters())
                if (BiasRuleCovers(name, lc)) p.RequiresGrad = true;
        }
    }

    /// <summary>Whether <paramref name="config"/>'s bias rule ("all": every bias; "lora_only" and the like: biases of
    /// adapted layers) covers the parameter at <paramref name="path"/>: those biases train and are saved with the adapter.</summary>
    /// The frozen original of a modules_to_save wrapper is never covered (PEFT's wrapper freezes it after the bias rule ran).
    private static bool BiasRuleCovers(string path, TunerConfig config) =>
        path.EndsWith(".bias", StringComparison.Ordinal) && AdapterOf(path) == null && !path.Contains(".original_module.", StringComparison.Ordinal) &&
        (config.BiasRule == "all" || (config.BiasRule.EndsWith("_only", StringComparison.Ordinal) && path.Contains(".base_layer.", StringComparison.Ordinal)));

    /// <summary>Path segments after which the next segment names the adapter: every method's parameter prefix,
    /// modules_to_save copies and VeRA's shared projections.</summary>
    private static readonly string[] AdapterSegmentPrefixes = ["lora_", "hada_", "lokr_", "ia3_", "vera_lambda_", "oft_", "boft_", "adaption_"];

    private static bool IsAdapterSegment(string segment) =>
        segment is "modules_to_save" or "vera_A" or "vera_B" or "prompt_encoder" || AdapterSegmentPrefixes.Any(p => segment.StartsWith(p, StringComparison.Ordinal));

    /// <summary>The index of the segment holding the adapter name in a dotted path (".lora_A.name.", ".modules_to_save.name."), or −1.</summary>
    private static int AdapterSegmentIndex(string[] segments)
    {
        for (int i = 0; i + 1 < segments.Length; i++)
            if (IsAdapterSegment(segments[i])) return i + 1;
        return -1;
    }

    /// <summary>The adapter a parameter path belongs to, or null.</summary>
    private static string? AdapterOf(string path)
    {
        var segments = path.Split('.');
        int i = AdapterSegmentIndex(segments);
        return i < 0 ? null : segments[i];
    }

    /// <summary>The name that, in a mixed batch, means "no adapter" for a sample.</summary>
    public const string BaseAdapterName = "__base__";

    /// <summary>
    /// Runs the adapted model (same arguments as <see cref="PreTrainedModel.Forward"/>). With
    /// <paramref name="adapterNames"/>, one name per sample, each sample uses its own adapter (a mixed batch; "__base__"
    /// for none), as PEFT's <c>adapter_names</c> argument; merged and DoRA adapters are refused there, as in PEFT.
    /// </summary>
    public ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null, string[]? adapterNames = null, long[]? taskIds = null)
    {
        if (ActivePromptConfig is { } prompt)
        {
            if (adapterNames != null) throw new NotSupportedException("mixed-adapter batches are not supported for prompt-learning adapters (as in PEFT)");
            return PromptForward(prompt, input, attentionMask, labels, cache, taskIds);
        }
        if (adapterNames != null && _configs.Values.Any(c => c is AdaptionPromptConfig))
            throw new NotSupportedException("mixed-adapter batches are not supported for adaption-prompt adapters (as in PEFT)");
        if (adapterNames == null) return WithOrthogonalityLoss(Model.Forward(input, attentionMask, labels, cache));
        foreach (var n in adapterNames.Distinct())
            if (n != BaseAdapterName && !_configs.ContainsKey(n)) throw new KeyNotFoundException($"adapter_names mentions unknown adapter '{n}'");
        var layers = TunerLayers().Select(l => l.Layer).ToList();
        if (layers.OfType<LoraLinear>().Any(l => adapterNames.Any(l.UsesDora)))
            throw new InvalidOperationException("mixed-adapter batches cannot use DoRA adapters (as in PEFT)");
        var wrappers = Wrappers().Select(w => w.Wrapper).ToList();
        foreach (var l in layers) l.SampleAdapters = adapterNames;
        foreach (var w in wrappers) w.SampleAdapters = adapterNames;
        try { return WithOrthogonalityLoss(Model.Forward(input, attentionMask, labels, cache)); }
        finally
        {
            foreach (var l in layers) l.SampleAdapters = null;
            foreach (var w in wrappers) w.SampleAdapters = null;
        }
    }

    /// <summary>(trainable, all) parameter counts as PEFT's get_nb_trainable_parameters: distinct tensors, frozen
    /// originals of modules_to_save included.</summary>
    public (long Trainable, long All) GetNbTrainableParameters()
    {
        long trainable = 0, all = 0;
        foreach (var p in Parameters())
        {
            all += p.NumEl;
            if (p.RequiresGrad) trainable += p.NumEl;
        }
        return (trainable, all);
    }

    /// <summary>The line PEFT's print_trainable_parameters prints.</summary>
    public string TrainableParametersLine()
    {
        var (t, a) = GetNbTrainableParameters();
        var inv = CultureInfo.InvariantCulture;
        return $"trainable params: {t.ToString("N0", inv)} || all params: {a.ToString("N0", inv)} || trainable%: {(100.0 * t / a).ToString("F4", inv)}";
    }

    /// <summary>Prints <see cref="TrainableParametersLine"/>.</summary>
    public void PrintTrainableParameters(TextWriter? output = null) => (output ?? Console.Out).WriteLine(TrainableParametersLine());

    /// <summary>Adds another adapter (not activated, frozen until <see cref="SetAdapter(string[])"/>).</summary>
    public void AddAdapter(string adapterName, PeftConfig config)
    {
        Inject(adapterName, Prepare(config));
        ApplyActiveState();
    }

    /// <summary>Activates <paramref name="adapterNames"/> (their outputs are summed) and makes them trainable.</summary>
    public void SetAdapter(params string[] adapterNames)
    {
        foreach (var n in adapterNames)
            if (!_configs.ContainsKey(n)) throw new KeyNotFoundException($"no adapter named '{n}' (adapters: {string.Join(", ", _configs.Keys)})");
        if (adapterNames.Length > 1 && adapterNames.Any(n => _configs[n] is PromptLearningConfig or AdaptionPromptConfig))
            throw new ArgumentException("prompt-learning and adaption-prompt adapters are active one at a time");
        _active = adapterNames.ToList();
        ApplyActiveState();
    }

    /// <summary>Removes an adapter; refuses an unknown or merged one.</summary>
    public void DeleteAdapter(string adapterName)
    {
        if (!_configs.ContainsKey(adapterName)) throw new KeyNotFoundException($"no adapter named '{adapterName}'");
        foreach (var (_, layer) in TunerLayers())
            if (layer.MergedAdapters.Contains(adapterName)) throw new InvalidOperationException($"adapter '{adapterName}' is merged; unmerge before deleting it");
        foreach (var (_, layer) in TunerLayers()) layer.DeleteAdapter(adapterName);
        foreach (var (_, wrapper) in AdaptedAttentions()) wrapper.RemoveAdapter(adapterName);
        foreach (var (_, w) in Wrappers()) if (w.Copies.Contains(adapterName)) w.Copies.Remove(adapterName);
        BaseModelLevel.RemoveShared(adapterName);
        if (_trainableAdaLora == adapterName) (_trainableAdaLora, _rankAllocator) = (null, null);
        _configs.Remove(adapterName);
        _active.Remove(adapterName);
        if (_active.Count == 0 && _configs.Count > 0) _active.Add(_configs.Keys.First());
        ApplyActiveState();
    }

    /// <summary>Runs the base model without adapters until disposed (merged adapters are unmerged first).</summary>
    /// <example><code>using (peft.DisableAdapter()) { var baseLogits = peft.Forward(ids).Logits; }</code></example>
    public IDisposable DisableAdapter()
    {
        var layers = TunerLayers().Select(l => l.Layer).ToList();
        var wrappers = Wrappers().Select(w => w.Wrapper).ToList();
        var before = layers.Select(l => l.DisableAdapters).ToList();
        bool promptBefore = _promptDisabled;
        var adapted = AdaptedAttentions().Select(a => a.Wrapper).ToList();
        foreach (var l in layers) l.DisableAdapters = true;
        foreach (var w in wrappers) w.Disabled = true;
        foreach (var a in adapted) a.Disabled = true;
        _promptDisabled = true;
        return new Restore(() =>
        {
            for (int i = 0; i < layers.Count; i++) layers[i].DisableAdapters = before[i];
            foreach (var w in wrappers) w.Disabled = false;
            foreach (var a in adapted) a.Disabled = false;
            _promptDisabled = promptBefore;
        });
    }

    private sealed class Restore(Action undo) : IDisposable
    {
        private Action? _undo = undo;

        public void Dispose()
        {
            _undo?.Invoke();
            _undo = null;
        }
    }

    /// <summary>Adds the adapters' ΔW into the base weights (active adapters by default); with
    /// <paramref name="safeMerge"/> a NaN/∞ result is refused and the weights are left as they were.</summary>
    public void MergeAdapter(IEnumerable<string>? adapterNames = null, bool safeMerge = false)
    {
        var names = (adapterNames ?? _active).ToList();
        RefusePromptLearning(names, "merged into the base weights");
        foreach (var (_, layer) in TunerLayers()) layer.Merge(names, safeMerge);
    }

    /// <summary>Subtracts every merged adapter again (last merged first).</summary>
    public void UnmergeAdapter()
    {
        foreach (var (_, layer) in TunerLayers()) layer.Unmerge();
    }

    /// <summary>Merges the adapters and returns the plain model without adapter layers (this PeftModel is then empty).</summary>
    public PreTrainedModel MergeAndUnload(bool safeMerge = false, IEnumerable<string>? adapterNames = null)
    {
        MergeAdapter(adapterNames, safeMerge);
        return Unload();
    }

    /// <summary>Returns the model with every adapter layer replaced by its base layer (no merge); modules_to_save
    /// are replaced by the active adapter's trained copy, as PEFT does. This PeftModel is then empty.</summary>
    public PreTrainedModel Unload()
    {
        RefusePromptLearning(_configs.Keys, "unloaded (their prompts are not part of the model's weights)", includeAdaptionPrompt: false);
        UnwrapAdaptedAttentions();
        foreach (var (name, layer) in TunerLayers().ToList())
        {
            var baseLayer = layer.TakeBaseLayer();
            Model.SetSubmodule(name, baseLayer);
            layer.Dispose();
        }
        foreach (var (name, w) in Wrappers().ToList())
        {
            var keep = w.ActiveAdapter != null ? w.TakeCopy(w.ActiveAdapter) : w.TakeOriginal();
            Model.SetSubmodule(name, keep);
            w.Dispose();
        }
        var model = Model;
        ((TunerModel)Child<Module>("base_model")).Release();
        _configs.Clear();
        _active.Clear();
        return model;
    }

    /// <summary>Prompt-learning adapters (and, unless excluded, LLaMA-Adapter ones, whose unload simply restores the
    /// attention modules) live outside the weights: they cannot be merged.</summary>
    private void RefusePromptLearning(IEnumerable<string> adapters, string what, bool includeAdaptionPrompt = true)
    {
        bool Refused(PeftConfig c) => c is PromptLearningConfig || (includeAdaptionPrompt && c is AdaptionPromptConfig);
        if (adapters.FirstOrDefault(a => _configs.TryGetValue(a, out var c) && Refused(c)) is { } name)
            throw new NotSupportedException($"{_configs[name].PeftType} adapters such as '{name}' cannot be {what}, as in PEFT");
    }

    /// <summary>PEFT's <c>base_model</c> level (LoraModel in Python): holds the transformer as <c>model</c>.</summary>
    private sealed class TunerModel : Module
    {
        public TunerModel(PreTrainedModel model) => RegisterModule("model", model);

        /// <summary>Stores a tensor the method shares across layers as <c>&lt;dict&gt;.&lt;adapter&gt;</c> (a persistent buffer).</summary>
        public void AddShared(string dict, string adapter, Tensor value)
        {
            if (!HasChild(dict)) RegisterModule(dict, new SharedTensorDict());
            Child<SharedTensorDict>(dict).Set(adapter, value);
        }

        /// <summary>The shared tensor dictionaries by name.</summary>
        public IReadOnlyDictionary<string, SharedTensorDict> Shared =>
            NamedChildren().Where(c => c.Module is SharedTensorDict).ToDictionary(c => c.Name, c => (SharedTensorDict)c.Module);

        /// <summary>Drops an adapter's shared tensors.</summary>
        public void RemoveShared(string adapter)
        {
            foreach (var (_, m) in NamedChildren().ToList())
                if (m is SharedTensorDict s && s.Contains(adapter)) s.Remove(adapter);
        }

        /// <summary>Hands the transformer back so disposing the PeftModel no longer disposes it.</summary>
        public void Release() => RemoveModule("model");
    }
}
