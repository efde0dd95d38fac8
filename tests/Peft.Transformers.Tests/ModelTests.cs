using Peft.Core.SafeTensors;
using Peft.Nn;
using Peft.Transformers;
using Peft.Transformers.Gpt2;
using Peft.Transformers.Llama;

namespace Peft.Transformers.Tests;

[TestFixture]
public class ModelTests
{
    public static IEnumerable<string> Architectures() => [TinyModels.Gpt2Json, TinyModels.LlamaJson];

    private static double RelErr(Tensor a, Tensor b)
    {
        var x = a.ToDoubleArray();
        var y = b.ToDoubleArray();
        double num = 0, den = 0;
        for (int i = 0; i < x.Length; i++) { num += (x[i] - y[i]) * (x[i] - y[i]); den += y[i] * y[i]; }
        return Math.Sqrt(num / den);
    }

    [TestCaseSource(nameof(Architectures))]
    public void SavePretrainedThenFromPretrainedGivesIdenticalLogits(string json)
    {
        var dir = TinyModels.TempDir();
        try
        {
            using var scope = Tensor.NewScope();
            using var model = TinyModels.Create(json);
            model.Eval();
            var ids = TinyModels.Ids(new[,] { { 5, 7, 9, 11, 2 }, { 1, 3, 3, 8, 4 } });
            var expected = model.Forward(ids).Logits;
            model.SavePretrained(dir);
            using var loaded = AutoModel.FromPretrained(dir, null, out var report);
            Assert.That(loaded.GetType(), Is.EqualTo(model.GetType()));
            Assert.That(report.NewlyInitialized, Is.Empty);
            Assert.That(loaded.Forward(ids).Logits.ToArray<float>(), Is.EqualTo(expected.ToArray<float>()));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void Gpt2TiesItsOutputHeadAndSavesItOnce()
    {
        var dir = TinyModels.TempDir();
        try
        {
            using var model = (Gpt2LMHeadModel)TinyModels.Create(TinyModels.Gpt2Json);
            Assert.That(model.StateDict()["lm_head.weight"], Is.SameAs(model.StateDict()["transformer.wte.weight"]));
            Assert.That(model.NamedParameters().Select(p => p.Name), Does.Not.Contain("lm_head.weight"));
            model.SavePretrained(dir);
            using var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
            Assert.That(f.Contains("lm_head.weight"), Is.False);
            Assert.That(f.Tensors.Select(t => t.Name), Does.Contain("transformer.h.1.attn.c_attn.weight"));
            using var loaded = (Gpt2LMHeadModel)AutoModel.FromPretrained(dir);
            Assert.That(loaded.StateDict()["lm_head.weight"], Is.SameAs(loaded.StateDict()["transformer.wte.weight"]));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void ACheckpointOfTheBareTrunkLoadsIntoAHeadModel()
    {
        var dir = TinyModels.TempDir();
        try
        {
            using var scope = Tensor.NewScope();
            using var model = TinyModels.Create(TinyModels.Gpt2Json);
            model.Eval();
            var ids = TinyModels.Ids(new[,] { { 4, 5, 6 } });
            var expected = model.Forward(ids).Logits.ToArray<float>();
            // transformers' GPT2Model saves keys without the "transformer." prefix.
            var trunk = model.StateDict().Where(kv => kv.Key.StartsWith("transformer.")).ToDictionary(kv => kv.Key["transformer.".Length..], kv => kv.Value);
            SafeTensorsWriter.Save(Path.Combine(dir, "model.safetensors"), trunk);
            File.WriteAllText(Path.Combine(dir, "config.json"), TinyModels.Gpt2Json.Replace("GPT2LMHeadModel", "GPT2Model"));
            using var loaded = AutoModel.FromPretrained(dir);
            Assert.That(loaded.Forward(ids).Logits.ToArray<float>(), Is.EqualTo(expected));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void LoadingALanguageModelAsAClassifierReportsTheNewHead()
    {
        var dir = TinyModels.TempDir();
        try
        {
            using (var lm = TinyModels.Create(TinyModels.LlamaJson)) lm.SavePretrained(dir);
            using var clf = AutoModel.FromPretrained(dir, ModelTask.SequenceClassification, out var report);
            Assert.That(clf, Is.InstanceOf<LlamaForSequenceClassification>());
            Assert.That(report.NewlyInitialized, Is.EqualTo(new[] { "score.weight" }));
            Assert.That(report.UnusedCheckpointKeys, Is.EqualTo(new[] { "lm_head.weight" }));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MissingTrunkWeightsAndWrongShapesAreErrorsNamingTheKey()
    {
        var dir = TinyModels.TempDir();
        try
        {
            using var model = TinyModels.Create(TinyModels.Gpt2Json);
            model.SavePretrained(dir);
            using var scope = Tensor.NewScope();
            Dictionary<string, Tensor> state;
            using (var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"))) state = f.LoadAll().ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
            state.Remove("transformer.h.1.mlp.c_fc.bias");
            SafeTensorsWriter.Save(Path.Combine(dir, "model.safetensors"), state);
            var ex = Assert.Throws<StateDictException>(() => AutoModel.FromPretrained(dir).Dispose());
            Assert.That(ex!.Message, Does.Contain("transformer.h.1.mlp.c_fc.bias"));

            state["transformer.h.1.mlp.c_fc.bias"] = Tensor.Zeros([7]);
            SafeTensorsWriter.Save(Path.Combine(dir, "model.safetensors"), state);
            var shape = Assert.Throws<StateDictException>(() => AutoModel.FromPretrained(dir).Dispose());
            Assert.That(shape!.Message, Does.Contain("transformer.h.1.mlp.c_fc.bias: model has [64], checkpoint has [7]"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestCaseSource(nameof(Architectures))]
    public void DecodingWithTheKvCacheMatchesTheFullForward(string json)
    {
        using var scope = Tensor.NewScope();
        using var model = TinyModels.Create(json);
        model.Eval();
        var ids = TinyModels.Ids(new[,] { { 3, 9, 4, 12, 7, 1 } });
        var full = model.Forward(ids).Logits;
        using var cache = new KvCache(model.NumLayers);
        var prefix = model.Forward(ids.Narrow(1, 0, 3), cache: cache).Logits;
        Assert.That(RelErr(prefix, full.Narrow(1, 0, 3)), Is.LessThan(1e-5));
        for (int t = 3; t < 6; t++)
        {
            var step = model.Forward(ids.Narrow(1, t, 1), cache: cache).Logits;
            Assert.That(RelErr(step, full.Narrow(1, t, 1)), Is.LessThan(1e-5), $"position {t}");
        }
        Assert.That(cache.Length, Is.EqualTo(6));
    }

    [TestCaseSource(nameof(Architectures))]
    public void RightPaddingDoesNotChangeTheRealTokens(string json)
    {
        using var scope = Tensor.NewScope();
        using var model = TinyModels.Create(json);
        model.Eval();
        var alone = model.Forward(TinyModels.Ids(new[,] { { 6, 2, 8 } })).Logits;
        var batch = TinyModels.Ids(new[,] { { 6, 2, 8, 0, 0 }, { 1, 2, 3, 4, 5 } });
        var mask = TinyModels.Ids(new[,] { { 1, 1, 1, 0, 0 }, { 1, 1, 1, 1, 1 } });
        var padded = model.Forward(batch, mask).Logits;
        Assert.That(RelErr(padded.Narrow(0, 0, 1).Narrow(1, 0, 3), alone), Is.LessThan(1e-5));
    }

    [TestCaseSource(nameof(Architectures))]
    public void SequenceClassificationPoolsTheLastNonPaddingToken(string json)
    {
        using var scope = Tensor.NewScope();
        using var model = TinyModels.Create(json, ModelTask.SequenceClassification);
        model.Eval();
        var ids = TinyModels.Ids(new[,] { { 6, 2, 8, 0, 0 }, { 1, 2, 3, 4, 5 } });
        var mask = TinyModels.Ids(new[,] { { 1, 1, 1, 0, 0 }, { 1, 1, 1, 1, 1 } });
        var output = model.Forward(ids, mask, labels: Tensor.FromArray(new long[] { 2, 0 }));
        Assert.That(output.Logits.Shape, Is.EqualTo(new[] { 2, 3 }));
        var first = model.Forward(TinyModels.Ids(new[,] { { 6, 2, 8 } })).Logits;
        Assert.That(RelErr(output.Logits.Narrow(0, 0, 1), first), Is.LessThan(1e-5));
        Assert.That(output.Loss!.Item(), Is.GreaterThan(0));
    }

    [Test]
    public void TokenClassificationGivesOneRowPerToken()
    {
        using var scope = Tensor.NewScope();
        using var model = TinyModels.Create(TinyModels.Gpt2Json, ModelTask.TokenClassification);
        var output = model.Forward(TinyModels.Ids(new[,] { { 6, 2, 8 } }), labels: TinyModels.Ids(new[,] { { 0, -100, 2 } }));
        Assert.That(output.Logits.Shape, Is.EqualTo(new[] { 1, 3, 3 }));
        Assert.That(double.IsFinite(output.Loss!.Item()));
    }

    [TestCaseSource(nameof(Architectures))]
    public void CausalLmGradientsMatchFiniteDifferencesThroughTheWholeModel(string json)
    {
        // The whole model in F64: sample parameter elements and compare d loss / d p with central differences.
        using var scope = Tensor.NewScope();
        using var model = TinyModels.Create(json);
        model.Eval();
        model.ToDType(DType.F64);
        var ids = TinyModels.Ids(new[,] { { 3, 9, 4, 12, 7 }, { 1, 5, 2, 8, 6 } });
        SampledGradCheck.Run(model, () => model.Forward(ids, labels: ids).Loss!, seed: 7, perParameter: 3);
    }

    [Test]
    public void RotaryEmbeddingMakesScoresDependOnRelativePositionOnly()
    {
        using var scope = Tensor.NewScope();
        var rope = new RotaryEmbedding(8, 10000, null, "test");
        var q = Tensor.Randn([1, 1, 1, 8], 1);
        var k = Tensor.Randn([1, 1, 1, 8], 2);
        double Score(int qPos, int kPos)
        {
            var (cq, sq) = rope.Tables(qPos, 1);
            var (ck, sk) = rope.Tables(kPos, 1);
            return (RotaryEmbedding.Apply(q, cq, sq) * RotaryEmbedding.Apply(k, ck, sk)).Sum().Item();
        }
        Assert.That(Score(7, 3), Is.EqualTo(Score(14, 10)).Within(1e-4));
        Assert.That(Score(7, 3), Is.Not.EqualTo(Score(7, 4)).Within(1e-3));
    }

    [Test]
    public void GroupedQueryAttentionUsesFewerKeyValueHeads()
    {
        using var model = (LlamaForCausalLM)TinyModels.Create(TinyModels.LlamaJson);
        var names = model.StateDict();
        Assert.That(names["model.layers.0.self_attn.q_proj.weight"].Shape, Is.EqualTo(new[] { 16, 16 }));
        Assert.That(names["model.layers.0.self_attn.k_proj.weight"].Shape, Is.EqualTo(new[] { 8, 16 }));
        Assert.That(names.ContainsKey("lm_head.weight"));
    }

    [Test]
    public void Qwen2FoldersGetQkvBiases()
    {
        using var model = TinyModels.Create(TinyModels.LlamaJson.Replace("\"llama\"", "\"qwen2\"").Replace("LlamaForCausalLM", "Qwen2ForCausalLM"));
        var keys = model.StateDict().Keys;
        Assert.That(keys, Does.Contain("model.layers.0.self_attn.q_proj.bias"));
        Assert.That(keys, Does.Not.Contain("model.layers.0.self_attn.o_proj.bias"));
        Assert.That(model.ArchitectureName, Is.EqualTo("Qwen2ForCausalLM"));
    }

    [Test]
    public void ConfigProblemsNameTheFileAndField()
    {
        var ex = Assert.Throws<ConfigException>(() => TinyModels.Create(TinyModels.Gpt2Json.Replace("\"n_embd\": 16", "\"n_embd\": \"wide\"")));
        Assert.That(ex!.Message, Does.Contain("n_embd"));
        Assert.That(Assert.Throws<ConfigException>(() => TinyModels.Create("{\"model_type\": \"mamba\"}"))!.Message, Does.Contain("mamba"));
        Assert.That(Assert.Throws<ConfigException>(() => TinyModels.Create(TinyModels.Gpt2Json.Replace("\"n_head\": 4", "\"n_head\": 5")))!.Message, Does.Contain("divisible"));
        var rope = TinyModels.LlamaJson.Replace("\"rope_theta\": 10000.0", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2.0}");
        Assert.That(Assert.Throws<ConfigException>(() => TinyModels.Create(rope))!.Message, Does.Contain("yarn"));
        Assert.Throws<FileNotFoundException>(() => AutoModel.FromPretrained(Path.Combine(Path.GetTempPath(), "no-such-model-folder")));
    }

    [Test]
    public void Llama3RopeScalingLeavesHighFrequenciesAndDividesLowOnes()
    {
        var scaling = System.Text.Json.Nodes.JsonNode.Parse("""{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}""")!.AsObject();
        var plain = new RotaryEmbedding(32, 500000, null, "t");
        var scaled = new RotaryEmbedding(32, 500000, scaling, "t");
        using var scope = Tensor.NewScope();
        // sin(position · frequency) is proportional to the frequency for small angles, so it shows the scaling.
        var (_, s0) = plain.Tables(1000, 1);
        var (_, s1) = scaled.Tables(1000, 1);
        var a = s0.ToArray<float>();
        var b = s1.ToArray<float>();
        Assert.That(b[0], Is.EqualTo(a[0]), "the highest frequency (wavelength 2π < 16) is unchanged");
        Assert.That(b[15] / a[15], Is.EqualTo(1 / 8.0).Within(1e-3), "the lowest frequency is divided by the factor");
    }
}

[TestFixture]
public class FeatureExtractionTests
{
    [TestCase(TinyModels.Gpt2Json)]
    [TestCase(TinyModels.LlamaJson)]
    [TestCase(TinyModels.BertJson)]
    public void TheTrunkReturnsHiddenStatesAndLoadsFromAHeadCheckpoint(string json)
    {
        var dir = TinyModels.TempDir();
        try
        {
            using var scope = Tensor.NewScope();
            using (var full = TinyModels.Create(json)) full.SavePretrained(dir);
            using var trunk = AutoModel.FromPretrained(dir, ModelTask.FeatureExtraction, out var report);
            Assert.That(trunk, Is.InstanceOf<FeatureExtractionModel>());
            var ids = TinyModels.Ids(new[,] { { 3, 9, 4 } });
            var hidden = trunk.Forward(ids).Logits;
            Assert.That(hidden.Shape, Is.EqualTo(new[] { 1, 3, 16 }));
            // LLaMA's lm_head and BERT's MLM head are left out; GPT-2's head is tied to wte, so nothing of it was saved.
            if (json.Contains("\"gpt2\"")) Assert.That(report.UnusedCheckpointKeys, Is.Empty);
            else Assert.That(report.UnusedCheckpointKeys, Is.Not.Empty);
            Assert.Throws<ArgumentException>(() => trunk.Forward(ids, labels: ids));
        }
        finally { Directory.Delete(dir, true); }
    }
}
