namespace Peft.Tests;

[TestFixture]
public class WeightedAdapterTests
{
    private static PeftModel TwoAdapters()
    {
        var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = "false" });
        peft.AddAdapter("b", new LoraConfig { R = 2, LoraAlpha = 3, TargetModules = ["q_proj", "down_proj"], InitLoraWeights = "false" });
        peft.Eval();
        return peft;
    }

    private static readonly Tensor Ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1 }, [1, 6]).KeepAlive();

    private static float[] Out(PeftModel p, params string[] active)
    {
        using var _ = Autograd.NoGrad();
        using var s = Tensor.NewScope();
        p.SetAdapter(active);
        return p.Forward(Ids).Logits.ToFloatArray();
    }

    [Test]
    public void CatEqualsTheSumOfTheAdaptersAndFullRankSvdEqualsCat()
    {
        using var peft = TwoAdapters();
        var both = Out(peft, "default", "b");
        peft.AddWeightedAdapter(["default", "b"], [1.0, 1.0], "cat", "cat");
        Assert.That(Out(peft, "cat"), Is.EqualTo(both).Within(1e-4));
        Assert.That(((LoraLayer)peft.Model.GetSubmodule("model.layers.0.self_attn.q_proj")).Rank("cat"), Is.EqualTo(6));
        peft.AddWeightedAdapter(["default", "b"], [1.0, 1.0], "svd6", "svd", svdRank: 6);
        Assert.That(Out(peft, "svd6"), Is.EqualTo(both).Within(1e-4));
        peft.AddWeightedAdapter(["default", "b"], [1.0, 1.0], "svd1", "svd", svdRank: 1);
        Assert.That(Out(peft, "svd1"), Is.Not.EqualTo(both).Within(1e-4), "rank 1 cannot hold both");
    }

    [Test]
    public void LinearOfOneAdapterIsThatAdapterAndANegativeWeightNegatesIt()
    {
        using var peft = TwoAdapters();
        var one = Out(peft, "default");
        float[] baseOut;
        using (peft.DisableAdapter()) baseOut = Out(peft, "default");
        peft.AddWeightedAdapter(["default"], [1.0], "same", "linear");
        Assert.That(Out(peft, "same"), Is.EqualTo(one).Within(1e-4));
        peft.AddWeightedAdapter(["default"], [-1.0], "neg", "cat");
        peft.AddWeightedAdapter(["default", "neg"], [1.0, 1.0], "zero", "cat");
        Assert.That(Out(peft, "zero"), Is.EqualTo(baseOut).Within(1e-4), "an adapter plus its negation is the base");
    }

    [Test]
    public void InvalidCombinationsAreRejected()
    {
        using var peft = TwoAdapters();
        Assert.Throws<ArgumentException>(() => peft.AddWeightedAdapter(["default", "b"], [0.5, 0.5], "x", "linear"), "ranks differ");
        Assert.Throws<KeyNotFoundException>(() => peft.AddWeightedAdapter(["nope"], [1.0], "x", "cat"));
        Assert.Throws<ArgumentException>(() => peft.AddWeightedAdapter(["default"], [1.0, 2.0], "x", "cat"));
        Assert.Throws<NotSupportedException>(() => peft.AddWeightedAdapter(["default"], [1.0], "x", "magic"));
    }
}
