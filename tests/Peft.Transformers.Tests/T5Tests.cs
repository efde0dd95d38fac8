using Peft.Transformers;
using Peft.Transformers.T5;

namespace Peft.Transformers.Tests;

[TestFixture]
public class T5Tests
{
    private const string Json = """
        {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "vocab_size": 50, "d_model": 16, "d_kv": 4, "d_ff": 24,
         "num_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16,
         "dropout_rate": 0.0, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false, "eos_token_id": 1}
        """;

    private static T5ForConditionalGeneration Create(string json = Json) => (T5ForConditionalGeneration)TinyModels.Create(json);

    // Worked by hand from transformers' _relative_position_bucket (32 buckets, max distance 128):
    // bidirectional halves the buckets (16, exact below 8, positives offset by 16); e.g. −20 → 8 + ⌊ln(2.5)/ln(16)·8⌋ = 10.
    [TestCase(0, true, 0)]
    [TestCase(1, true, 17)]
    [TestCase(-1, true, 1)]
    [TestCase(7, true, 23)]
    [TestCase(-8, true, 8)]
    [TestCase(-20, true, 10)]
    [TestCase(-200, true, 15)]
    [TestCase(200, true, 31)]
    [TestCase(5, false, 0)]
    [TestCase(-3, false, 3)]
    [TestCase(-20, false, 17)]
    [TestCase(-1000, false, 31)]
    public void RelativePositionBucketsMatchTheFormula(int relative, bool bidirectional, long bucket)
    {
        Assert.That(T5Attention.Bucket(relative, bidirectional, 32, 128), Is.EqualTo(bucket));
    }

    [Test]
    public void KeysFollowTransformersAndEmbeddingsAreShared()
    {
        using var model = Create();
        var sd = model.StateDict();
        Assert.That(sd.Keys, Does.Contain("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
            .And.Contain("decoder.block.1.layer.1.EncDecAttention.q.weight")
            .And.Contain("decoder.block.0.layer.2.DenseReluDense.wi_0.weight")
            .And.Contain("encoder.final_layer_norm.weight").And.Contain("lm_head.weight"));
        Assert.That(sd.Keys, Does.Not.Contain("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"));
        Assert.That(sd["encoder.embed_tokens.weight"], Is.SameAs(sd["shared.weight"]));
        Assert.That(sd["decoder.embed_tokens.weight"], Is.SameAs(sd["shared.weight"]));
        Assert.That(sd["lm_head.weight"], Is.Not.SameAs(sd["shared.weight"]), "tie_word_embeddings is false here");
        using var tied = Create(Json.Replace("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true"));
        Assert.That(tied.StateDict()["lm_head.weight"], Is.SameAs(tied.StateDict()["shared.weight"]));
    }

    [Test]
    public void SaveLoadIsExactAndLabelsAreShiftedRight()
    {
        var dir = TinyModels.TempDir();
        try
        {
            using var scope = Tensor.NewScope();
            using var model = Create();
            model.Eval();
            var ids = TinyModels.Ids(new[,] { { 5, 7, 9, 1 }, { 6, 3, 1, 0 } });
            var mask = TinyModels.Ids(new[,] { { 1, 1, 1, 1 }, { 1, 1, 1, 0 } });
            var labels = TinyModels.Ids(new[,] { { 4, 8, 1 }, { 9, 1, -100 } });
            Assert.That(model.ShiftRight(labels).ToArray<long>(), Is.EqualTo(new long[] { 0, 4, 8, 0, 9, 1 }));
            var output = model.Forward(ids, mask, labels);
            Assert.That(output.Logits.Shape, Is.EqualTo(new[] { 2, 3, 50 }));
            model.SavePretrained(dir);
            using var loaded = AutoModel.FromPretrained(dir);
            Assert.That(loaded.Forward(ids, mask, labels).Logits.ToArray<float>(), Is.EqualTo(output.Logits.ToArray<float>()));
            Assert.That(loaded.Forward(ids, mask, labels).Loss!.Item(), Is.EqualTo(output.Loss!.Item()));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void CachedDecodingMatchesTeacherForcingAndEncoderPaddingIsInvisible()
    {
        using var scope = Tensor.NewScope();
        using var model = Create();
        model.Eval();
        var ids = TinyModels.Ids(new[,] { { 5, 7, 9, 1 } });
        var decoderIds = TinyModels.Ids(new[,] { { 0, 4, 8, 3 } });
        var encoded = model.Encode(ids, null);
        var full = model.Decode(decoderIds, encoded, null);
        using var cache = new KvCache(model.NumLayers);
        using var cross = new T5CrossCache();
        for (int t = 0; t < 4; t++)
        {
            var step = model.Decode(decoderIds.Narrow(1, t, 1), encoded, null, cache, cross);
            Assert.That(step.ToArray<float>(), Is.EqualTo(full.Narrow(1, t, 1).ToArray<float>()).Within(1e-5), $"step {t}");
        }
        var paddedIds = TinyModels.Ids(new[,] { { 5, 7, 9, 1, 0, 0 } });
        var paddedMask = TinyModels.Ids(new[,] { { 1, 1, 1, 1, 0, 0 } });
        var padded = model.Forward(paddedIds, paddedMask, decoderIds, null).Logits;
        Assert.That(padded.ToArray<float>(), Is.EqualTo(full.ToArray<float>()).Within(1e-5));
    }

    [Test]
    public void GreedyGenerationEqualsArgmaxOfTeacherForcedDecoding()
    {
        using var scope = Tensor.NewScope();
        using var model = Create();
        var ids = TinyModels.Ids(new[,] { { 5, 7, 9, 1 } });
        var generated = Seq2SeqGeneration.Generate(model, ids, options: new GenerationOptions { MaxNewTokens = 5 })[0];
        Assert.That(generated, Has.Length.EqualTo(5));
        var prefix = new List<long> { 0 };
        foreach (var token in generated)
        {
            using (Autograd.NoGrad())
            {
                var logits = model.Forward(ids, null, Tensor.FromArray(prefix.ToArray(), [1, prefix.Count]), null).Logits;
                var last = logits.Select(1, prefix.Count - 1).ToFloatArray();
                Assert.That(token, Is.EqualTo(Array.IndexOf(last, last.Max())));
            }
            prefix.Add(token);
        }
    }

    [TestCase("gated-gelu")]
    [TestCase("relu")]
    public void GradientsMatchFiniteDifferences(string ff)
    {
        using var scope = Tensor.NewScope();
        using var model = Create(Json.Replace("gated-gelu", ff));
        model.Eval();
        model.ToDType(DType.F64);
        var ids = TinyModels.Ids(new[,] { { 5, 7, 9, 1 }, { 6, 3, 1, 0 } });
        var mask = TinyModels.Ids(new[,] { { 1, 1, 1, 1 }, { 1, 1, 1, 0 } });
        var labels = TinyModels.Ids(new[,] { { 4, 8, 1 }, { 9, 1, -100 } });
        SampledGradCheck.Run(model, () => model.Forward(ids, mask, labels).Loss!, seed: 5);
    }
}
