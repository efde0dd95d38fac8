using Peft.Core.Random;

namespace Peft.Tests;

[TestFixture]
public class TaskArithmeticTests
{
    [Test]
    public void MagnitudePruningKeepsTheLargestEntries()
    {
        Assert.That(TaskArithmetic.MagnitudePrune([0.1, -3, 2, -0.5], 0.5), Is.EqualTo(new[] { 0, -3, 2, 0.0 }));
        Assert.That(TaskArithmetic.MagnitudePrune([1, 2], 1.0), Is.EqualTo(new[] { 1.0, 2 }));
    }

    [Test]
    public void TiesElectsTheMajoritySignAndAveragesTheAgreeingEntries()
    {
        // Worked by hand: column sums 0, −3, 5 elect +, −, +; agreeing entries are averaged.
        var r = TaskArithmetic.Combine("ties", [[1, -2, 3], [-1, -1, 2]], [1, 1], 1.0, "total", null);
        Assert.That(r, Is.EqualTo(new[] { 1, -1.5, 2.5 }));
        // "total" weighs by size (5 − 1 − 1 > 0 → +), "frequency" counts signs (1 + vs 2 − → −).
        Assert.That(TaskArithmetic.Combine("ties", [[5], [-1], [-1]], [1, 1, 1], 1.0, "total", null), Is.EqualTo(new[] { 5.0 }));
        Assert.That(TaskArithmetic.Combine("ties", [[5], [-1], [-1]], [1, 1, 1], 1.0, "frequency", null), Is.EqualTo(new[] { -1.0 }));
    }

    [Test]
    public void DarePreservesTheSumInExpectationAndIsSeeded()
    {
        var t = Enumerable.Repeat(1.0, 20000).ToArray();
        var a = TaskArithmetic.Combine("dare_linear", [t], [1], 0.3, "total", new Generator(4));
        var b = TaskArithmetic.Combine("dare_linear", [t], [1], 0.3, "total", new Generator(4));
        Assert.That(a, Is.EqualTo(b));
        Assert.That(a.Average(), Is.EqualTo(1).Within(0.05));
        Assert.That(a.Count(v => v == 0) / 20000.0, Is.EqualTo(0.7).Within(0.02));
    }

    [Test]
    public void WeightedTaskArithmeticTypesBuildUsableAdapters()
    {
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = "false" });
        peft.AddAdapter("b", new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = "false" });
        peft.Eval();
        var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12 }, [1, 4]);
        float[] Out(string a) { using var _ = Autograd.NoGrad(); peft.SetAdapter(a); return peft.Forward(ids).Logits.ToFloatArray(); }
        var single = Out("default");
        // One adapter at density 1: pruning and sign election change nothing, so ties and ties_svd reproduce it.
        peft.AddWeightedAdapter(["default"], [1.0], "t", "ties", density: 1.0);
        Assert.That(Out("t"), Is.EqualTo(single).Within(1e-4));
        peft.AddWeightedAdapter(["default"], [1.0], "ts", "ties_svd", density: 1.0);
        Assert.That(Out("ts"), Is.EqualTo(single).Within(1e-4));
        foreach (var type in new[] { "dare_linear", "dare_ties", "magnitude_prune", "magnitude_prune_svd", "dare_ties_svd" })
        {
            peft.AddWeightedAdapter(["default", "b"], [0.7, 0.3], type, type, density: 0.5, generator: new Generator(1));
            Assert.That(Out(type), Has.All.Matches<float>(float.IsFinite), type);
        }
        // svd_clamp: both factors are clamped to ±(0.9-quantile of the unclamped factors' entries).
        peft.AddWeightedAdapter(["default", "b"], [1.0, 1.0], "plain", "svd");
        peft.AddWeightedAdapter(["default", "b"], [1.0, 1.0], "clamped", "svd", svdClamp: 0.9);
        var layer = (LoraLayer)peft.Model.GetSubmodule("model.layers.0.self_attn.q_proj");
        var (pa, pb) = layer.Factors("plain");
        var entries = pa.ToFloatArray().Concat(pb.ToFloatArray()).Select(v => (double)v).Order().ToArray();
        double pos = 0.9 * (entries.Length - 1);
        int lo = (int)pos;
        double quantile = entries[lo] + (pos - lo) * (entries[lo + 1] - entries[lo]);
        var (ca, cb) = layer.Factors("clamped");
        var clamped = ca.ToFloatArray().Concat(cb.ToFloatArray()).ToArray();
        Assert.That(clamped.Max(Math.Abs), Is.LessThanOrEqualTo(quantile + 1e-6));
        Assert.That(entries.Max(Math.Abs), Is.GreaterThan(quantile), "the clamp had something to cut");
        Assert.Throws<ArgumentException>(() => peft.AddWeightedAdapter(["default"], [1.0], "x", "ties"), "ties needs a density");
    }
}
