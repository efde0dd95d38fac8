using Peft.Core.SafeTensors;
using Peft.Nn;

namespace Peft.Tests;

/// <summary>(IA)³ and VeRA maths, shared projections and file handling, beyond the shared invariant matrix.</summary>
[TestFixture]
public class IA3AndVeraTests
{
    [Test]
    public void IA3ScalesTheOutputOrTheFeedForwardInputAndActiveAdaptersMultiply()
    {
        using var scope = Tensor.NewScope();
        var linear = new Linear(6, 4);
        using var output = new IA3Layer(linear, isFeedforward: false);
        output.UpdateLayer("a", initOnes: false);
        output.UpdateLayer("b", initOnes: false);
        output.ActiveAdapters.AddRange(["a", "b"]);
        var x = Tensor.Randn([3, 6], 1);
        var la = output.GetSubmodule("ia3_l").Parameter("a");
        var lb = output.GetSubmodule("ia3_l").Parameter("b");
        Assert.That(la.Shape, Is.EqualTo(new[] { 4, 1 }));
        using (Autograd.NoGrad())
        {
            var expected = linear.Forward(x) * la.Flatten() * lb.Flatten();
            Assert.That(output.Forward(x).ToArray<float>(), Is.EqualTo(expected.ToArray<float>()).Within(1e-6));
        }

        var linear2 = new Linear(6, 4);
        using var ff = new IA3Layer(linear2, isFeedforward: true);
        ff.UpdateLayer("default", initOnes: false);
        ff.ActiveAdapters.Add("default");
        var l = ff.GetSubmodule("ia3_l").Parameter("default");
        Assert.That(l.Shape, Is.EqualTo(new[] { 1, 6 }));
        using (Autograd.NoGrad())
        {
            var expected = linear2.Forward(x * l.Flatten());
            Assert.That(ff.Forward(x).ToArray<float>(), Is.EqualTo(expected.ToArray<float>()).Within(1e-6));
        }
    }

    [Test]
    public void IA3FeedforwardModulesMustBeTargets()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => new IA3Config { TargetModules = ["k_proj"], FeedforwardModules = ["down_proj"] }.Validate());
        Assert.That(ex!.Message, Does.Contain("down_proj"));
        var cfg = new IA3Config { TargetModules = ["k_proj", "down_proj"], FeedforwardModules = ["down_proj"] };
        Assert.That((cfg.IsFeedforward("model.layers.0.mlp.down_proj"), cfg.IsFeedforward("model.layers.0.self_attn.k_proj")), Is.EqualTo((true, false)));
    }

    [Test]
    public void VeraForwardUsesSlicesOfOneSharedPairOfProjections()
    {
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new VeraConfig { R = 4, TargetModules = ["q_proj", "up_proj"], InitWeights = false });
        // Llama here: hidden 16, intermediate 24; q_proj 16→16, up_proj 16→24. Projections fit the largest: A [4, 16], B [24, 4].
        var a = peft.GetSubmodule("base_model.vera_A").Buffer("default");
        var b = peft.GetSubmodule("base_model.vera_B").Buffer("default");
        Assert.That((a.Shape, b.Shape), Is.EqualTo((new[] { 4, 16 }, new[] { 24, 4 })));
        Assert.That(a.ToFloatArray().Max(v => Math.Abs(v)), Is.LessThanOrEqualTo(Math.Sqrt(6.0 / 16)), "kaiming-uniform bound √(6/fan_in)");
        Assert.That(b.ToFloatArray().Max(v => Math.Abs(v)), Is.LessThanOrEqualTo(Math.Sqrt(6.0 / 4)));
        Assert.That(peft.GetNbTrainableParameters().Trainable, Is.EqualTo(2 * ((16 + 4) + (24 + 4))), "only λ_b and λ_d train");

        var layer = (VeraLayer)peft.Model.GetSubmodule("model.layers.0.self_attn.q_proj");
        layer.Eval();
        var x = Tensor.Randn([3, 16], 2);
        using var _ = Autograd.NoGrad();
        var ld = layer.GetSubmodule("vera_lambda_d").Parameter("default");
        var lbv = layer.GetSubmodule("vera_lambda_b").Parameter("default");
        var aSlice = a.Narrow(1, 0, 16).Contiguous();
        var bSlice = b.Narrow(0, 0, 16).Contiguous();
        var expected = ((IUnaryModule)layer.BaseLayer).Forward(x) + (x.Linear(aSlice) * ld).Linear(bSlice) * lbv;
        Assert.That(layer.Forward(x).ToArray<float>(), Is.EqualTo(expected.ToArray<float>()).Within(1e-5));
    }

    [Test]
    public void VeraProjectionsAreSavedAndLoadedNotRegeneratedFromTheSeed()
    {
        var dir = Directory.CreateTempSubdirectory("peft-vera-").FullName;
        try
        {
            using var scope = Tensor.NewScope();
            var x = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1 }, [2, 3]);
            float[] expected;
            using (var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new VeraConfig { R = 8, TargetModules = ["c_attn"], InitWeights = false, ProjectionPrngKey = 5 }))
            {
                peft.Eval();
                using (Autograd.NoGrad()) expected = peft.Forward(x).Logits.ToFloatArray();
                peft.SavePretrained(dir);
            }
            using (var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
                Assert.That((st.Info("base_model.vera_A").Shape, st.Info("base_model.vera_B").Shape), Is.EqualTo((new[] { 8, 16 }, new[] { 48, 8 })));
            // A different seed in the config must not matter: the projections come from the file.
            var json = File.ReadAllText(Path.Combine(dir, "adapter_config.json")).Replace("\"projection_prng_key\": 5", "\"projection_prng_key\": 99");
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), json);
            using (var loaded = PeftModel.FromPretrained(Cases.Create(Cases.Gpt2), dir))
            {
                loaded.Eval();
                using var _ = Autograd.NoGrad();
                Assert.That(loaded.Forward(x).Logits.ToFloatArray(), Is.EqualTo(expected));
            }
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), json.Replace("\"save_projection\": true", "\"save_projection\": false"));
            var ex = Assert.Throws<PeftConfigException>(() => PeftModel.FromPretrained(Cases.Create(Cases.Gpt2), dir));
            Assert.That(ex!.Message, Does.Contain("save_projection"));
        }
        finally { Directory.Delete(dir, true); }
    }
}
