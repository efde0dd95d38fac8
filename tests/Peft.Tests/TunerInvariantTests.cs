using Peft.Core.SafeTensors;
using Peft.Transformers;

namespace Peft.Tests;

/// <summary>PEFT's property checks, run over every row of <see cref="Cases"/> (every method, model and config).</summary>
[TestFixture]
public class TunerInvariantTests
{
    public static IEnumerable<PeftCase> All() => Cases.All();

    private static double RelErr(float[] a, float[] b)
    {
        double n = 0, d = 0;
        for (int i = 0; i < a.Length; i++) { n += Math.Pow(a[i] - b[i], 2); d += (double)b[i] * b[i]; }
        return Math.Sqrt(n / d);
    }

    private static double Norm(Tensor t) => Math.Sqrt(t.ToFloatArray().Sum(v => (double)v * v));

    private static float[] Run(PeftModel p, Tensor x)
    {
        using var _ = Autograd.NoGrad();
        using var s = Tensor.NewScope();
        return p.Forward(x).Logits.ToFloatArray();
    }

    /// <summary>The base model's logits, in eval mode (it stays in eval mode for the adapter wrapped around it).</summary>
    private static float[] BaseOutput(PreTrainedModel model, Tensor x)
    {
        model.Eval();
        using var _ = Autograd.NoGrad();
        using var s = Tensor.NewScope();
        return model.Forward(x).Logits.ToFloatArray();
    }

    [TestCaseSource(nameof(All))]
    public void DefaultInitIsExactlyTheBaseModel(PeftCase c)
    {
        using var scope = Tensor.NewScope();
        var model = c.Model();
        var x = c.Input();
        var baseOut = BaseOutput(model, x);
        using var peft = PeftModel.Create(model, c.Config(false));
        Assert.That(Run(peft, x), Is.EqualTo(baseOut), "the default init (LoRA B = 0, LoHa W2b = 0, LoKr W1 = 0, ...) starts as the base");
    }

    /// <summary>(IA)³ unmerges by dividing by l + 1e-8 (PEFT's guard against zero, which it warns is inexact): a
    /// relative error up to 1e-8 / min|l| on top of rounding. Other methods subtract exactly what they added.</summary>
    private static double UnmergeSlack(TunerLayer layer) =>
        layer is IA3Layer ? 2e-8 / layer.NamedParameters().Where(p => p.Name.StartsWith("ia3_l.")).Min(p => p.Parameter.ToFloatArray().Min(v => Math.Abs((double)v))) : 0;

    [TestCaseSource(nameof(All))]
    public void MergedEqualsUnmergedAndUnmergeRestoresTheBase(PeftCase c)
    {
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(c.Model(), c.Config(true));
        peft.Eval();
        var x = c.Input();
        var unmerged = Run(peft, x);
        float[] baseOut;
        using (peft.DisableAdapter()) baseOut = Run(peft, x);
        Assert.That(RelErr(unmerged, baseOut), Is.GreaterThan(1e-4), "a non-trivial adapter changes the output");
        var weightsBefore = peft.Model.StateDict().Where(kv => kv.Key.Contains("base_layer")).ToDictionary(kv => kv.Key, kv => kv.Value.ToFloatArray());
        // Float32 (W + ΔW) − ΔW is exact only up to rounding of |W + ΔW|: normalise by ‖W‖ + ‖ΔW‖ (the values rounded).
        var deltaNorms = peft.Model.NamedModules().Where(m => m.Module is TunerLayer).ToDictionary(
            m => m.Name + ".base_layer.weight", m => Math.Sqrt(((TunerLayer)m.Module).DeltaWeight("default").ToFloatArray().Sum(v => (double)v * v)));

        peft.MergeAdapter();
        Assert.That(RelErr(Run(peft, x), unmerged), Is.LessThanOrEqualTo(1e-5));
        peft.MergeAdapter();
        Assert.That(RelErr(Run(peft, x), unmerged), Is.LessThanOrEqualTo(1e-5), "merging twice changes nothing");
        peft.UnmergeAdapter();
        Assert.That(RelErr(Run(peft, x), unmerged), Is.LessThanOrEqualTo(1e-5));
        foreach (var (k, w) in weightsBefore)
        {
            double wNorm = Math.Sqrt(w.Sum(v => (double)v * v));
            double scale = (wNorm + deltaNorms.GetValueOrDefault(k)) / wNorm;
            var layer = (TunerLayer)peft.Model.GetSubmodule(k[..k.IndexOf(".base_layer.", StringComparison.Ordinal)]);
            Assert.That(RelErr(peft.Model.StateDict()[k].ToFloatArray(), w), Is.LessThanOrEqualTo(1e-6 * scale + UnmergeSlack(layer)), k);
        }

        var merged = peft.MergeAndUnload(safeMerge: true);
        using (merged)
        {
            Assert.That(merged.NamedModules().Any(m => m.Module is TunerLayer || m.Module is ModulesToSaveWrapper), Is.False);
            using var _ = Autograd.NoGrad();
            Assert.That(RelErr(merged.Forward(x).Logits.ToFloatArray(), unmerged), Is.LessThanOrEqualTo(1e-5));
        }
    }

    [TestCaseSource(nameof(All))]
    public void DisabledEqualsTheBaseModelExactlyEvenWhenMerged(PeftCase c)
    {
        using var scope = Tensor.NewScope();
        var model = c.Model();
        var x = c.Input();
        var baseOut = BaseOutput(model, x);
        using var peft = PeftModel.Create(model, c.Config(true));
        var adapted = Run(peft, x);
        using (peft.DisableAdapter()) Assert.That(Run(peft, x), Is.EqualTo(baseOut));
        Assert.That(Run(peft, x), Is.EqualTo(adapted), "leaving the scope restores the adapter");
        // Disabling a merged adapter unmerges it; float32 restores W only up to rounding of |W + ΔW|.
        double ratio = peft.Model.NamedModules().Where(m => m.Module is TunerLayer).Select(m =>
        {
            var l = (TunerLayer)m.Module;
            using var d = l.DeltaWeight("default");
            return Norm(d) / Norm(l.BaseLayer.Parameter("weight"));
        }).Max();
        peft.MergeAdapter();
        double slack = peft.Model.NamedModules().Where(m => m.Module is TunerLayer).Sum(m => UnmergeSlack((TunerLayer)m.Module));
        using (peft.DisableAdapter()) Assert.That(RelErr(Run(peft, x), baseOut), Is.LessThanOrEqualTo(1e-6 * (1 + ratio) + 10 * slack));
    }

    [TestCaseSource(nameof(All))]
    public void SaveThenLoadGivesIdenticalOutputsAndByteIdenticalFiles(PeftCase c)
    {
        var dir = Directory.CreateTempSubdirectory("peft-save-").FullName;
        try
        {
            using var scope = Tensor.NewScope();
            var x = c.Input();
            float[] expected;
            using (var peft = PeftModel.Create(c.Model(), c.Config(true)))
            {
                peft.Eval();
                expected = Run(peft, x);
                peft.SavePretrained(dir);
            }
            Assert.That(Directory.GetFiles(dir).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { "adapter_config.json", "adapter_model.safetensors" }));
            using (var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            {
                // Everything lives under the wrapped model except the projections VeRA shares across layers.
                Assert.That(st.Tensors.Select(t => t.Name).Where(n => n is not ("base_model.vera_A" or "base_model.vera_B")), Has.All.StartWith("base_model.model."));
                Assert.That(st.Tensors.Select(t => t.Name), Has.None.Contains(".default"));
                Assert.That(st.Metadata["format"], Is.EqualTo("pt"));
            }
            var again = Path.Combine(dir, "again");
            using (var loaded = PeftModel.FromPretrained(c.Model(), dir))
            {
                loaded.Eval();
                Assert.That(Run(loaded, x), Is.EqualTo(expected));
                Assert.That(loaded.GetNbTrainableParameters().Trainable, Is.EqualTo(0), "a loaded adapter is frozen unless isTrainable");
                loaded.SavePretrained(again);
            }
            foreach (var f in new[] { "adapter_config.json", "adapter_model.safetensors" })
                Assert.That(File.ReadAllBytes(Path.Combine(again, f)), Is.EqualTo(File.ReadAllBytes(Path.Combine(dir, f))), f);
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestCaseSource(nameof(All))]
    public void OnlyAdapterParametersGetGradientsAndTrainingLowersTheLoss(PeftCase c)
    {
        using var peft = PeftModel.Create(c.Model(), c.Config(true));
        var x = c.Input();
        var labels = c.Labels();
        var cfg = (TunerConfig)peft.PeftConfigs["default"];
        bool biasAll = cfg is LoraConfig { Bias: "all" };
        bool biasOfAdapted = cfg is VeraConfig { Bias: "vera_only" } or BoftConfig { Bias: "boft_only" };
        var (first, last) = TrainingProbe.Run(peft, 8, () => peft.Forward(x, labels: labels).Loss!, TrainingProbe.Sgd(peft, 0.1), () =>
            TrainingProbe.OnlyTheseHaveGradients(peft, name => name.Contains("." + cfg.Prefix) || name.Contains(".modules_to_save.")
                || (biasAll && name.EndsWith(".bias") && !name.Contains("original_module")) || (biasOfAdapted && name.EndsWith(".base_layer.bias"))));
        Assert.That(last, Is.LessThan(first), "SGD on the adapter lowers the loss");
    }

    [TestCaseSource(nameof(All))]
    public void ASecondAdapterCanBeActivatedAndDeletedLeavingTheFirstAsItWas(PeftCase c)
    {
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(c.Model(), c.Config(true));
        peft.Eval();
        var x = c.Input();
        var first = Run(peft, x);
        var keysBefore = peft.StateDict().Keys.Order(StringComparer.Ordinal).ToList();
        var second = c.Config(true);
        second.InferenceMode = second is AdaLoraConfig;   // PEFT allows one trainable AdaLoRA adapter
        peft.AddAdapter("second", second);
        Assert.That(Run(peft, x), Is.EqualTo(first), "a new adapter is not active until SetAdapter");
        peft.SetAdapter("second");
        Assert.That(RelErr(Run(peft, x), first), Is.GreaterThan(1e-6), "the second (random) adapter changes the output");
        peft.SetAdapter("default");
        peft.DeleteAdapter("second");
        Assert.That(peft.StateDict().Keys.Order(StringComparer.Ordinal), Is.EqualTo(keysBefore), "nothing of 'second' is left");
        Assert.That(Run(peft, x), Is.EqualTo(first));
        Assert.Throws<KeyNotFoundException>(() => peft.DeleteAdapter("second"));
    }

    /// <summary>Each method's trainable-parameter count per adapted layer, written from PEFT's shapes.</summary>
    private static long AdapterParameters(TunerLayer layer) => layer switch
    {
        LoraLinear d when d.UsesDora("default") => d.Rank("default") * (long)(d.InFeatures + d.OutFeatures) + d.OutFeatures,
        LoraLayer l => l.Rank("default") * (long)(l.InFeatures + l.OutFeatures),
        LoHaLayer h => 2L * h.Rank("default") * (h.InFeatures + h.OutFeatures),
        LoKrLayer k => LoKrParameters(k),
        IA3Layer i => i.IsFeedforward ? i.InFeatures : i.OutFeatures,
        VeraLayer v => v.OutFeatures + v.Rank("default"),
        OftLayer o => OftParameters(o.Rotation("default")),
        AdaLoraLayer a => a.Rank("default") * (long)(a.InFeatures + a.OutFeatures + 1),
        BoftLayer b => BoftParameters(b),
        _ => throw new NotSupportedException(layer.GetType().Name),
    };

    private static long OftParameters(OftRotation r) => (r.BlockShare ? 1 : r.Blocks) * (long)(r.BlockSize * (r.BlockSize - 1) / 2);

    private static long BoftParameters(BoftLayer b)
    {
        var (size, blocks, factors) = b.Shape("default");
        return factors * (long)blocks * size * size + b.OutFeatures;
    }

    private static long LoKrParameters(LoKrLayer k)
    {
        var (a, b, c, d) = k.KroneckerShape("default");
        var (split1, split2) = k.Decomposed("default");
        int r = k.Rank("default");
        return (split1 ? r * (long)(a + c) : a * (long)c) + (split2 ? r * (long)(b + d) : b * (long)d);
    }

    [TestCaseSource(nameof(All))]
    public void TrainableCountsFollowEachMethodsFormula(PeftCase c)
    {
        using var peft = PeftModel.Create(c.Model(), c.Config(true));
        long expected = 0;
        foreach (var (name, m) in peft.Model.NamedModules())
        {
            if (m is TunerLayer l) expected += AdapterParameters(l);
            if (m is ModulesToSaveWrapper w) expected += w.Original.CountParameters();
        }
        if (peft.PeftConfigs["default"] is VeraConfig { Bias: "vera_only" } or BoftConfig { Bias: "boft_only" })
            expected += peft.NamedParameters().Where(p => p.Name.EndsWith(".base_layer.bias")).Sum(p => p.Parameter.NumEl);
        if (peft.PeftConfigs["default"] is LoraConfig { Bias: "all" })
            expected += peft.NamedParameters().Where(p => p.Name.EndsWith(".bias") && !p.Name.Contains(".lora_") && !p.Name.Contains("modules_to_save") && !p.Name.Contains("original_module")).Sum(p => p.Parameter.NumEl);
        var (trainable, all) = peft.GetNbTrainableParameters();
        Assert.That(trainable, Is.EqualTo(expected));
        Assert.That(peft.TrainableParametersLine(), Does.Match(@"^trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}$"));
        Assert.That(all, Is.EqualTo(peft.Parameters().Sum(p => p.NumEl)));
    }
}
