using Peft.Core.SafeTensors;
using Peft.Transformers;

namespace Peft.Transformers.Tests;

/// <summary>
/// Logits (and losses) against Hugging Face transformers, from folders written by tests/fixtures/make_fixtures.py.
/// The script needs torch + transformers (the lent GPU machine has them); where a fixture folder is absent the test
/// is skipped with that reason, never passed.
/// </summary>
[TestFixture]
public class FixtureTests
{
    /// <summary>Fixtures of the architectures this build implements.</summary>
    public static IEnumerable<string> Fixtures() =>
        ["gpt2-lm", "gpt2-seqcls", "gpt2-tokcls", "llama-lm", "llama3-rope-tied-lm", "llama-seqcls", "qwen2-lm",
         "bert-seqcls", "bert-tokcls", "bert-mlm", "roberta-seqcls", "vit-imgcls", "t5-gated-gelu"];

    private static string Folder(string name)
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Peft.Native.sln"))) return Path.Combine(d.FullName, "tests", "fixtures", name);
        throw new DirectoryNotFoundException("repository root not found");
    }

    [TestCaseSource(nameof(Fixtures))]
    public void LogitsMatchTransformers(string name)
    {
        var dir = Folder(name);
        if (!File.Exists(Path.Combine(dir, "expected.safetensors")))
            Assert.Ignore($"fixture '{name}' is absent: run `python3 tests/fixtures/make_fixtures.py` where torch and transformers are installed");
        using var scope = Tensor.NewScope();
        using var expected = SafeTensorsFile.Open(Path.Combine(dir, "expected.safetensors"));
        using var model = AutoModel.FromPretrained(dir);
        var ids = expected.Load(expected.Contains("pixel_values") ? "pixel_values" : "input_ids");
        var mask = expected.Contains("attention_mask") ? expected.Load("attention_mask") : null;
        var labels = expected.Contains("labels") ? expected.Load("labels") : null;
        var output = model is Peft.Transformers.T5.T5ForConditionalGeneration t5 && expected.Contains("decoder_input_ids")
            ? t5.Forward(ids, mask, expected.Load("decoder_input_ids"), labels)
            : model.Forward(ids, mask, labels);
        var want = expected.Load("logits");
        Assert.That(output.Logits.Shape, Is.EqualTo(want.Shape));

        // Positions that are padding are excluded: transformers fills fully masked rows with finfo.min, we with
        // -inf (zeros after softmax); neither value is meaningful.
        var got = output.Logits.ToFloatArray();
        var exp = want.ToFloatArray();
        var keep = KeepMask(model.Task, mask, want.Shape);
        double num = 0, den = 0;
        for (int i = 0; i < exp.Length; i++)
            if (keep[i]) { num += Math.Pow(got[i] - exp[i], 2); den += (double)exp[i] * exp[i]; }
        Assert.That(Math.Sqrt(num / den), Is.LessThanOrEqualTo(1e-4), "relative error of logits vs transformers");
        if (expected.Contains("loss"))
            Assert.That(output.Loss!.Item(), Is.EqualTo(expected.Load("loss").Item()).Within(1e-4).Percent);
    }

    private static bool[] KeepMask(ModelTask task, Tensor? mask, int[] logitShape)
    {
        var keep = new bool[logitShape.Aggregate(1, (a, b) => a * b)];
        // Seq2seq logits are over decoder positions, which have no padding in the fixtures.
        if (mask == null || task is ModelTask.SequenceClassification or ModelTask.ImageClassification or ModelTask.Seq2SeqLM) { Array.Fill(keep, true); return keep; }
        var m = mask.ToArray<long>();
        int perPosition = logitShape[^1];
        for (int i = 0; i < keep.Length; i++) keep[i] = m[i / perPosition] != 0;
        return keep;
    }
}
