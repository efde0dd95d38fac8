using Peft.Core.SafeTensors;
using Peft.Transformers;

namespace Peft.Tests;

/// <summary>AdaLoRA's regulariser, budget schedule and rank allocation, and the rank_pattern file round trip.</summary>
[TestFixture]
public class AdaLoraTests
{
    private static readonly Tensor Ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6 }, [2, 5]).KeepAlive();

    [Test]
    public void TheOrthogonalityRegulariserIsAddedToTheTrainingLoss()
    {
        using var scope = Tensor.NewScope();
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new AdaLoraConfig { InitR = 3, TotalStep = 10, TargetModules = ["q_proj"], InitLoraWeights = false, OrthRegWeight = 0.25 });
        using var _ = Autograd.NoGrad();
        double withReg = peft.Forward(Ids, labels: Ids).Loss!.Item();
        double plain = peft.Model.Forward(Ids, labels: Ids).Loss!.Item();
        double expected = 0;
        int count = 0;
        foreach (var (_, m) in peft.Model.NamedModules())
        {
            if (m is not AdaLoraLayer l) continue;
            foreach (var (mat, left) in new[] { (l.A("default"), true), (l.B("default"), false) })
            {
                var cov = left ? mat.MatMul(mat.Transpose(0, 1)) : mat.Transpose(0, 1).MatMul(mat);
                var c = cov.ToArray<float>();
                int n = cov.Shape[0];
                expected += Math.Sqrt(Enumerable.Range(0, n * n).Sum(i => Math.Pow(c[i] - (i / n == i % n ? 1 : 0), 2)));
                count++;
            }
        }
        Assert.That(withReg - plain, Is.EqualTo(0.25 * expected / count).Within(1e-4 * withReg));
    }

    [Test]
    public void TheBudgetFallsOnPeftsCubicScheduleAndMasksEveryDeltaTSteps()
    {
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new AdaLoraConfig
        {
            InitR = 6, TargetR = 2, Tinit = 2, Tfinal = 3, DeltaT = 2, TotalStep = 15, TargetModules = ["q_proj", "v_proj"],
        });
        var allocator = (RankAllocator)typeof(PeftModel).GetField("_rankAllocator", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(peft)!;
        Assert.That((allocator.InitialBudget, allocator.TargetBudget), Is.EqualTo((24, 8)), "4 layers × init_r 6 → 4 × target_r 2");
        Assert.That(allocator.BudgetSchedule(2), Is.EqualTo((24, false)), "warm-up");
        // Step 6: 1 − (6 − 2)/(15 − 3 − 2) = 0.6; (24 − 8)·0.216 + 8 = 11.456 → 11; 6 % 2 = 0 → mask.
        Assert.That(allocator.BudgetSchedule(6), Is.EqualTo((11, true)));
        Assert.That(allocator.BudgetSchedule(7).Mask, Is.False);
        Assert.That(allocator.BudgetSchedule(13), Is.EqualTo((8, true)), "final phase");
    }

    [Test]
    public void TrainingAllocatesTheTargetBudgetAndTheSlicedAdapterReloadsExactly()
    {
        var dir = Directory.CreateTempSubdirectory("peft-adalora-").FullName;
        try
        {
            using var scope = Tensor.NewScope();
            var config = new AdaLoraConfig { InitR = 4, TargetR = 2, Tinit = 1, Tfinal = 2, TotalStep = 10, TargetModules = ["q_proj", "v_proj"], TaskType = "CAUSAL_LM" };
            float[] expected;
            Dictionary<string, bool[]> pattern;
            using (var peft = PeftModel.Create(Cases.Create(Cases.Llama), config))
            {
                var trainable = peft.Parameters().Where(p => p.RequiresGrad).ToList();
                for (int step = 0; step < 10; step++)
                {
                    using var s = Tensor.NewScope();
                    peft.ZeroGrad();
                    peft.Forward(Ids, labels: Ids).Loss!.Backward();
                    using (Autograd.NoGrad()) foreach (var p in trainable) p.AddInPlace(p.Grad!, -0.05);
                    peft.UpdateAndAllocate(step);
                }
                pattern = ((AdaLoraConfig)peft.PeftConfigs["default"]).RankPattern!;
                Assert.That(pattern.Keys, Has.Count.EqualTo(4).And.All.EndWith(".lora_E"));
                Assert.That(pattern.Values.Sum(k => k.Count(b => b)), Is.EqualTo(8), "target_r 2 × 4 layers survive");
                foreach (var (key, keep) in pattern)
                {
                    var layer = (AdaLoraLayer)peft.Model.GetSubmodule(key[..^".lora_E".Length]);
                    var e = layer.E("default").ToFloatArray();
                    Assert.That(Enumerable.Range(0, 4).Where(i => !keep[i]).Select(i => e[i]), Has.All.EqualTo(0f), "masked triplets have Λ = 0");
                }
                peft.Eval();
                using (Autograd.NoGrad()) expected = peft.Forward(Ids).Logits.ToFloatArray();
                peft.SavePretrained(dir);
            }
            using (var st = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            {
                var key = pattern.Keys.First();
                int kept = pattern[key].Count(b => b);
                var prefix = "base_model.model." + key[..^".lora_E".Length];
                Assert.That(st.Info(prefix + ".lora_A").Shape, Is.EqualTo(new[] { kept, 16 }));
                Assert.That(st.Info(prefix + ".lora_E").Shape, Is.EqualTo(new[] { kept, 1 }));
                Assert.That(st.Info(prefix + ".lora_B").Shape[1], Is.EqualTo(kept));
                Assert.That(st.Tensors.Select(t => t.Name), Has.None.Contains("ranknum"));
            }
            Assert.That(File.ReadAllText(Path.Combine(dir, "adapter_config.json")), Does.Contain("\"rank_pattern\": {"));
            using (var loaded = PeftModel.FromPretrained(Cases.Create(Cases.Llama), dir))
            {
                loaded.Eval();
                using var _ = Autograd.NoGrad();
                Assert.That(loaded.Forward(Ids).Logits.ToFloatArray(), Is.EqualTo(expected).Within(1e-5), "the pruned adapter reloads with the same scaling");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void ConfigsWithoutATrainingScheduleAreRefused()
    {
        Assert.That(Assert.Throws<InvalidOperationException>(() => new AdaLoraConfig { TargetModules = ["q_proj"] }.Validate())!.Message, Does.Contain("total_step"));
        Assert.That(Assert.Throws<InvalidOperationException>(() => new AdaLoraConfig { TotalStep = 10, Tinit = 8, Tfinal = 2 }.Validate())!.Message, Does.Contain("budgeting phase"));
        using var peft = PeftModel.Create(Cases.Create(Cases.Llama), new AdaLoraConfig { TotalStep = 10, TargetModules = ["q_proj"] });
        Assert.That(Assert.Throws<ArgumentException>(() => peft.AddAdapter("second", new AdaLoraConfig { TotalStep = 10, TargetModules = ["v_proj"] }))!.Message, Does.Contain("one trainable adapter"));
    }
}
