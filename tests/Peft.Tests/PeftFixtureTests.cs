using Peft.Core.SafeTensors;
using Peft.Transformers;

namespace Peft.Tests;

/// <summary>
/// Interop with Python <c>peft</c> both ways. Python → .NET: adapters and logits written by
/// tests/fixtures/make_fixtures.py (needs torch + transformers + peft; skipped with that reason until they exist).
/// .NET → Python: <see cref="SaveForPython"/> writes a folder that tests/fixtures/check_csharp_adapter.py checks.
/// </summary>
[TestFixture]
public class PeftFixtureTests
{
    private static string Fixtures()
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Peft.Native.sln"))) return Path.Combine(d.FullName, "tests", "fixtures");
        throw new DirectoryNotFoundException("repository root not found");
    }

    [TestCase("peft-lora-gpt2")]
    [TestCase("peft-lora-gpt2-rslora-patterns")]
    [TestCase("peft-loha-llama")]
    [TestCase("peft-lokr-llama")]
    [TestCase("peft-ia3-llama")]
    [TestCase("peft-vera-gpt2")]
    [TestCase("peft-adalora-llama")]
    [TestCase("peft-oft-llama")]
    [TestCase("peft-boft-llama")]
    [TestCase("peft-prompt-llama")]
    [TestCase("peft-ptuning-gpt2")]
    [TestCase("peft-ptuning-lstm-gpt2")]
    [TestCase("peft-mpt-gpt2")]
    [TestCase("peft-prefix-llama")]
    [TestCase("peft-prefix-projection-gpt2")]
    [TestCase("peft-adaption-prompt-llama")]
    public void AnAdapterWrittenByPythonPeftGivesPeftsLogits(string name)
    {
        var dir = FixtureFolder(name);
        using var scope = Tensor.NewScope();
        using var expected = SafeTensorsFile.Open(Path.Combine(dir, "expected.safetensors"));
        using var peft = PeftModel.FromPretrained(AutoModel.FromPretrained(Path.Combine(dir, "base")), Path.Combine(dir, "adapter"));
        long[]? taskIds = expected.Contains("task_ids") ? expected.Load("task_ids").ToArray<long>() : null; // multitask prompt tuning
        var logits = peft.Forward(expected.Load("input_ids"), expected.Load("attention_mask"), taskIds: taskIds).Logits.ToFloatArray();
        var want = expected.Load("logits").ToFloatArray();
        var mask = expected.Load("attention_mask").ToArray<long>();
        Assert.That(logits.Length, Is.EqualTo(want.Length), "prompt tuning returns the virtual positions too, as PEFT does");
        int rows = expected.Load("input_ids").Size(0), t = mask.Length / rows;
        int vocab = peft.Model.InputEmbeddings?.NumEmbeddings ?? want.Length / mask.Length;
        int positions = want.Length / (rows * vocab), virtualTokens = positions - t;
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++)
        {
            int row = i / (positions * vocab), pos = i / vocab % positions - virtualTokens;
            if (pos >= 0 && mask[row * t + pos] == 0) continue; // padding (virtual positions always count)
            num += Math.Pow(logits[i] - want[i], 2);
            den += (double)want[i] * want[i];
        }
        Assert.That(Math.Sqrt(num / den), Is.LessThanOrEqualTo(1e-4));
        var (loadedTrainable, _) = peft.GetNbTrainableParameters();
        Assert.That(loadedTrainable, Is.EqualTo(0), "loaded for inference: frozen");
        AssertTrainingModeCounts(dir, expected);
        // Re-saving a Python adapter reproduces its config byte for byte (PEFT's own fields rewritten identically).
        var resaved = Path.Combine(Path.GetTempPath(), "peft-resave-" + Guid.NewGuid().ToString("N"));
        try
        {
            peft.SavePretrained(resaved);
            using var a = SafeTensorsFile.Open(Path.Combine(dir, "adapter", "adapter_model.safetensors"));
            using var b = SafeTensorsFile.Open(Path.Combine(resaved, "adapter_model.safetensors"));
            Assert.That(b.Tensors.Select(t => t.Name).Order(), Is.EqualTo(a.Tensors.Select(t => t.Name).Order()));
        }
        finally { if (Directory.Exists(resaved)) Directory.Delete(resaved, true); }
    }

    /// <summary>Prompt-learning adapters on T5 written by Python peft: the decoder logits and peft's parameter counts.</summary>
    [TestCase("peft-prompt-t5")]
    [TestCase("peft-ptuning-t5")]
    [TestCase("peft-prefix-t5")]
    public void ASeq2SeqAdapterWrittenByPythonPeftGivesPeftsLogits(string name)
    {
        var dir = FixtureFolder(name);
        using var scope = Tensor.NewScope();
        using var expected = SafeTensorsFile.Open(Path.Combine(dir, "expected.safetensors"));
        using var peft = PeftModel.FromPretrained(AutoModel.FromPretrained(Path.Combine(dir, "base")), Path.Combine(dir, "adapter"));
        // The fixture passes decoder_input_ids; labels whose shift-right gives them (the last label moves no logit).
        var decoder = expected.Load("decoder_input_ids").ToArray<long>();
        int rows = expected.Load("input_ids").Size(0), steps = decoder.Length / rows;
        var labels = new long[decoder.Length];
        for (int r = 0; r < rows; r++)
            for (int t = 0; t < steps; t++) labels[r * steps + t] = t + 1 < steps ? decoder[r * steps + t + 1] : 1;
        var logits = peft.Forward(expected.Load("input_ids"), expected.Load("attention_mask"), Tensor.FromArray(labels, [rows, steps])).Logits.ToFloatArray();
        var want = expected.Load("logits").ToFloatArray();
        Assert.That(logits.Length, Is.EqualTo(want.Length), "decoder positions only: the prompts sit in the encoder");
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++) { num += Math.Pow(logits[i] - want[i], 2); den += (double)want[i] * want[i]; }
        Assert.That(Math.Sqrt(num / den), Is.LessThanOrEqualTo(1e-4));
        AssertTrainingModeCounts(dir, expected);
    }

    /// <summary>The fixture folder, or the test ignored with how to make it.</summary>
    private static string FixtureFolder(string name)
    {
        var dir = Path.Combine(Fixtures(), name);
        if (!File.Exists(Path.Combine(dir, "expected.safetensors")))
            Assert.Ignore($"fixture '{name}' is absent: run `python3 tests/fixtures/make_fixtures.py` where torch, transformers and peft are installed");
        return dir;
    }

    /// <summary>The fixture's counts come from peft.get_peft_model, a training-mode model (P-tuning's MLP or LSTM and the
    /// prefix projection exist there, not in a model loaded for inference), so they are compared with one.</summary>
    private static void AssertTrainingModeCounts(string dir, SafeTensorsFile expected)
    {
        var counts = expected.Load("counts").ToArray<long>();
        var trainingConfig = PeftConfig.Load(Path.Combine(dir, "adapter"));
        trainingConfig.InferenceMode = false;
        using var training = PeftModel.Create(AutoModel.FromPretrained(Path.Combine(dir, "base")), trainingConfig);
        Assert.That(training.GetNbTrainableParameters(), Is.EqualTo((counts[0], counts[1])),
            "(trainable, all) as peft's get_nb_trainable_parameters counts them");
    }

    /// <summary>Writes a base model, an adapter and .NET's logits for check_csharp_adapter.py to verify in Python.</summary>
    [Test]
    public void SaveForPython()
    {
        var dir = Path.Combine(Fixtures(), "csharp-adapter");
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig
        {
            R = 4, LoraAlpha = 8, TargetModules = ["c_attn", "c_fc"], FanInFanOut = true, InitLoraWeights = "false", TaskType = "CAUSAL_LM",
        });
        peft.Eval();
        var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2 }, [1, 8]);
        var logits = peft.Forward(ids).Logits;
        using (var baseOnly = Cases.Create(Cases.Gpt2)) baseOnly.SavePretrained(Path.Combine(dir, "base"));
        peft.SavePretrained(Path.Combine(dir, "adapter"));
        SafeTensorsWriter.Save(Path.Combine(dir, "expected.safetensors"), new Dictionary<string, Tensor> { ["input_ids"] = ids, ["logits"] = logits });
        Assert.That(File.Exists(Path.Combine(dir, "adapter", "adapter_config.json")));
    }
}
