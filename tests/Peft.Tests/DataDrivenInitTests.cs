using Peft.Core.Linalg;

namespace Peft.Tests;

[TestFixture]
public class DataDrivenInitTests
{
    private static readonly Tensor Ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1 }, [1, 6]).KeepAlive();

    private static float[] Logits(Func<Tensor, float[]> run) => run(Ids);

    [TestCase("pissa")]
    [TestCase("pissa_niter_4")]
    [TestCase("olora")]
    public void TheModelIsUnchangedAtInitBecauseTheBaseKeepsTheResidual(string init)
    {
        using var scope = Tensor.NewScope();
        var model = Cases.Create(Cases.Llama);
        model.Eval();
        float[] before;
        using (Autograd.NoGrad()) before = model.Forward(Ids).Logits.ToFloatArray();
        var original = model.StateDict()["model.layers.0.self_attn.q_proj.weight"].Clone().KeepAlive();
        using var peft = PeftModel.Create(model, new LoraConfig { R = 3, LoraAlpha = 6, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = init });
        float[] after;
        using (Autograd.NoGrad()) after = peft.Forward(Ids).Logits.ToFloatArray();
        Assert.That(after, Is.EqualTo(before).Within(1e-4));
        var layer = (LoraLayer)peft.Model.GetSubmodule("model.layers.0.self_attn.q_proj");
        var residual = layer.BaseLayer.Parameter("weight");
        Assert.That(residual.ToFloatArray(), Is.Not.EqualTo(original.ToFloatArray()), "the base holds W − s·B·A");
        if (init == "pissa")
        {
            var (_, sW, _) = Decompositions.Svd(Decompositions.Matrix(original));
            var (_, sRes, _) = Decompositions.Svd(Decompositions.Matrix(residual));
            Assert.That(sRes[0], Is.EqualTo(sW[3]).Within(1e-4), "PiSSA moved exactly the top-3 singular directions into the adapter");
        }
        if (init == "olora")
        {
            var (_, b) = layer.Factors("default");
            var bm = Decompositions.Matrix(b);
            var btb = Decompositions.MatMul(Decompositions.Transpose(bm), bm);
            for (int i = 0; i < 3; i++) for (int j = 0; j < 3; j++) Assert.That(btb[i, j], Is.EqualTo(i == j ? 1 : 0).Within(1e-5), "B = first r columns of Q");
        }
        original.Dispose();
    }

    [Test]
    public void RandomizedPissaFindsNearlyTheSameSubspaceAsExactPissa()
    {
        using var scope = Tensor.NewScope();
        using var exact = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 2, TargetModules = ["q_proj"], InitLoraWeights = "pissa" });
        using var fast = PeftModel.Create(Cases.Create(Cases.Llama), new LoraConfig { R = 2, TargetModules = ["q_proj"], InitLoraWeights = "pissa_niter_8" });
        var d1 = ((LoraLayer)exact.Model.GetSubmodule("model.layers.1.self_attn.q_proj")).DeltaWeight("default").ToFloatArray();
        var d2 = ((LoraLayer)fast.Model.GetSubmodule("model.layers.1.self_attn.q_proj")).DeltaWeight("default").ToFloatArray();
        double num = 0, den = 0;
        for (int i = 0; i < d1.Length; i++) { num += Math.Pow(d1[i] - d2[i], 2); den += (double)d1[i] * d1[i]; }
        Assert.That(Math.Sqrt(num / den), Is.LessThan(0.05));
    }

    [Test]
    public void OloraOnAConv1DLayerIsRefusedClearly()
    {
        Assert.That(Assert.Throws<NotSupportedException>(() => PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { R = 2, TargetModules = ["c_attn"], InitLoraWeights = "olora" }))!.Message,
            Does.Contain("OLoRA"));
    }
}
