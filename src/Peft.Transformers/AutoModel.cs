using Peft.Core;
using Peft.Core.SafeTensors;
using Peft.Nn;
using Peft.Transformers.Bert;
using Peft.Transformers.Gpt2;
using Peft.Transformers.Llama;
using Peft.Transformers.T5;
using Peft.Transformers.Vit;

namespace Peft.Transformers;

/// <summary>What <see cref="AutoModel.FromPretrained(string, ModelTask?, out LoadReport)"/> did besides loading: head weights it had to initialise.</summary>
/// <param name="NewlyInitialized">Parameters absent from the checkpoint (a task head the checkpoint was not trained with).</param>
/// <param name="UnusedCheckpointKeys">Checkpoint tensors the model has no place for (e.g. an LM head when loading a classifier).</param>
public sealed record LoadReport(IReadOnlyList<string> NewlyInitialized, IReadOnlyList<string> UnusedCheckpointKeys);

/// <summary>
/// Builds the right model class from a Hugging Face folder (config.json + model.safetensors or a sharded index), as
/// transformers' AutoModelFor* do: the class comes from <c>architectures</c> (or <c>model_type</c> plus the requested
/// task); weights load zero-copy from the memory-mapped checkpoint when their dtype matches.
/// </summary>
/// <example><code>using var model = AutoModel.FromPretrained("gpt2-folder");                    // GPT2LMHeadModel
/// using var clf = AutoModel.FromPretrained("gpt2-folder", ModelTask.SequenceClassification); // new `score` head</code></example>
public static class AutoModel
{
    /// <summary>Loads a model; <paramref name="task"/> overrides the head named in config.json.</summary>
    public static PreTrainedModel FromPretrained(string folder, ModelTask? task = null) => FromPretrained(folder, task, out _);

    /// <summary>Loads a model and reports which head weights were newly initialised.</summary>
    public static PreTrainedModel FromPretrained(string folder, ModelTask? task, out LoadReport report)
    {
        var config = HfConfig.Load(folder);
        var model = Create(config, task);
        try
        {
            using var checkpoint = SafeTensorsCheckpoint.Open(folder);
            report = LoadWeights(model, new CheckpointStateSource(checkpoint), config.Path);
            model.Eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>A randomly initialised model for a config (tests, benchmarks, training from scratch).</summary>
    public static PreTrainedModel Create(HfConfig config, ModelTask? task = null)
    {
        var (family, configuredTask) = Identify(config);
        var t = task ?? configuredTask;
        // Built under Module.Build: a config that fails part-way, or a model too large for memory, frees what was built.
        var model = Module.Build<PreTrainedModel>(() => (family, t) switch
        {
            ("gpt2", ModelTask.CausalLM) => new Gpt2LMHeadModel(Gpt2Config.From(config)),
            ("gpt2", ModelTask.SequenceClassification) => new Gpt2ForSequenceClassification(Gpt2Config.From(config)),
            ("gpt2", ModelTask.TokenClassification) => new Gpt2ForTokenClassification(Gpt2Config.From(config)),
            ("gpt2", ModelTask.FeatureExtraction) => FeatureExtractionModel.Gpt2(Gpt2Config.From(config)),
            ("llama", ModelTask.FeatureExtraction) => FeatureExtractionModel.Llama(LlamaConfig.From(config)),
            ("bert", ModelTask.FeatureExtraction) => FeatureExtractionModel.Bert(BertConfig.From(config)),
            ("llama", ModelTask.CausalLM) => new LlamaForCausalLM(LlamaConfig.From(config)),
            ("llama", ModelTask.SequenceClassification) => new LlamaForSequenceClassification(LlamaConfig.From(config)),
            ("bert", ModelTask.SequenceClassification) => new BertForSequenceClassification(BertConfig.From(config)),
            ("bert", ModelTask.TokenClassification) => new BertForTokenClassification(BertConfig.From(config)),
            ("bert", ModelTask.MaskedLM) => new BertForMaskedLM(BertConfig.From(config)),
            ("vit", ModelTask.ImageClassification) => new VitForImageClassification(VitConfig.From(config)),
            ("t5", ModelTask.Seq2SeqLM) => new T5ForConditionalGeneration(T5Config.From(config)),
            _ => throw new ConfigException(config.Path, $"no {t} head for model type '{config.ModelType}' in this build"),
        });
        model.SourceConfig = config;
        return model;
    }

    private static (string Family, ModelTask Task) Identify(HfConfig config)
    {
        var modelType = config.ModelType;
        var arch = config.Architecture ?? "";
        string family = modelType switch
        {
            "gpt2" => "gpt2",
            "llama" or "mistral" or "qwen2" => "llama",
            "bert" or "roberta" or "xlm-roberta" => "bert",
            "vit" => "vit",
            "t5" or "mt5" => "t5",
            null => throw new ConfigException(config.Path, "config.json has no 'model_type'"),
            _ => throw new ConfigException(config.Path, $"model_type '{modelType}' is not supported yet (supported: gpt2, llama, mistral, qwen2, bert, roberta, xlm-roberta, vit, t5, mt5)"),
        };
        var task = arch.EndsWith("ForSequenceClassification", StringComparison.Ordinal) ? ModelTask.SequenceClassification
            : arch.EndsWith("ForTokenClassification", StringComparison.Ordinal) ? ModelTask.TokenClassification
            : arch.EndsWith("ForMaskedLM", StringComparison.Ordinal) || arch.EndsWith("ForPreTraining", StringComparison.Ordinal) ? ModelTask.MaskedLM
            : family == "vit" ? ModelTask.ImageClassification
            : family == "t5" ? ModelTask.Seq2SeqLM
            : family == "bert" ? ModelTask.MaskedLM // a bare encoder checkpoint: the pre-training head is the natural default
            : ModelTask.CausalLM; // *LMHeadModel, *ForCausalLM, or a bare decoder trunk
        return (family, task);
    }

    /// <summary>
    /// Loads weights allowing what transformers allows: checkpoints of the bare trunk (keys without the
    /// "transformer."/"model." prefix), tied output heads absent from the file, and task heads the checkpoint lacks
    /// (left randomly initialised and reported). Anything else missing, or any shape mismatch, is an error.
    /// </summary>
    public static LoadReport LoadWeights(PreTrainedModel model, IStateSource source, string origin)
    {
        var prefix = model.BaseModelPrefix + ".";
        var modelKeys = model.StateDict().Keys.ToHashSet();
        static string Legacy(string k) => k.EndsWith(".gamma", StringComparison.Ordinal) ? k[..^6] + ".weight"
            : k.EndsWith(".beta", StringComparison.Ordinal) ? k[..^5] + ".bias" : k;
        bool bareTrunk = prefix != "." && !source.Keys.Any(k => k.StartsWith(prefix, StringComparison.Ordinal)) && source.Keys.Any(k => modelKeys.Contains(prefix + Legacy(k)));
        var mapped = new RenamedStateSource(source, k => bareTrunk && !modelKeys.Contains(Legacy(k)) ? prefix + Legacy(k) : Legacy(k));

        var result = StateDictLoader.Load(model, mapped, strict: false, assign: true, model.IgnoredCheckpointKeys);
        model.TieWeights();
        var trunkMissing = result.MissingKeys.Where(k => !model.MayBeNewlyInitialized(k)).ToList();
        if (trunkMissing.Count > 0)
            throw new StateDictException($"{origin}: the checkpoint lacks {trunkMissing.Count} weight(s) of the model trunk: {string.Join(", ", trunkMissing.Take(8))}",
                trunkMissing, result.UnexpectedKeys, []);
        return new LoadReport(result.MissingKeys, result.UnexpectedKeys);
    }

    private sealed class RenamedStateSource(IStateSource inner, Func<string, string> rename) : IStateSource
    {
        private readonly Dictionary<string, string> _toInner = inner.Keys.ToDictionary(rename, k => k);

        public IReadOnlyCollection<string> Keys => _toInner.Keys;

        public int[] ShapeOf(string key) => inner.ShapeOf(_toInner[key]);

        public Tensor Load(string key) => inner.Load(_toInner[key]);
    }
}
