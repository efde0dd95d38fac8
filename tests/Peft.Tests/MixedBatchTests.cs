using Peft.Transformers;

namespace Peft.Tests;

[TestFixture]
public class MixedBatchTests
{
    /// <summary>Two non-trivial adapters of one method, on overlapping layers.</summary>
    internal static IEnumerable<TestCaseData> Methods()
    {
        yield return new TestCaseData(new LoraConfig { R = 4, TargetModules = ["query", "value"], TaskType = "SEQ_CLS", InitLoraWeights = "false" },
            new LoraConfig { R = 2, TargetModules = ["query", "key"], TaskType = "SEQ_CLS", InitLoraWeights = "false" }).SetArgDisplayNames("lora");
        yield return new TestCaseData(new LoHaConfig { R = 4, TargetModules = ["query", "value"], TaskType = "SEQ_CLS", InitWeights = false },
            new LoHaConfig { R = 2, TargetModules = ["query", "key"], TaskType = "SEQ_CLS", InitWeights = false }).SetArgDisplayNames("loha");
        yield return new TestCaseData(new LoKrConfig { R = 1, TargetModules = ["query", "value"], TaskType = "SEQ_CLS", InitWeights = "false" },
            new LoKrConfig { R = 2, TargetModules = ["query", "key"], TaskType = "SEQ_CLS", InitWeights = "false", DecomposeBoth = true }).SetArgDisplayNames("lokr");
        yield return new TestCaseData(new IA3Config { TargetModules = ["query", "value", "output.dense"], FeedforwardModules = ["output.dense"], TaskType = "SEQ_CLS", InitIa3Weights = false },
            new IA3Config { TargetModules = ["query", "key"], TaskType = "SEQ_CLS", InitIa3Weights = false }).SetArgDisplayNames("ia3");
        yield return new TestCaseData(new VeraConfig { R = 4, TargetModules = ["query", "value"], TaskType = "SEQ_CLS", InitWeights = false },
            new VeraConfig { R = 4, TargetModules = ["query", "key"], TaskType = "SEQ_CLS", InitWeights = false, ProjectionPrngKey = 3 }).SetArgDisplayNames("vera");
        yield return new TestCaseData(new OftConfig { OftBlockSize = 4, TargetModules = ["query", "value"], TaskType = "SEQ_CLS", InitWeights = false },
            new OftConfig { OftBlockSize = 8, TargetModules = ["query", "key"], TaskType = "SEQ_CLS", InitWeights = false }).SetArgDisplayNames("oft");
        yield return new TestCaseData(new BoftConfig { BoftBlockSize = 4, BoftNButterflyFactor = 2, TargetModules = ["query", "value"], TaskType = "SEQ_CLS", InitWeights = false },
            new BoftConfig { BoftBlockSize = 2, TargetModules = ["query", "key"], TaskType = "SEQ_CLS", InitWeights = false }).SetArgDisplayNames("boft");
    }

    [TestCaseSource(nameof(Methods))]
    public void EachSampleGetsItsOwnAdapterAndBaseMeansNone(TunerConfig first, TunerConfig second)
    {
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(Cases.Create(Cases.Bert, ModelTask.SequenceClassification), first);
        peft.AddAdapter("other", second);
        using (Autograd.NoGrad()) peft.GetSubmodule("base_model.model.classifier.modules_to_save.other").Parameter("weight").MulInPlace(-1);
        peft.Eval();
        var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6, 11, 13 }, [3, 4]);
        float[] Row(float[] all, int r) => all.Skip(r * 3).Take(3).ToArray();
        float[] With(string name)
        {
            using var _ = Autograd.NoGrad();
            if (name == PeftModel.BaseAdapterName) using (peft.DisableAdapter()) return peft.Forward(ids).Logits.ToFloatArray();
            peft.SetAdapter(name);
            return peft.Forward(ids).Logits.ToFloatArray();
        }
        var a = With("default");
        var b = With("other");
        var none = With(PeftModel.BaseAdapterName);
        peft.SetAdapter("default");
        float[] mixed;
        using (Autograd.NoGrad()) mixed = peft.Forward(ids, adapterNames: ["other", PeftModel.BaseAdapterName, "default"]).Logits.ToFloatArray();
        Assert.That(Row(mixed, 0), Is.EqualTo(Row(b, 0)).Within(1e-5));
        Assert.That(Row(mixed, 1), Is.EqualTo(Row(none, 1)).Within(1e-5));
        Assert.That(Row(mixed, 2), Is.EqualTo(Row(a, 2)).Within(1e-5));

        Assert.Throws<KeyNotFoundException>(() => peft.Forward(ids, adapterNames: ["x", "default", "default"]));
        Assert.Throws<ArgumentException>(() => peft.Forward(ids, adapterNames: ["default"]));
        peft.MergeAdapter();
        Assert.Throws<InvalidOperationException>(() => peft.Forward(ids, adapterNames: ["default", "other", "default"]));
    }

    [Test]
    public void DoraAdaptersAreRefusedInMixedBatches()
    {
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 2, TargetModules = ["q_proj"], UseDora = true });
        var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12 }, [2, 2]);
        Assert.That(Assert.Throws<InvalidOperationException>(() => peft.Forward(ids, adapterNames: ["default", "__base__"]))!.Message, Does.Contain("DoRA"));
    }
}
