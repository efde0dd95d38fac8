using Peft.Core.SafeTensors;
using Peft.Transformers;
using Peft.Transformers.Bert;

namespace Peft.Transformers.Tests;

[TestFixture]
public class BertTests
{
    public static IEnumerable<TestCaseData> Heads()
    {
        foreach (var (name, json) in new[] { ("bert", TinyModels.BertJson), ("roberta", TinyModels.RobertaJson) })
            foreach (var task in new[] { ModelTask.SequenceClassification, ModelTask.TokenClassification, ModelTask.MaskedLM })
                yield return new TestCaseData(json, task).SetName($"{name}_{task}");
    }

    [TestCaseSource(nameof(Heads))]
    public void SaveLoadIsExactAndRightPaddingLeavesRealTokensAlone(string json, ModelTask task)
    {
        var dir = TinyModels.TempDir();
        try
        {
            using var scope = Tensor.NewScope();
            using var model = TinyModels.Create(json, task);
            model.Eval();
            var ids = TinyModels.Ids(new[,] { { 5, 7, 9, 11, 1 }, { 6, 3, 3, 8, 4 } });
            var mask = TinyModels.Ids(new[,] { { 1, 1, 1, 1, 0 }, { 1, 1, 1, 1, 1 } });
            var expected = model.Forward(ids, mask).Logits;
            model.SavePretrained(dir);
            using var loaded = AutoModel.FromPretrained(dir, task, out var report);
            Assert.That(report.NewlyInitialized, Is.Empty);
            Assert.That(loaded.Forward(ids, mask).Logits.ToArray<float>(), Is.EqualTo(expected.ToArray<float>()));

            // The padded row's real tokens give the same result as the row alone (padding id 1 is RoBERTa's pad).
            var alone = model.Forward(ids.Narrow(0, 0, 1).Narrow(1, 0, 4)).Logits;
            var padded = expected.Narrow(0, 0, 1);
            if (task != ModelTask.SequenceClassification) padded = padded.Narrow(1, 0, 4);
            Assert.That(padded.ToArray<float>(), Is.EqualTo(alone.ToArray<float>()).Within(1e-5));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MaskedLmDecoderIsTiedToTheWordEmbeddingAndTheHeadBias()
    {
        using var bert = (BertForMaskedLM)TinyModels.Create(TinyModels.BertJson, ModelTask.MaskedLM);
        var sd = bert.StateDict();
        Assert.That(sd["cls.predictions.decoder.weight"], Is.SameAs(sd["bert.embeddings.word_embeddings.weight"]));
        Assert.That(sd["cls.predictions.decoder.bias"], Is.SameAs(sd["cls.predictions.bias"]));
        using var roberta = TinyModels.Create(TinyModels.RobertaJson, ModelTask.MaskedLM);
        var rd = roberta.StateDict();
        Assert.That(rd["lm_head.decoder.weight"], Is.SameAs(rd["roberta.embeddings.word_embeddings.weight"]));
        Assert.That(rd.Keys, Does.Contain("lm_head.layer_norm.weight"));
    }

    [Test]
    public void RobertaNumbersPositionsAfterThePaddingId()
    {
        // With pad_token_id 1 the first real token sits at position 2: changing position row 2 changes its output,
        // changing row 0 (BERT's first position) does not.
        using var scope = Tensor.NewScope();
        using var model = (BertPreTrainedModel)TinyModels.Create(TinyModels.RobertaJson, ModelTask.TokenClassification);
        model.Eval();
        var ids = TinyModels.Ids(new[,] { { 5, 7 } });
        var before = model.Forward(ids).Logits.ToArray<float>();
        var pos = model.Trunk.Embeddings.GetSubmodule("position_embeddings").Parameter("weight");
        using (Autograd.NoGrad()) pos.Narrow(0, 0, 1).FillInPlace(3);
        Assert.That(model.Forward(ids).Logits.ToArray<float>(), Is.EqualTo(before));
        using (Autograd.NoGrad()) pos.Narrow(0, 2, 1).FillInPlace(3);
        Assert.That(model.Forward(ids).Logits.ToArray<float>(), Is.Not.EqualTo(before));
    }

    [Test]
    public void AClassifierFromAPretrainingCheckpointInitialisesItsHeadAndPooler()
    {
        var dir = TinyModels.TempDir();
        try
        {
            using (var mlm = TinyModels.Create(TinyModels.BertJson, ModelTask.MaskedLM)) mlm.SavePretrained(dir);
            using var clf = AutoModel.FromPretrained(dir, ModelTask.SequenceClassification, out var report);
            Assert.That(report.NewlyInitialized, Is.EquivalentTo(new[] { "bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias" }));
            Assert.That(report.UnusedCheckpointKeys, Does.Contain("cls.predictions.bias"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void LegacyGammaBetaLayerNormNamesLoad()
    {
        var dir = TinyModels.TempDir();
        try
        {
            using var scope = Tensor.NewScope();
            using var model = TinyModels.Create(TinyModels.BertJson, ModelTask.MaskedLM);
            model.Eval();
            var ids = TinyModels.Ids(new[,] { { 4, 5, 6 } });
            var expected = model.Forward(ids).Logits.ToArray<float>();
            model.SavePretrained(dir);
            var file = Path.Combine(dir, "model.safetensors");
            Dictionary<string, Tensor> state;
            using (var f = SafeTensorsFile.Open(file)) state = f.LoadAll().ToDictionary(
                kv => kv.Key.Replace("LayerNorm.weight", "LayerNorm.gamma").Replace("LayerNorm.bias", "LayerNorm.beta"), kv => kv.Value.Clone());
            SafeTensorsWriter.Save(file, state);
            using var loaded = AutoModel.FromPretrained(dir);
            Assert.That(loaded.Forward(ids).Logits.ToArray<float>(), Is.EqualTo(expected));
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestCase("bert", ModelTask.SequenceClassification)]
    [TestCase("roberta", ModelTask.MaskedLM)]
    public void GradientsMatchFiniteDifferencesThroughTheEncoder(string type, ModelTask task)
    {
        using var scope = Tensor.NewScope();
        using var model = TinyModels.Create(type == "bert" ? TinyModels.BertJson : TinyModels.RobertaJson, task);
        model.Eval();
        model.ToDType(DType.F64);
        var ids = TinyModels.Ids(new[,] { { 3, 9, 4, 12 }, { 5, 2, 8, 6 } });
        var labels = task == ModelTask.MaskedLM ? TinyModels.Ids(new[,] { { -100, 9, -100, 12 }, { 5, -100, -100, 6 } }) : Tensor.FromArray(new long[] { 2, 0 });
        // Position/segment rows this batch does not use get no gradient worth sampling.
        SampledGradCheck.Run(model, () => model.Forward(ids, labels: labels).Loss!, seed: 3,
            skip: name => name.Contains("token_type_embeddings") || name.Contains("position_embeddings"));
    }
}
