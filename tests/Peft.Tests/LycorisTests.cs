using Peft.Core.SafeTensors;
using Peft.Nn;

namespace Peft.Tests;

/// <summary>LoHa and LoKr maths, shapes, dropouts and file keys, beyond the shared invariant matrix.</summary>
[TestFixture]
public class LycorisTests
{
    private static Tensor P(Module layer, string path) => layer.GetSubmodule(path[..path.LastIndexOf('.')]).Parameter(path[(path.LastIndexOf('.') + 1)..]);

    [Test]
    public void LoHaDeltaIsTheScaledHadamardProductOfTwoLowRankProducts()
    {
        using var scope = Tensor.NewScope();
        using var layer = new LoHaLayer(new Linear(7, 5));
        layer.UpdateLayer("default", r: 3, alpha: 4.5, rankDropout: 0, moduleDropout: 0, initWeights: false);
        double[,] Prod(string a, string b)
        {
            var x = P(layer, a + ".default").ToArray<float>();
            var y = P(layer, b + ".default").ToArray<float>();
            int rows = P(layer, a + ".default").Shape[0], cols = P(layer, b + ".default").Shape[1];
            var result = new double[rows, cols];
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                    for (int k = 0; k < 3; k++) result[i, j] += (double)x[i * 3 + k] * y[k * cols + j];
            return result;
        }
        var w1 = Prod("hada_w1_a", "hada_w1_b");
        var w2 = Prod("hada_w2_a", "hada_w2_b");
        var delta = layer.DeltaWeight("default").ToArray<float>();
        Assert.That(layer.DeltaWeight("default").Shape, Is.EqualTo(new[] { 5, 7 }));
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 7; j++)
                Assert.That(delta[i * 7 + j], Is.EqualTo(w1[i, j] * w2[i, j] * 1.5).Within(1e-5));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void LoHaFoldedIntoTheBaseProductEqualsPeftsBasePlusEachAdaptersTerm(bool conv1d)
    {
        // y = x·(W + ΔW₁ + ΔW₂)ᵀ + b against PEFT's base(x) + x·ΔW₁ᵀ + x·ΔW₂ᵀ, values and the factors' gradients.
        using var scope = Tensor.NewScope();
        Module baseLayer = conv1d ? new Conv1D(9, 7) : new Linear(7, 9);
        baseLayer.RequiresGrad(false);   // frozen, as PeftModel leaves it
        using var layer = new LoHaLayer(baseLayer);
        layer.UpdateLayer("one", r: 3, alpha: 4.5, rankDropout: 0, moduleDropout: 0, initWeights: false);
        layer.UpdateLayer("two", r: 2, alpha: 1, rankDropout: 0, moduleDropout: 0, initWeights: false);
        layer.ActiveAdapters.Add("one");
        layer.ActiveAdapters.Add("two");
        var x = Tensor.Randn([4, 7], 5);
        var up = Tensor.Randn([4, 9], 6);
        var factors = layer.Parameters().Where(p => p.RequiresGrad).ToList();
        Assert.That(factors, Has.Count.EqualTo(8));
        (layer.Forward(x) * up).Sum().Backward();
        var folded = factors.Select(f => f.Grad!.ToArray<float>()).ToList();
        using (Autograd.NoGrad()) Assert.That(layer.Forward(x).ToArray<float>(), Is.EqualTo(Reference().ToArray<float>()).Within(1e-5));
        foreach (var f in factors) f.ZeroGrad();
        (Reference() * up).Sum().Backward();
        for (int i = 0; i < factors.Count; i++)
            Assert.That(factors[i].Grad!.ToArray<float>(), Is.EqualTo(folded[i]).Within(1e-4), $"factor {i}");

        Tensor Reference()
        {
            var y = ((IUnaryModule)baseLayer).Forward(x);
            foreach (var name in new[] { "one", "two" })
            {
                var delta = Tensor.LowRankHadamard(P(layer, $"hada_w1_a.{name}"), P(layer, $"hada_w1_b.{name}"), P(layer, $"hada_w2_a.{name}"),
                    P(layer, $"hada_w2_b.{name}"), layer.Scaling(name));
                y = y + x.Linear(delta);
            }
            return y;
        }
    }

    [Test]
    public void LoHaRankDropoutStillDropsWholeOutputRowsWhenFolded()
    {
        using var scope = Tensor.NewScope();
        var linear = new Linear(6, 40);
        using var layer = new LoHaLayer(linear);
        layer.UpdateLayer("default", 2, 2, rankDropout: 0.5, moduleDropout: 0, initWeights: false);
        layer.ActiveAdapters.Add("default");
        var x = Tensor.Randn([3, 6], 2);
        using var _ = Autograd.NoGrad();
        using var baseOut = linear.Forward(x);
        layer.Train();
        using var change = layer.Forward(x) - baseOut;
        var c = change.ToArray<float>();
        int dropped = Enumerable.Range(0, 40).Count(j => Enumerable.Range(0, 3).All(i => Math.Abs(c[i * 40 + j]) < 1e-6));
        Assert.That(dropped, Is.InRange(8, 32), "about half of the 40 output rows unchanged from the base for every token");
    }

    [TestCase(256, -1, 16, 16)]
    [TestCase(128, -1, 8, 16)]
    [TestCase(127, -1, 1, 127)]
    [TestCase(128, 4, 4, 32)]
    [TestCase(24, -1, 4, 6)]
    [TestCase(24, 5, 4, 6)]
    [TestCase(2, -1, 1, 2)]
    public void LoKrFactorizationMatchesLycoris(int dimension, int factor, int m, int n) =>
        Assert.That(LoKrLayer.Factorization(dimension, factor), Is.EqualTo((m, n)));

    [Test]
    public void LoKrDeltaIsTheScaledKroneckerProductAndTheFactoredForwardEqualsIt()
    {
        using var scope = Tensor.NewScope();
        var linear = new Linear(24, 20);
        using var layer = new LoKrLayer(linear);
        layer.UpdateLayer("default", r: 1, alpha: 3, rankDropout: 0, moduleDropout: 0, rankDropoutScale: false, init: "false", decomposeBoth: true, decomposeFactor: -1);
        layer.ActiveAdapters.Add("default");
        Assert.That(layer.KroneckerShape("default"), Is.EqualTo((4, 5, 4, 6)), "out 20 = 4·5, in 24 = 4·6");
        Assert.That(layer.Decomposed("default"), Is.EqualTo((true, true)), "r = 1 < 4/2 and < 6/2");
        using var w1 = P(layer, "lokr_w1_a.default").MatMul(P(layer, "lokr_w1_b.default"));
        using var w2 = P(layer, "lokr_w2_a.default").MatMul(P(layer, "lokr_w2_b.default"));
        var a1 = w1.ToArray<float>();
        var a2 = w2.ToArray<float>();
        var delta = layer.DeltaWeight("default").ToArray<float>();
        for (int i = 0; i < 4; i++) for (int k = 0; k < 5; k++) for (int j = 0; j < 4; j++) for (int l = 0; l < 6; l++)
            Assert.That(delta[(i * 5 + k) * 24 + j * 6 + l], Is.EqualTo(a1[i * 4 + j] * a2[k * 6 + l] * 3.0).Within(1e-6));

        // Forward takes W1·X·W2ᵀ per token and never forms the product; it must equal base + x·ΔWᵀ.
        layer.Eval();
        var x = Tensor.Randn([2, 3, 24], 5);
        using var y = layer.Forward(x);
        using var dw = layer.DeltaWeight("default");
        using var expected = linear.Forward(x) + x.Linear(dw);
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 3, 20 }));
        Assert.That(y.ToArray<float>(), Is.EqualTo(expected.ToArray<float>()).Within(1e-5));
    }

    [Test]
    public void LoKrFactoredForwardGivesTheSameGradientsAsTheMaterialisedKroneckerProduct()
    {
        using var scope = Tensor.NewScope();
        using var layer = new LoKrLayer(new Linear(12, 10));
        layer.UpdateLayer("default", r: 1, alpha: 2, rankDropout: 0, moduleDropout: 0, rankDropoutScale: false, init: "false", decomposeBoth: false, decomposeFactor: -1);
        layer.ActiveAdapters.Add("default");
        layer.RequiresGrad(false);
        var factors = layer.NamedParameters().Where(p => p.Name.StartsWith("lokr_")).Select(p => p.Parameter).ToList();
        foreach (var f in factors) f.RequiresGrad = true;
        layer.ToDType(DType.F64);
        factors = layer.NamedParameters().Where(p => p.Name.StartsWith("lokr_")).Select(p => p.Parameter).ToList();
        var x = Tensor.Randn([5, 12], 3, DType.F64);
        var weights = Tensor.Randn([5, 10], 4, DType.F64);
        (layer.Forward(x) * weights).Sum().Backward();
        var factored = factors.Select(f => f.Grad!.ToArray<double>()).ToList();
        layer.ZeroGrad();
        // The same loss through the materialised ΔW (the autograd path of PEFT's F.linear(x, ΔW)).
        var w1 = P(layer, "lokr_w1.default");
        var w2 = P(layer, "lokr_w2_a.default").MatMul(P(layer, "lokr_w2_b.default"));
        var dense = (Tensor.Kron(w1, w2) * 2.0);
        (x.Linear(dense) * weights).Sum().Backward();
        for (int i = 0; i < factors.Count; i++)
            Assert.That(factors[i].Grad!.ToArray<double>(), Is.EqualTo(factored[i]).Within(1e-10), $"factor {i}");
    }

    [Test]
    public void ModuleDropoutOfOneSkipsTheAdapterInTrainingOnly()
    {
        using var scope = Tensor.NewScope();
        var linear = new Linear(6, 4);
        using var layer = new LoHaLayer(linear);
        layer.UpdateLayer("default", 2, 2, rankDropout: 0, moduleDropout: 1.0, initWeights: false);
        layer.ActiveAdapters.Add("default");
        var x = Tensor.Randn([3, 6], 2);
        using var baseOut = linear.Forward(x);
        using (Autograd.NoGrad())
        {
            layer.Train();
            Assert.That(layer.Forward(x).ToArray<float>(), Is.EqualTo(baseOut.ToArray<float>()));
            layer.Eval();
            Assert.That(layer.Forward(x).ToArray<float>(), Is.Not.EqualTo(baseOut.ToArray<float>()));
        }
    }

    [Test]
    public void RankDropoutZeroesWholeOutputRowsOfTheDeltaInTraining()
    {
        using var scope = Tensor.NewScope();
        var linear = new Linear(6, 40);
        using var layer = new LoKrLayer(linear);
        layer.UpdateLayer("default", 2, 2, rankDropout: 0.5, moduleDropout: 0, rankDropoutScale: true, init: "false", decomposeBoth: false, decomposeFactor: -1);
        layer.ActiveAdapters.Add("default");
        var x = Tensor.Randn([3, 6], 2);
        using var _ = Autograd.NoGrad();
        using var baseOut = linear.Forward(x);
        layer.Train();
        using var trained = layer.Forward(x);
        using var change = trained - baseOut;
        var c = change.ToArray<float>();
        int dropped = Enumerable.Range(0, 40).Count(j => Enumerable.Range(0, 3).All(i => c[i * 40 + j] == 0));
        Assert.That(dropped, Is.InRange(8, 32), "about half of the 40 output rows dropped for every token");
        layer.Eval();
        using var eval = layer.Forward(x);
        using var full = eval - baseOut;
        var kept = Enumerable.Range(0, 40).Where(j => c[j] != 0).ToList();
        double ratio = c[kept[0]] / full.ToArray<float>()[kept[0]];
        Assert.That(ratio, Is.EqualTo(40.0 / kept.Count).Within(1e-4), "kept rows are divided by the kept fraction (rank_dropout_scale)");
    }

    [Test]
    public void AdaptersAreSavedUnderPeftsKeysAndPythonConfigsLoad()
    {
        var dir = Directory.CreateTempSubdirectory("peft-lycoris-").FullName;
        try
        {
            using (var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoHaConfig { R = 2, TargetModules = ["q_proj"] }))
                peft.SavePretrained(Path.Combine(dir, "loha"));
            using (var st = SafeTensorsFile.Open(Path.Combine(dir, "loha", "adapter_model.safetensors")))
                Assert.That(st.Tensors.Select(t => t.Name).Where(n => n.Contains("layers.0.")), Is.EquivalentTo(new[]
                {
                    "base_model.model.model.layers.0.self_attn.q_proj.hada_w1_a", "base_model.model.model.layers.0.self_attn.q_proj.hada_w1_b",
                    "base_model.model.model.layers.0.self_attn.q_proj.hada_w2_a", "base_model.model.model.layers.0.self_attn.q_proj.hada_w2_b",
                }));
            using (var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoKrConfig { R = 1, TargetModules = ["q_proj"], DecomposeBoth = true }))
                peft.SavePretrained(Path.Combine(dir, "lokr"));
            using (var st = SafeTensorsFile.Open(Path.Combine(dir, "lokr", "adapter_model.safetensors")))
                Assert.That(st.Tensors.Select(t => t.Name).Where(n => n.Contains("layers.0.")).Select(n => n[(n.LastIndexOf('.') + 1)..]),
                    Is.EquivalentTo(new[] { "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b" }), "16 = 4·4: r = 1 < 4/2 splits both");

            // A config as Python peft writes it (extra fields, init_weights "lycoris") loads as the right type.
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), """
                {"peft_type": "LOKR", "r": 4, "alpha": 16, "decompose_both": true, "decompose_factor": 8, "init_weights": "lycoris",
                 "rank_dropout_scale": true, "target_modules": ["q_proj", "v_proj"], "peft_version": "0.20.1.dev0", "use_effective_conv2d": false}
                """);
            var cfg = (LoKrConfig)PeftConfig.Load(dir);
            Assert.That((cfg.R, cfg.Alpha, cfg.DecomposeBoth, cfg.DecomposeFactor, cfg.InitWeights, cfg.RankDropoutScale), Is.EqualTo((4, 16.0, true, 8, "lycoris", true)));
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), """{"peft_type": "LOHA", "r": 0}""");
            Assert.That(Assert.Throws<PeftConfigException>(() => PeftConfig.Load(dir))!.Message, Does.Contain("r must be positive"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MethodsCannotBeMixedInOnePeftModelAndEmbeddingsAreRefused()
    {
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new LoHaConfig { R = 2, TargetModules = ["q_proj"] });
        Assert.That(Assert.Throws<ArgumentException>(() => peft.AddAdapter("x", new LoraConfig { TargetModules = ["v_proj"] }))!.Message, Does.Contain("one PeftModel holds one method"));
        peft.AddAdapter("second", new LoHaConfig { R = 3, TargetModules = ["v_proj"] });
        Assert.That(peft.PeftConfigs.Keys, Is.EquivalentTo(new[] { "default", "second" }));
        var ex = Assert.Throws<NotSupportedException>(() => PeftModel.Create(Cases.Create(Cases.Llama), new LoKrConfig { TargetModules = ["embed_tokens"] }));
        Assert.That(ex!.Message, Does.Contain("model.embed_tokens").And.Contain("Embedding"));
    }
}
