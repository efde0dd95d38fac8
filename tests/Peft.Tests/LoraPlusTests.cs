using Peft.Nn;

namespace Peft.Tests;

[TestFixture]
public class LoraPlusTests
{
    [Test]
    public void LoraBLearnsRatioTimesFasterAndEmbeddingsUseTheirOwnRate()
    {
        // GPT-2 has biases (LayerNorm and projections): with bias = "all" they train and must not be decayed.
        using var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { R = 2, TargetModules = ["c_attn", "wte"], Bias = "all" });
        var groups = LoraPlus.ParamGroups(peft, lr: 1e-3, loraplusLrRatio: 16, loraplusLrEmbedding: 1e-6, weightDecay: 0.1);
        var byName = groups.ToDictionary(g => g.Name);
        var names = peft.NamedParameters().ToDictionary(p => p.Parameter, p => p.Name, ReferenceEqualityComparer.Instance);
        Assert.That(byName["groupA"].Parameters.Select(p => names[p]), Has.All.Contains("lora_A"));
        Assert.That(byName["groupB"].Parameters.Select(p => names[p]), Has.All.Contains("lora_B"));
        Assert.That(byName["groupB"].Lr, Is.EqualTo(16e-3).Within(1e-15));
        Assert.That(byName["embedding"].Parameters.Select(p => names[p]), Has.All.Contains("lora_embedding_"));
        Assert.That(byName["embedding"].Lr, Is.EqualTo(1e-6));
        Assert.That(byName["groupB_no_decay"].WeightDecay, Is.EqualTo(0));
        Assert.That(byName["groupB_no_decay"].Parameters.Select(p => names[p]), Has.All.EndsWith(".bias"));
        Assert.That(groups.Sum(g => g.Parameters.Count), Is.EqualTo(peft.Parameters().Count(p => p.RequiresGrad)));
    }

    [Test]
    public void TrainingWithLoraPlusAdamWLowersTheLoss()
    {
        using var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { R = 4, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" });
        using var opt = LoraPlus.CreateOptimizer(peft, lr: 2e-3, loraplusLrRatio: 16);
        var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2 }, [1, 8]);
        double first = 0, last = 0;
        for (int step = 0; step < 30; step++)
        {
            using var scope = Tensor.NewScope();
            opt.ZeroGrad();
            var loss = peft.Forward(ids, labels: ids).Loss!;
            loss.Backward();
            opt.ClipGradNorm(1.0);
            opt.Step();
            if (step == 0) first = loss.Item();
            last = loss.Item();
        }
        Assert.That(last, Is.LessThan(first - 0.1), "30 LoRA+ AdamW steps lower the loss clearly (about 3.91 → 3.70 here)");
    }
}
