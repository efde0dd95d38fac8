using Peft.TestSupport;
using Peft.Transformers;

namespace Peft.Tests;

/// <summary>transformers' gradient checkpointing on each architecture under PEFT: the same loss and gradients as a
/// plain pass (dropout replayed), a lower activation peak, and passes with a cache left alone.</summary>
[TestFixture]
public class GradientCheckpointingTests
{
    /// <summary>The shared tiny T5 with dropout on: the recomputation must replay its masks.</summary>
    private static string T5WithDropout() => TinyConfigs.T5.Replace("\"dropout_rate\": 0.0", "\"dropout_rate\": 0.1");

    public static IEnumerable<TestCaseData> Models()
    {
        yield return new TestCaseData(Cases.Gpt2, (Func<PeftConfig>)(() => new LoraConfig { R = 4, TargetModules = ["c_attn"], LoraDropout = 0.1, InitLoraWeights = "false", TaskType = "CAUSAL_LM" })).SetName("GPT-2 LoRA");
        yield return new TestCaseData(Cases.Llama, (Func<PeftConfig>)(() => new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj", "down_proj"], LoraDropout = 0.1, InitLoraWeights = "false", TaskType = "CAUSAL_LM" })).SetName("LLaMA LoRA");
        yield return new TestCaseData(Cases.Bert, (Func<PeftConfig>)(() => new LoraConfig { R = 4, TargetModules = ["query", "value"], LoraDropout = 0.1, InitLoraWeights = "false", TaskType = "SEQ_CLS" })).SetName("BERT LoRA");
        yield return new TestCaseData(T5WithDropout(), (Func<PeftConfig>)(() => new LoraConfig { R = 4, TargetModules = ["q", "v"], LoraDropout = 0.1, InitLoraWeights = "false", TaskType = "SEQ_2_SEQ_LM" })).SetName("T5 LoRA (encoder output into the decoder)");
        yield return new TestCaseData(Cases.Gpt2, (Func<PeftConfig>)(() => new PromptTuningConfig { NumVirtualTokens = 3, TaskType = "CAUSAL_LM" })).SetName("GPT-2 prompt tuning");
        yield return new TestCaseData(Cases.Llama, (Func<PeftConfig>)(() => new AdaptionPromptConfig { AdapterLen = 3, AdapterLayers = 2, TaskType = "CAUSAL_LM" })).SetName("LLaMA-Adapter");
    }

    private static readonly long[] Ids = [3, 9, 4, 12, 7, 1, 5, 2, 8, 6];
    private static readonly long[] Target = [9, 5, 1, 3, 7, 1];

    private static (double Loss, Dictionary<string, float[]> Grads) Step(string json, Func<PeftConfig> config, bool checkpointing)
    {
        var model = Cases.Create(json);
        if (checkpointing) Assert.That(model.GradientCheckpointingEnable(), Is.GreaterThan(0));
        using var peft = PeftModel.Create(model, config());
        peft.Train();
        Peft.Core.Random.Generator.Default.ManualSeed(99);
        using var scope = Tensor.NewScope();
        var ids = Tensor.FromArray(Ids, [2, 5]);
        var labels = model.Task switch
        {
            ModelTask.SequenceClassification => Tensor.FromArray(new long[] { 1, 2 }),
            ModelTask.Seq2SeqLM => Tensor.FromArray(Target, [2, 3]),
            _ => ids,
        };
        var loss = peft.Forward(ids, labels: labels).Loss!;
        loss.Backward();
        var grads = peft.NamedParameters().Where(p => p.Parameter.RequiresGrad).ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToFloatArray());
        return (loss.Item(), grads);
    }

    [TestCaseSource(nameof(Models))]
    public void CheckpointedTrainingGivesThePlainLossAndGradients(string json, Func<PeftConfig> config)
    {
        var plain = Step(json, config, false);
        var checkpointed = Step(json, config, true);
        Assert.That(checkpointed.Loss, Is.EqualTo(plain.Loss));
        Assert.That(checkpointed.Grads.Keys, Is.EquivalentTo(plain.Grads.Keys));
        foreach (var (name, g) in plain.Grads)
            Assert.That(checkpointed.Grads[name], Is.EqualTo(g).Within(1e-6), name);
    }

    private const string WideGpt2 = """
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50, "n_positions": 128, "n_embd": 64,
         "n_layer": 6, "n_head": 4, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "pad_token_id": 0}
        """;

    private static long PeakStepBytes(bool checkpointing)
    {
        var model = Cases.Create(WideGpt2);
        if (checkpointing) model.GradientCheckpointingEnable();
        using var peft = PeftModel.Create(model, new LoraConfig { R = 8, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
        peft.Train();
        using var scope = Tensor.NewScope();
        var ids = Tensor.FromArray(Enumerable.Range(0, 4 * 128).Select(i => (long)(i * 7 % 50)).ToArray(), [4, 128]);
        long before = MemoryStats.LiveBytes;
        MemoryStats.ResetPeak();
        peft.Forward(ids, labels: ids).Loss!.Backward();
        return MemoryStats.PeakBytes - before;
    }

    [Test]
    public void CheckpointingLowersTheActivationPeak()
    {
        long plain = PeakStepBytes(false), checkpointed = PeakStepBytes(true);
        TestContext.Out.WriteLine($"GPT-2 6×64, B=4, T=128, LoRA r=8: peak above the model {plain / 1048576.0:F2} MiB plain, {checkpointed / 1048576.0:F2} MiB checkpointed ({(double)checkpointed / plain:P0})");
        Assert.That(checkpointed, Is.LessThan(plain * 0.6));
    }

    [Test]
    public void PassesWithACacheAreNotCheckpointed()
    {
        var model = Cases.Create(Cases.Gpt2);
        model.GradientCheckpointingEnable();
        Assert.That(model.IsGradientCheckpointing);
        using var peft = PeftModel.Create(model, new PrefixTuningConfig { NumVirtualTokens = 3, TaskType = "CAUSAL_LM" });
        peft.Train();
        using var scope = Tensor.NewScope();
        var ids = Tensor.FromArray(Ids, [2, 5]);
        Assert.DoesNotThrow(() => peft.Forward(ids, labels: ids).Loss!.Backward(), "prefix tuning's trainable cache runs the layers plainly");
        Assert.That(peft.NamedParameters().Where(p => p.Parameter.RequiresGrad).All(p => p.Parameter.Grad != null));
        model.GradientCheckpointingEnable(false);
        Assert.That(model.IsGradientCheckpointing, Is.False);
    }
}
