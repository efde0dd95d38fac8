using Peft.Nn;

namespace Peft.Tests.Reliability;

/// <summary>
/// Native tensor memory is owned explicitly: after training steps and create/dispose loops the live-allocation
/// counters are back where they started. Steps: PEFT_LEAK_STEPS (default 10,000, the figure).
/// </summary>
[TestFixture]
public class LeakTests
{
    /// <summary>Finalises garbage left by earlier tests before a baseline is taken (never after: the test's own leaks
    /// must stay visible, not be cleaned up by the finalizer).</summary>
    internal static void FlushEarlierGarbage()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    private static int Steps => int.TryParse(Environment.GetEnvironmentVariable("PEFT_LEAK_STEPS"), out int n) ? n : 10_000;

    [Test]
    public void TrainingStepsLeakNoTensorMemory()
    {
        FlushEarlierGarbage();
        long bytes = MemoryStats.LiveBytes, count = MemoryStats.LiveAllocations;
        var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1 }, [1, 6]);
        using (var peft = PeftModel.Create(Cases.Create(Cases.Gpt2), new LoraConfig { R = 4, TargetModules = ["c_attn", "c_fc"], LoraDropout = 0.1, TaskType = "CAUSAL_LM" }))
        using (var opt = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: 1e-3))
        {
            long afterSetup = MemoryStats.LiveBytes;
            for (int step = 0; step < Steps; step++)
            {
                using var scope = Tensor.NewScope();
                opt.ZeroGrad();
                peft.Forward(ids, labels: ids).Loss!.Backward();
                opt.ClipGradNorm(1.0);
                opt.Step();
                if (step == 10) afterSetup = MemoryStats.LiveBytes; // optimizer state and gradients now exist
            }
            opt.ZeroGrad();
            Assert.That(MemoryStats.LiveBytes, Is.LessThanOrEqualTo(afterSetup), "steady state: nothing accumulates per step");
        }
        ids.Dispose();
        Assert.That(MemoryStats.LiveBytes, Is.EqualTo(bytes), $"live bytes after {Steps} steps and disposal");
        Assert.That(MemoryStats.LiveAllocations, Is.EqualTo(count));
    }

    [Test]
    public void CreatingSavingLoadingMergingAndDisposingAdaptersLeaksNothing()
    {
        var dir = Directory.CreateTempSubdirectory("peft-leak-").FullName;
        try
        {
            FlushEarlierGarbage();
        long bytes = MemoryStats.LiveBytes, count = MemoryStats.LiveAllocations;
            var configs = new Func<LoraConfig>[]
            {
                () => new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj"] },
                () => new LoraConfig { R = 4, TargetModules = ["q_proj"], UseDora = true, InitLoraWeights = "false" },
                () => new LoraConfig { R = 2, TargetModules = ["embed_tokens", "down_proj"], InitLoraWeights = "pissa" },
            };
            for (int loop = 0; loop < 20; loop++)
            {
                var make = configs[loop % configs.Length];
                using (var peft = PeftModel.Create(Cases.Create(Cases.Llama), make()))
                {
                    peft.AddAdapter("second", new LoraConfig { R = 2, TargetModules = ["k_proj"] });
                    peft.AddWeightedAdapter(["second"], [0.5], "half", "cat");
                    peft.SavePretrained(dir);
                }
                using (var loaded = PeftModel.FromPretrained(Cases.Create(Cases.Llama), dir))
                using (var merged = loaded.MergeAndUnload()) { }
            }
            Assert.That(MemoryStats.LiveBytes, Is.EqualTo(bytes));
            Assert.That(MemoryStats.LiveAllocations, Is.EqualTo(count));
        }
        finally { Directory.Delete(dir, true); }
    }
}
