using Peft.TestSupport;
using Peft.Core.SafeTensors;
using Peft.Transformers;

namespace Peft.Tests;

/// <summary>Prompt tuning, P-tuning, prefix tuning and multitask prompt tuning on the decoder models.</summary>
[TestFixture]
public class PromptLearningTests
{
    private static Tensor Ids() => Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6 }, [2, 5]);

    private static float[] Logits(Func<ModelOutput> run) => TrainingProbe.Logits(run);

    private static IEnumerable<TestCaseData> Models()
    {
        yield return new TestCaseData(Cases.Gpt2).SetArgDisplayNames("gpt2");
        yield return new TestCaseData(Cases.Llama).SetArgDisplayNames("llama_gqa");
    }

    [TestCaseSource(nameof(Models))]
    public void InputEmbeddingsAndAPrefixCacheReproduceTheModelOnTokens(string json)
    {
        using var scope = Tensor.NewScope();
        using var model = Cases.Create(json);
        var ids = Ids();
        using var embeds = model.InputEmbeddings!.Forward(ids);
        Assert.That(Logits(() => model.Forward(embeds)), Is.EqualTo(Logits(() => model.Forward(ids))).Within(1e-6), "inputs_embeds path");
        // Keys/values of the first three tokens, used as a prefix, give the same last-token logits as the full sequence.
        using var cache = new KvCache(model.NumLayers);
        using (Autograd.NoGrad()) model.Forward(ids.Narrow(1, 0, 3), cache: cache);
        using var prefixed = new KvCache(model.NumLayers);
        for (int l = 0; l < model.NumLayers; l++) prefixed.SetPrefix(l, cache.Cached(l)!.Value.K, cache.Cached(l)!.Value.V);
        var tail = Logits(() => model.Forward(ids.Narrow(1, 3, 2), cache: prefixed));
        var full = Logits(() => model.Forward(ids));
        int vocab = full.Length / 10;
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 2; t++)
                Assert.That(tail.Skip((b * 2 + t) * vocab).Take(vocab), Is.EqualTo(full.Skip((b * 5 + 3 + t) * vocab).Take(vocab)).Within(1e-5));
    }

    private static IEnumerable<TestCaseData> Methods()
    {
        foreach (var (name, json) in new[] { ("gpt2", Cases.Gpt2), ("llama", Cases.Llama) })
        {
            yield return new TestCaseData(json, (Func<PromptLearningConfig>)(() => new PromptTuningConfig { NumVirtualTokens = 4, TaskType = "CAUSAL_LM" })).SetArgDisplayNames($"prompt_{name}");
            yield return new TestCaseData(json, (Func<PromptLearningConfig>)(() => new PromptEncoderConfig { NumVirtualTokens = 3, EncoderHiddenSize = 12, TaskType = "CAUSAL_LM" })).SetArgDisplayNames($"ptuning_{name}");
            yield return new TestCaseData(json, (Func<PromptLearningConfig>)(() => new PromptEncoderConfig { NumVirtualTokens = 3, EncoderHiddenSize = 6, EncoderReparameterizationType = "LSTM", TaskType = "CAUSAL_LM" })).SetArgDisplayNames($"ptuning_lstm_{name}");
            yield return new TestCaseData(json, (Func<PromptLearningConfig>)(() => new PrefixTuningConfig { NumVirtualTokens = 3, TaskType = "CAUSAL_LM" })).SetArgDisplayNames($"prefix_{name}");
            yield return new TestCaseData(json, (Func<PromptLearningConfig>)(() => new PrefixTuningConfig { NumVirtualTokens = 2, PrefixProjection = true, EncoderHiddenSize = 10, TaskType = "CAUSAL_LM" })).SetArgDisplayNames($"prefix_projection_{name}");
            yield return new TestCaseData(json, (Func<PromptLearningConfig>)(() => new MultitaskPromptTuningConfig { NumVirtualTokens = 3, NumTasks = 2, NumRanks = 2, TaskType = "CAUSAL_LM" })).SetArgDisplayNames($"mpt_{name}");
        }
    }

    private static readonly long[] Tasks = [0, 1];

    [TestCaseSource(nameof(Methods))]
    public void TrainsOnlyThePromptSavesPeftsKeysAndReloadsIdentically(string json, Func<PromptLearningConfig> make)
    {
        var dir = Directory.CreateTempSubdirectory("peft-prompt-").FullName;
        try
        {
            using var scope = Tensor.NewScope();
            var ids = Ids();
            float[] baseLogits = Logits(() => Cases.Create(json).Forward(ids));
            float[] trained;
            PromptLearningConfig config;
            using (var peft = PeftModel.Create(Cases.Create(json), make()))
            {
                config = (PromptLearningConfig)peft.PeftConfigs["default"];   // with the sizes filled from the model
                peft.PrintTrainableParameters(TextWriter.Null);
                var (first, last) = TrainingProbe.Run(peft, 6, () => peft.Forward(ids, labels: ids, taskIds: Tasks).Loss!, TrainingProbe.Sgd(peft, 0.5),
                    () => TrainingProbe.OnlyTheseHaveGradients(peft, name => name.StartsWith("prompt_encoder.default.")));
                Assert.That(last, Is.LessThan(first), "training the prompt lowers the loss");
                peft.Eval();
                trained = Logits(() => peft.Forward(ids, taskIds: Tasks));
                using (peft.DisableAdapter()) Assert.That(Logits(() => peft.Forward(ids)), Is.EqualTo(baseLogits), "disabled: the base model");
                Assert.Throws<NotSupportedException>(() => peft.MergeAdapter());
                peft.SavePretrained(dir);
            }
            using (var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            {
                var expected = config is MultitaskPromptTuningConfig ? new[] { "prefix_task_cols", "prefix_task_rows", "prompt_embeddings" } : ["prompt_embeddings"];
                Assert.That(st.Tensors.Select(t => t.Name).Order(), Is.EqualTo(expected));
                int width = config is PrefixTuningConfig ? 2 * config.NumLayers!.Value * config.TokenDim!.Value : config.TokenDim!.Value;
                Assert.That(st.Info("prompt_embeddings").Shape, Is.EqualTo(new[] { config.NumVirtualTokens, width }));
            }
            var saved = PeftConfig.Load(dir);
            Assert.That(saved.GetType(), Is.EqualTo(config.GetType()));
            using (var loaded = PeftModel.FromPretrained(Cases.Create(json), dir))
            {
                Assert.That(Logits(() => loaded.Forward(ids, taskIds: Tasks)), Is.EqualTo(trained).Within(1e-5), "the saved encoder output reproduces the trained prompt");
                Assert.That(loaded.GetNbTrainableParameters().Trainable, Is.EqualTo(0));
            }
            Assert.Throws<ArgumentException>(() => PeftModel.FromPretrained(Cases.Create(json), dir, isTrainable: true));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void PromptTuningPrependsVirtualTokensWithIgnoredLabels()
    {
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new PromptTuningConfig { NumVirtualTokens = 4, TaskType = "CAUSAL_LM" });
        var ids = Ids();
        var mask = Tensor.Ones([2, 5], DType.I64);
        using var _ = Autograd.NoGrad();
        var output = peft.Forward(ids, mask, labels: ids);
        Assert.That(output.Logits.Shape, Is.EqualTo(new[] { 2, 9, 50 }), "logits include the virtual positions, as PEFT returns them");
        var prompt = peft.GetSubmodule("prompt_encoder.default.embedding").Parameter("weight");
        var embeds = Tensor.Cat([prompt.Unsqueeze(0).Expand(2, -1, -1).Contiguous(), peft.Model.InputEmbeddings!.Forward(ids)], 1);
        var labels = Tensor.Cat([Tensor.Full([2, 4], -100, DType.I64), ids], 1);
        var manual = peft.Model.Forward(embeds, Tensor.Ones([2, 9], DType.I64), labels);
        Assert.That(output.Loss!.Item(), Is.EqualTo(manual.Loss!.Item()).Within(1e-6));
    }

    [Test]
    public void TextInitCopiesTheInitTextsWordEmbeddingsRepeatedToLength()
    {
        var dir = Directory.CreateTempSubdirectory("peft-prompt-text-").FullName;
        try
        {
            using var scope = Tensor.NewScope();
            CliHarness.SaveTinyGpt2(dir);
            using var peft = PeftModel.Create(AutoModel.FromPretrained(dir), new PromptTuningConfig
            {
                NumVirtualTokens = 5, PromptTuningInit = "TEXT", PromptTuningInitText = "Hello world", TaskType = "CAUSAL_LM",
            });
            var tokens = AutoTokenizer.FromPretrained(dir).Encode("Hello world");   // [15496, 995]
            var words = peft.Model.InputEmbeddings!.Weight;
            var prompt = peft.GetSubmodule("prompt_encoder.default.embedding").Parameter("weight");
            for (int i = 0; i < 5; i++)
                Assert.That(prompt.Select(0, i).ToFloatArray(), Is.EqualTo(words.Select(0, tokens[i % tokens.Length]).ToFloatArray()));
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestCase("prompt")]
    [TestCase("prefix")]
    public void GenerationWithTheCacheMatchesGreedyDecodingWithoutIt(string method)
    {
        using var scope = Tensor.NewScope();
        PromptLearningConfig config = method == "prompt" ? new PromptTuningConfig { NumVirtualTokens = 3, TaskType = "CAUSAL_LM" } : new PrefixTuningConfig { NumVirtualTokens = 3, TaskType = "CAUSAL_LM" };
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), config);
        peft.Eval();
        var ids = Ids();
        var generated = peft.Generate(ids, new GenerationOptions { MaxNewTokens = 4 });
        var sequence = ids.ToArray<long>().Chunk(5).Select(r => r.ToList()).ToList();
        for (int step = 0; step < 4; step++)
        {
            using var s = Tensor.NewScope();
            using var _ = Autograd.NoGrad();
            var input = Tensor.FromArray(sequence.SelectMany(r => r).ToArray(), [2, sequence[0].Count]);
            var logits = peft.Forward(input).Logits;
            int t = logits.Size(1), v = logits.Size(2);
            var all = logits.ToFloatArray();
            for (int b = 0; b < 2; b++)
            {
                var row = all.Skip((b * t + t - 1) * v).Take(v).ToList();
                sequence[b].Add(row.IndexOf(row.Max()));
            }
        }
        for (int b = 0; b < 2; b++) Assert.That(generated[b], Is.EqualTo(sequence[b].Skip(5).Select(x => (int)x).ToArray()));
    }

    [Test]
    public void MultitaskPromptsDependOnTheTaskAndSequenceClassificationSavesTheHeadUnderBaseModel()
    {
        var dir = Directory.CreateTempSubdirectory("peft-prompt-cls-").FullName;
        try
        {
            using var scope = Tensor.NewScope();
            using (var mpt = PeftModel.Create(Cases.Create(Cases.Gpt2), new MultitaskPromptTuningConfig { NumVirtualTokens = 2, NumTasks = 3, TaskType = "CAUSAL_LM" }))
            {
                Assert.That(Logits(() => mpt.Forward(Ids(), taskIds: [0, 0])), Is.Not.EqualTo(Logits(() => mpt.Forward(Ids(), taskIds: [2, 2]))));
                Assert.Throws<ArgumentException>(() => mpt.Forward(Ids()));
            }
            using (var cls = PeftModel.Create(Cases.Create(Cases.Gpt2, ModelTask.SequenceClassification), new PromptTuningConfig { NumVirtualTokens = 2, TaskType = "SEQ_CLS" }))
            {
                using (var s = Tensor.NewScope())
                {
                    var loss = cls.Forward(Ids(), labels: Tensor.FromArray(new long[] { 1, 2 })).Loss!;
                    loss.Backward();
                }
                Assert.That(cls.NamedParameters().Where(p => p.Parameter.Grad != null).Select(p => p.Name),
                    Is.EquivalentTo(new[] { "prompt_encoder.default.embedding.weight", "base_model.model.score.modules_to_save.default.weight" }));
                cls.SavePretrained(dir);
            }
            using var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
            Assert.That(st.Tensors.Select(t => t.Name).Order(), Is.EqualTo(new[] { "base_model.score.weight", "prompt_embeddings" }), "PEFT wraps no tuner model around a prompt-learning base");
        }
        finally { Directory.Delete(dir, true); }
    }
}

/// <summary>Prompt tuning and P-tuning on a T5-shaped encoder-decoder: prompts before the encoder input, as PEFT.</summary>
[TestFixture]
public class Seq2SeqPromptLearningTests
{
    private const string T5 = TinyConfigs.T5;

    private static readonly Tensor Input = Tensor.FromArray(new long[] { 5, 9, 4, 1, 7, 3, 12, 1 }, [2, 4]).KeepAlive();
    private static readonly Tensor Target = Tensor.FromArray(new long[] { 9, 5, 1, 3, 7, 1 }, [2, 3]).KeepAlive();

    [TestCase("prompt")]
    [TestCase("ptuning")]
    public void TrainsSavesAndGeneratesWithPromptsBeforeTheEncoderInput(string method)
    {
        var dir = Directory.CreateTempSubdirectory("peft-t5-prompt-").FullName;
        try
        {
            using var scope = Tensor.NewScope();
            PromptLearningConfig make() => method == "prompt"
                ? new PromptTuningConfig { NumVirtualTokens = 3, TaskType = "SEQ_2_SEQ_LM" }
                : new PromptEncoderConfig { NumVirtualTokens = 3, EncoderHiddenSize = 8, TaskType = "SEQ_2_SEQ_LM" };
            float[] trained;
            int[][] generated;
            using (var peft = PeftModel.Create(TinyConfigs.Create(T5), make()))
            {
                var config = (PromptLearningConfig)peft.PeftConfigs["default"];
                Assert.That(config.NumTransformerSubmodules, Is.EqualTo(2), "encoder + decoder, as PEFT fills it for seq2seq");
                var (first, last) = TrainingProbe.Run(peft, 6, () => peft.Forward(Input, labels: Target).Loss!, TrainingProbe.Sgd(peft, 0.5),
                    () => TrainingProbe.OnlyTheseHaveGradients(peft, name => name.StartsWith("prompt_encoder.default.")));
                Assert.That(last, Is.LessThan(first));
                peft.Eval();
                trained = TrainingProbe.Logits(() => peft.Forward(Input, labels: Target));
                Assert.That(trained, Has.Length.EqualTo(2 * 3 * 24), "decoder logits: the prompts sit in the encoder only");
                generated = peft.Generate(Input, new GenerationOptions { MaxNewTokens = 3, EosTokenIds = [1] });
                peft.SavePretrained(dir);
            }
            using (var st = Peft.Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
                Assert.That(st.Info("prompt_embeddings").Shape, Is.EqualTo(new[] { 6, 16 }), "2 × num_virtual_tokens rows, as PEFT saves for seq2seq");
            using var loaded = PeftModel.FromPretrained(TinyConfigs.Create(T5), dir);
            Assert.That(TrainingProbe.Logits(() => loaded.Forward(Input, labels: Target)), Is.EqualTo(trained).Within(1e-5));
            Assert.That(loaded.Generate(Input, new GenerationOptions { MaxNewTokens = 3, EosTokenIds = [1] }), Is.EqualTo(generated));
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void PrefixTuningOnT5TrainsTheDecoderPrefixSavesAndGenerates(bool projection)
    {
        var dir = Directory.CreateTempSubdirectory("peft-t5-prefix-").FullName;
        try
        {
            using var scope = Tensor.NewScope();
            float[] baseLogits = TrainingProbe.Logits(() => TinyConfigs.Create(T5).Forward(Input, labels: Target));
            float[] trained;
            int[][] generated;
            using (var peft = PeftModel.Create(TinyConfigs.Create(T5), new PrefixTuningConfig { NumVirtualTokens = 2, PrefixProjection = projection, EncoderHiddenSize = 8, TaskType = "SEQ_2_SEQ_LM" }))
            {
                var (first, last) = TrainingProbe.Run(peft, 6, () => peft.Forward(Input, labels: Target).Loss!, TrainingProbe.Sgd(peft, 0.5),
                    () => TrainingProbe.OnlyTheseHaveGradients(peft, name => name.StartsWith("prompt_encoder.default.")));
                Assert.That(last, Is.LessThan(first));
                peft.Eval();
                trained = TrainingProbe.Logits(() => peft.Forward(Input, labels: Target));
                Assert.That(trained, Has.Length.EqualTo(baseLogits.Length), "decoder logits only: the prefix adds no positions");
                Assert.That(trained, Is.Not.EqualTo(baseLogits));
                using (peft.DisableAdapter()) Assert.That(TrainingProbe.Logits(() => peft.Forward(Input, labels: Target)), Is.EqualTo(baseLogits));
                generated = peft.Generate(Input, new GenerationOptions { MaxNewTokens = 3, EosTokenIds = [1] });
                peft.SavePretrained(dir);
            }
            using (var st = Peft.Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
                Assert.That(st.Info("prompt_embeddings").Shape, Is.EqualTo(new[] { 2, 2 * 2 * 16 }), "num_virtual_tokens × 2·layers·d_model, as PEFT saves");
            using var loaded = PeftModel.FromPretrained(TinyConfigs.Create(T5), dir);
            Assert.That(TrainingProbe.Logits(() => loaded.Forward(Input, labels: Target)), Is.EqualTo(trained).Within(1e-5));
            Assert.That(loaded.Generate(Input, new GenerationOptions { MaxNewTokens = 3, EosTokenIds = [1] }), Is.EqualTo(generated));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void GreedyGenerationWithAPrefixAgreesWithTheTeacherForcedForward()
    {
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(TinyConfigs.Create(T5), new PrefixTuningConfig { NumVirtualTokens = 3, TaskType = "SEQ_2_SEQ_LM" });
        peft.Eval();
        var generated = peft.Generate(Input, new GenerationOptions { MaxNewTokens = 3 });
        // Feed the generated tokens back as labels: each position's argmax must be the next generated token.
        int rows = generated.Length, steps = generated.Min(g => g.Length);
        var labels = Tensor.FromArray(generated.SelectMany(g => g.Take(steps).Select(t => (long)t)).ToArray(), [rows, steps]);
        var logits = peft.Forward(Input, labels: labels).Logits;
        int vocab = logits.Size(2);
        var values = logits.ToFloatArray();
        for (int r = 0; r < rows; r++)
            for (int t = 0; t < steps; t++)
            {
                var row = values.AsSpan((r * steps + t) * vocab, vocab).ToArray();
                Assert.That(Array.IndexOf(row, row.Max()), Is.EqualTo(generated[r][t]), $"row {r}, step {t}");
            }
    }
}

/// <summary>Multitask prompt tuning's source-task inits (PEFT's AVERAGE_SOURCE_TASKS, EXACT_SOURCE_TASK,
/// ONLY_SOURCE_SHARED) from a source adapter saved in PEFT's format.</summary>
[TestFixture]
public class MultitaskSourceInitTests
{
    private static string SaveSource(string dir, out float[] shared, out float[] cols, out float[] rows)
    {
        using var scope = Tensor.NewScope();
        using var source = PeftModel.Create(Cases.Create(Cases.Gpt2), new MultitaskPromptTuningConfig { NumVirtualTokens = 3, NumTasks = 3, NumRanks = 2, TaskType = "CAUSAL_LM" });
        source.SavePretrained(dir);
        var file = Path.Combine(dir, "adapter_model.safetensors");
        using var st = Peft.Core.SafeTensors.SafeTensorsFile.Open(file);
        shared = st.Load("prompt_embeddings").ToFloatArray();
        cols = st.Load("prefix_task_cols").ToFloatArray();
        rows = st.Load("prefix_task_rows").ToFloatArray();
        return file;
    }

    private static (float[] Shared, float[] Cols, float[] Rows) Target(string init, string? path, int tasks = 1, int task = 0)
    {
        using var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new MultitaskPromptTuningConfig
        {
            NumVirtualTokens = 3, NumTasks = tasks, NumRanks = 2, TaskType = "CAUSAL_LM", PromptTuningInit = init,
            PromptTuningInitStateDictPath = path, PromptTuningInitTask = task,
        });
        var state = peft.StateDict();
        float[] Get(string suffix) => state.Single(kv => kv.Key.EndsWith(suffix)).Value.ToFloatArray();
        return (Get("embedding.weight"), Get("prefix_task_cols"), Get("prefix_task_rows"));
    }

    [Test]
    public void TheThreeSourceInitsCopyWhatPeftCopies()
    {
        var dir = Directory.CreateTempSubdirectory("peft-mpt-source-").FullName;
        try
        {
            var file = SaveSource(dir, out var shared, out var cols, out var rows);
            int colsPerTask = cols.Length / 3, rowsPerTask = rows.Length / 3;
            float[] Mean(float[] all, int per) => Enumerable.Range(0, per).Select(i => (all[i] + all[per + i] + all[2 * per + i]) / 3).ToArray();

            var average = Target("AVERAGE_SOURCE_TASKS", file);
            Assert.That(average.Shared, Is.EqualTo(shared));
            Assert.That(average.Cols, Is.EqualTo(Mean(cols, colsPerTask)).Within(1e-6));
            Assert.That(average.Rows, Is.EqualTo(Mean(rows, rowsPerTask)).Within(1e-6));

            var exact = Target("EXACT_SOURCE_TASK", file, task: 2);
            Assert.That(exact.Cols, Is.EqualTo(cols[(2 * colsPerTask)..]));
            Assert.That(exact.Rows, Is.EqualTo(rows[(2 * rowsPerTask)..]));

            var sharedOnly = Target("ONLY_SOURCE_SHARED", file, tasks: 4);
            Assert.That(sharedOnly.Shared, Is.EqualTo(shared));
            Assert.That(sharedOnly.Cols, Has.Length.EqualTo(4 * colsPerTask), "task matrices keep their own shape and random init");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void BadSourcesAreNamed()
    {
        var dir = Directory.CreateTempSubdirectory("peft-mpt-source-").FullName;
        try
        {
            var file = SaveSource(dir, out _, out _, out _);
            Assert.That(Assert.Throws<InvalidOperationException>(() => Target("AVERAGE_SOURCE_TASKS", null))!.Message, Does.Contain("prompt_tuning_init_state_dict_path"));
            Assert.That(Assert.Throws<NotSupportedException>(() => Target("AVERAGE_SOURCE_TASKS", Path.Combine(dir, "adapter_model.bin")))!.Message, Does.Contain("safetensors"));
            Assert.That(Assert.Throws<InvalidOperationException>(() => Target("AVERAGE_SOURCE_TASKS", file, tasks: 2))!.Message, Does.Contain("prefix_task_cols").And.Contain("[2, 3, 2]"));
            Assert.Throws<ArgumentOutOfRangeException>(() => Target("EXACT_SOURCE_TASK", file, task: 3));
        }
        finally { Directory.Delete(dir, true); }
    }
}
