using System.Text.Json;
using System.Text.Json.Nodes;
using Peft.Core;
using Peft.Core.SafeTensors;
using Peft.Nn;

namespace Peft.Transformers;

/// <summary>
/// A model with a task head, as transformers' *For* classes: one <see cref="Forward"/> for every task, returning
/// logits and, when labels are given, the loss transformers would compute.
/// </summary>
public abstract class PreTrainedModel : Module
{
    /// <summary>transformers' <c>model_type</c> ("gpt2", "llama", ...).</summary>
    public abstract string ModelType { get; }

    /// <summary>The head's task.</summary>
    public abstract ModelTask Task { get; }

    /// <summary>Name of the trunk inside the head model ("transformer" for GPT-2, "model" for LLaMA): checkpoints
    /// saved from the bare trunk lack it, and loading adds it.</summary>
    public abstract string BaseModelPrefix { get; }

    /// <summary>Decoder layers (KV-cache length).</summary>
    public abstract int NumLayers { get; }

    /// <summary>Checkpoint key suffixes that are not weights of this implementation (e.g. GPT-2's causal-mask buffers).</summary>
    public virtual IEnumerable<string> IgnoredCheckpointKeys => [];

    /// <summary>Whether a parameter may be absent from a checkpoint and keep its random init (task heads; BERT's
    /// pooler), as transformers allows with a "newly initialized" warning. Other missing weights are errors.</summary>
    public virtual bool MayBeNewlyInitialized(string key) => !key.StartsWith(BaseModelPrefix + ".", StringComparison.Ordinal);

    /// <summary>
    /// transformers' <c>gradient_checkpointing_enable()</c>: in training mode every layer of every layer stack is
    /// recomputed in backward instead of keeping its activations (about one more forward pass of compute for activation
    /// memory of one layer input per layer). Passes with a key/value cache (generation, prefix tuning) are not
    /// checkpointed, as transformers turns the cache off. Returns how many layer stacks it switched.
    /// </summary>
    public int GradientCheckpointingEnable(bool enable = true)
    {
        int stacks = 0;
        foreach (var (_, m) in NamedModules())
            if (m is IGradientCheckpointing g) { g.GradientCheckpointing = enable; stacks++; }
        return stacks;
    }

    /// <summary>Whether <see cref="GradientCheckpointingEnable"/> is on.</summary>
    public bool IsGradientCheckpointing => NamedModules().Any(m => m.Module is IGradientCheckpointing { GradientCheckpointing: true });

    /// <summary>Re-establishes shared weights (output head = token embedding) after loading.</summary>
    public virtual void TieWeights() { }

    /// <summary>The config.json this model was built from (written back by <see cref="SavePretrained"/>).</summary>
    public HfConfig? SourceConfig { get; internal set; }

    /// <summary>transformers' class name for this head ("GPT2LMHeadModel", ...).</summary>
    public abstract string ArchitectureName { get; }

    /// <summary>
    /// Writes a Hugging Face folder: config.json (with this head's <c>architectures</c>) and model.safetensors. A
    /// tensor shared by several paths (a tied output head) is written once, under its first path, as transformers
    /// does. Both files are written atomically.
    /// </summary>
    public void SavePretrained(string folder)
    {
        Directory.CreateDirectory(folder);
        var json = SourceConfig?.Json.DeepClone().AsObject() ?? new JsonObject { ["model_type"] = ModelType };
        json["architectures"] = new JsonArray(ArchitectureName);
        AtomicFile.WriteAllText(Path.Combine(folder, "config.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        var tensors = StateDict().Where(kv => seen.Add(kv.Value)).ToDictionary(kv => kv.Key, kv => kv.Value);
        SafeTensorsWriter.Save(Path.Combine(folder, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>Runs the model.</summary>
    /// <param name="input">I64 token ids [B, T] (pixel values [B, C, H, W] for vision models).</param>
    /// <param name="attentionMask">[B, T_past + T], 1 = real token, 0 = padding (transformers' convention).</param>
    /// <param name="labels">Targets for the loss: token ids (causal LM; −100 ignored), class ids [B] or per-token [B, T].</param>
    /// <param name="cache">Past keys/values (decoder models), extended in place.</param>
    public abstract ModelOutput Forward(Tensor input, Tensor? attentionMask = null, Tensor? labels = null, KvCache? cache = null);

    /// <summary>The input token embedding (transformers' get_input_embeddings), for models whose Forward also takes
    /// inputs_embeds (a floating-point input); null otherwise.</summary>
    public virtual Embedding? InputEmbeddings => null;

    /// <summary>What prompt learning needs to know (PEFT's _prepare_prompt_learning_config): the embedding width, the
    /// decoder layers, and the heads and head size of the keys/values a prefix must provide; null when the model takes
    /// no past key/values.</summary>
    public virtual PromptDimensions? PromptDimensions => null;
}

/// <summary>Sizes prompt-learning methods read from a model: token_dim, num_layers, and the key/value heads and head size
/// of its attention (KvHeads × HeadDim is PEFT's token_dim for prefix tuning with grouped-query attention), and whether
/// its attention takes past keys/values (prefix tuning needs them).</summary>
public sealed record PromptDimensions(int TokenDim, int Layers, int AttentionHeads, int KvHeads, int HeadDim, bool TakesPastKeyValues = true);
