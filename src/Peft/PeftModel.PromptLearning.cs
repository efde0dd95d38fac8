using Peft.Core;
using Peft.Nn;
using Peft.Transformers;

namespace Peft;

// The soft-prompt methods (PEFT's prompt-learning path of PeftModelForCausalLM / ForSequenceClassification): a
// prompt encoder per adapter under prompt_encoder.<name>, virtual tokens prepended to the input embeddings (labels −100
// and attention mask 1 over them) or, for prefix tuning, per-layer past keys/values in the KV cache.
public sealed partial class PeftModel
{
    private bool _promptDisabled;

    private ModuleDict<PromptEncoder> PromptEncoders
    {
        get
        {
            if (!HasChild("prompt_encoder")) RegisterModule("prompt_encoder", new ModuleDict<PromptEncoder>());
            return Child<ModuleDict<PromptEncoder>>("prompt_encoder");
        }
    }

    /// <summary>The active prompt-learning adapter's config, or null (none, or disabled).</summary>
    private PromptLearningConfig? ActivePromptConfig =>
        !_promptDisabled && _active.Count > 0 && _configs.TryGetValue(_active[0], out var c) ? c as PromptLearningConfig : null;

    private void InjectPrompt(string adapter, PromptLearningConfig config)
    {
        config.FillFrom(Model);
        config.Validate();
        WrapModulesToSave(adapter, config.ModulesToSave ?? [], trainable: !config.InferenceMode);
        PromptEncoders.Set(adapter, config.CreateEncoder(Model));
        _configs[adapter] = config;
    }

    /// <summary>The model run with the active prompt-learning adapter (PEFT's get_prompt + the task's forward).</summary>
    private ModelOutput PromptForward(PromptLearningConfig config, Tensor input, Tensor? attentionMask, Tensor? labels, KvCache? cache, long[]? taskIds)
    {
        if (cache is { Length: > 0 }) return Model.Forward(input, attentionMask, labels, cache); // generation: the prompt is cached
        var encoder = PromptEncoders[_active[0]];
        bool seq2seq = Model.Task == ModelTask.Seq2SeqLM;
        // PEFT prepends the first num_virtual_tokens prompts to the encoder input only (the decoder half of a seq2seq
        // prompt_embeddings is kept in the file but unused by the forward).
        int b = input.Size(0), n = config is PrefixTuningConfig || seq2seq ? config.NumVirtualTokens : config.TotalVirtualTokens;
        if (config is PrefixTuningConfig && Model is Peft.Transformers.T5.T5ForConditionalGeneration t5)
            return Seq2SeqPrefixForward(config, t5, encoder, input, attentionMask, labels);
        using var prefixMask = attentionMask == null ? null : PrefixOnes(b, n, attentionMask);
        if (config is PrefixTuningConfig)
        {
            var own = cache == null ? new KvCache(Model.NumLayers) : null;
            using var prefix = Prefix(config, encoder.Forward(b), b);
            var views = PrefixViews(prefix, config);
            try
            {
                SetPrefix(own ?? cache!, views);
                var output = Model.Forward(input, prefixMask, labels, own ?? cache);
                return own != null ? output with { Cache = null } : output;
            }
            finally
            {
                own?.Dispose();
                foreach (var (k, v) in views) { k.Dispose(); v.Dispose(); }
            }
        }
        using var embeds = PromptedEmbeddings(config, input, n, taskIds);
        using var longLabels = labels != null && Model.Task == ModelTask.CausalLM ? PrefixIgnored(b, n, labels) : null;
        return Model.Forward(embeds, prefixMask, longLabels ?? labels, cache);
    }

    /// <summary>Prefix tuning on T5: the encoder runs on the plain input and mask; the prefix is the decoder's past
    /// self-attention keys/values (queries start at position num_virtual_tokens for the relative position bias).</summary>
    private static ModelOutput Seq2SeqPrefixForward(PromptLearningConfig config, Peft.Transformers.T5.T5ForConditionalGeneration t5, PromptEncoder encoder,
        Tensor input, Tensor? attentionMask, Tensor? labels)
    {
        int b = input.Size(0);
        using var cache = new KvCache(t5.NumLayers);
        using var prefix = Prefix(config, encoder.Forward(b), b);
        var views = Seq2SeqPrefixViews(prefix, config, t5.NumLayers);
        try
        {
            SetPrefix(cache, views);
            using var decoderInputs = labels != null ? t5.ShiftRight(labels) : Tensor.Full([b, 1], t5.Config.DecoderStartTokenId, DType.I64);
            return t5.Forward(input, attentionMask, decoderInputs, labels, cache);
        }
        finally
        {
            foreach (var (k, v) in views) { k.Dispose(); v.Dispose(); }
        }
    }

    /// <summary>
    /// The decoder layers' prefix views as PEFT builds them for encoder-decoders: the 2L rows (k₀, v₀, k₁, v₁, …) are
    /// concatenated with themselves and cut into groups of four per decoder layer — (self k, self v, cross k, cross v) —
    /// whose cross half PEFT then discards. So decoder layer i reads rows 4i and 4i + 1 of the doubled list: the keys and
    /// values of prefix layer (2i mod L), not layer i. Odd prefix layers are trained by nothing; the fixture from peft 0.21
    /// (tests/fixtures/peft-prefix-t5) pins this.
    /// </summary>
    private static List<(Tensor K, Tensor V)> Seq2SeqPrefixViews(Tensor prefix, PromptLearningConfig config, int decoderLayers)
    {
        int layers = config.NumLayers!.Value;
        if (decoderLayers > layers)
            throw new NotSupportedException($"prefix tuning on an encoder-decoder gives {layers} decoder layers a prefix (PEFT's num_layers), but the model has {decoderLayers}");
        return PrefixViews(prefix, Enumerable.Range(0, decoderLayers).Select(i => 2 * i % layers));
    }

    /// <summary>The first <paramref name="n"/> virtual-token embeddings of the active prompt encoder, then the word
    /// embeddings of <paramref name="input"/>: [B, n + T, d].</summary>
    private Tensor PromptedEmbeddings(PromptLearningConfig config, Tensor input, int n, long[]? taskIds)
    {
        var words = Model.InputEmbeddings ?? throw new NotSupportedException($"{Model.ArchitectureName} exposes no input embeddings");
        using var allPrompts = PromptEncoders[_active[0]].Forward(input.Size(0), config is MultitaskPromptTuningConfig ? taskIds : null);
        using var prompts = allPrompts.Narrow(1, 0, n);
        using var embedded = words.Forward(input);
        return Tensor.Cat([prompts, embedded], 1);
    }

    /// <summary>[B, n] ones before the attention mask.</summary>
    private static Tensor PrefixOnes(int b, int n, Tensor mask)
    {
        using var ones = Tensor.Full([b, n], 1, mask.DType, mask.Device);
        return Tensor.Cat([ones, mask], 1);
    }

    /// <summary>−100 labels over the virtual tokens, as PEFT's causal-LM forward.</summary>
    private static Tensor PrefixIgnored(int b, int n, Tensor labels)
    {
        using var ignore = Tensor.Full([b, n], -100, labels.DType, labels.Device);
        return Tensor.Cat([ignore, labels], 1);
    }

    /// <summary>The flat prefix [B, n, 2·L·d] as [2L, B, heads, n, head_dim] (PEFT's view + permute([2, 0, 3, 1, 4]));
    /// takes ownership of <paramref name="flat"/>.</summary>
    private static Tensor Prefix(PromptLearningConfig config, Tensor flat, int b)
    {
        using (flat)
        {
            int n = config.NumVirtualTokens, layers = config.NumLayers!.Value, heads = config.NumAttentionHeads!.Value;
            int hd = config.TokenDim!.Value / heads;
            using var view = flat.Reshape(b, n, 2 * layers, heads, hd);
            using var perm = view.Permute(2, 0, 3, 1, 4);
            return perm.Contiguous();
        }
    }

    /// <summary>Layer l's keys are row 2l of the prefix, its values row 2l + 1 (views: the caller disposes them once
    /// the cache that reads them is done).</summary>
    private static List<(Tensor K, Tensor V)> PrefixViews(Tensor prefix, PromptLearningConfig config) =>
        PrefixViews(prefix, Enumerable.Range(0, config.NumLayers!.Value));

    /// <summary>One (keys, values) view pair per cache layer, cache layer i reading prefix layer <paramref name="sourceLayers"/>[i].</summary>
    private static List<(Tensor K, Tensor V)> PrefixViews(Tensor prefix, IEnumerable<int> sourceLayers) =>
        sourceLayers.Select(l => (prefix.Select(0, 2 * l), prefix.Select(0, 2 * l + 1))).ToList();

    private static void SetPrefix(KvCache cache, List<(Tensor K, Tensor V)> views)
    {
        for (int l = 0; l < views.Count; l++) cache.SetPrefix(l, views[l].K, views[l].V);
    }

    /// <summary>What a prompt-learning adapter saves: PEFT's single <c>prompt_embeddings</c> (the encoder's output for
    /// the virtual tokens; the shared prompt for multitask prompt tuning, with its task matrices) plus modules_to_save,
    /// whose keys sit under <c>base_model.</c> (PEFT wraps no tuner model around the transformer for these methods).
    /// With <paramref name="forSaving"/> false the values are the live tensors a loaded file is copied into.</summary>
    private Dictionary<string, Tensor> PromptState(string adapter, bool forSaving)
    {
        var encoder = PromptEncoders[adapter];
        var result = new Dictionary<string, Tensor>();
        if (encoder is MultitaskPromptEmbedding mpt)
        {
            result["prompt_embeddings"] = forSaving ? Squeezed(mpt.SharedPrompt()) : mpt.Embedding.Weight;
            result["prefix_task_cols"] = mpt.Parameter("prefix_task_cols");
            result["prefix_task_rows"] = mpt.Parameter("prefix_task_rows");
        }
        else result["prompt_embeddings"] = forSaving ? Squeezed(encoder.Output()) : encoder.Embedding.Weight;
        foreach (var (path, tensor) in StateDict())
            if (SavedKey(path, adapter) is { } key && path.Contains(".modules_to_save.", StringComparison.Ordinal))
                result["base_model." + key["base_model.model.".Length..]] = tensor;
        return result;
    }

    private static Tensor Squeezed(Tensor batchOfOne)
    {
        using (batchOfOne) return batchOfOne.Squeeze(0).Contiguous();
    }

    /// <summary>Generates continuations (greedy or sampled) with the active adapter: prompt-learning adapters put their
    /// virtual tokens or prefix in front of the prompt on the first step; layer adapters are part of the model already.</summary>
    public int[][] Generate(Tensor inputIds, GenerationOptions? options = null, long[]? taskIds = null)
    {
        if (ActivePromptConfig is not { } config)
            return Model is Peft.Transformers.T5.T5ForConditionalGeneration t5
                ? Seq2SeqGeneration.Generate(t5, inputIds, options: options ?? new GenerationOptions { EosTokenIds = [t5.Config.EosTokenId] })
                : TextGeneration.Generate(Model, inputIds, options);
        if (Model is Peft.Transformers.T5.T5ForConditionalGeneration withPrefix && config is PrefixTuningConfig)
        {
            using var s2sPrefix = Tensor.NewScope();
            using var noGradPrefix = Autograd.NoGrad();
            int b = inputIds.Size(0);
            using var prefix = Prefix(config, PromptEncoders[_active[0]].Forward(b), b);
            var decoderViews = Seq2SeqPrefixViews(prefix, config, withPrefix.NumLayers);
            return Seq2SeqGeneration.Generate(withPrefix, inputIds, options: options ?? new GenerationOptions { EosTokenIds = [withPrefix.Config.EosTokenId] },
                prepareDecoderCache: cache => SetPrefix(cache, decoderViews));
        }
        if (Model is Peft.Transformers.T5.T5ForConditionalGeneration encoderDecoder)
        {
            // The prompts go in front of the encoder input; the decoder loop is the model's own.
            using var s2s = Tensor.NewScope();
            using var noGrad = Autograd.NoGrad();
            using var embeds = PromptedEmbeddings(config, inputIds, config.NumVirtualTokens, taskIds);
            return Seq2SeqGeneration.Generate(encoderDecoder, embeds, options: options ?? new GenerationOptions { EosTokenIds = [encoderDecoder.Config.EosTokenId] });
        }
        using var scope = Tensor.NewScope();
        using var _ = Autograd.NoGrad();
        // The prefix and its views are made here, outside the per-step scopes, so they last the whole generation.
        var views = config is PrefixTuningConfig ? PrefixViews(Prefix(config, PromptEncoders[_active[0]].Forward(inputIds.Size(0)), inputIds.Size(0)), config) : null;
        return TextGeneration.Generate(Model, inputIds, options, (ids, cache) =>
        {
            if (cache.Length > 0) return Model.Forward(ids, cache: cache).Logits;
            if (views != null)
            {
                SetPrefix(cache, views);
                return Model.Forward(ids, cache: cache).Logits;
            }
            return PromptForward(config, ids, null, null, cache, taskIds).Logits;
        });
    }
}
