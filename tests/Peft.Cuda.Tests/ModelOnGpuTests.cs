using Peft.TestSupport;

namespace Peft.Cuda.Tests;

/// <summary>
/// Whole models on the GPU through the ordinary API — <c>model.To(Device.Cuda(0))</c>, a forward with labels,
/// <c>Backward()</c>, AdamW — against the same seeded model on the CPU (<see cref="DeviceParity"/>): the loss, every
/// LoRA gradient and the losses of a few optimizer steps agree within float32 tolerance (dropout masks come from the
/// same Philox stream on both).
/// </summary>
public class ModelOnGpuTests : GpuTest
{
    [TestCaseSource(typeof(DeviceParity), nameof(DeviceParity.Architectures))]
    public void LoraLossAndGradientsMatchTheCpu(string arch)
    {
        using var cpu = DeviceParity.Build(arch);
        using var gpu = DeviceParity.Build(arch);
        gpu.To(Gpu.Device);
        Assert.That(gpu.Parameters().All(p => p.Device == Gpu.Device), "every parameter moved");
        var ((lossCpu, gradsCpu), (lossGpu, gradsGpu)) = DeviceParity.StepBoth(cpu, gpu, Gpu.Device, arch);
        Assert.That(lossGpu, Is.EqualTo(lossCpu).Within(1e-5 * Math.Max(1, Math.Abs(lossCpu))), "loss");
        Assert.That(gradsGpu.Keys, Is.EquivalentTo(gradsCpu.Keys));
        Assert.That(gradsCpu, Has.Count.GreaterThan(4));
        Assert.Multiple(() =>
        {
            foreach (var (name, want) in gradsCpu)
                Assert.That(DeviceParity.GradientError(gradsGpu[name], want), Is.LessThanOrEqualTo(1e-4), name);
        });
    }

    [TestCaseSource(typeof(DeviceParity), nameof(DeviceParity.QuantizedBases))]
    public void QLoraOnTheGpuMatchesTheCpu(string kind)
    {
        // Codes and statistics on the GPU, dequantized there by kernels/dequant.cu every forward and backward. The
        // LLM.int8 activation codes are rounded from the GPU's own activations: a value a rounding away from a .5
        // changes one code by 1, hence the wider tolerance for that case.
        double tolerance = kind == "int8" ? 1e-3 : 1e-4;
        using var cpu = DeviceParity.BuildQuantized(kind);
        using var gpu = DeviceParity.BuildQuantized(kind);
        gpu.To(Gpu.Device);
        Assert.That(gpu.NamedBuffers().All(b => b.Buffer.Device == Gpu.Device), "quantized buffers moved");
        var ((lossCpu, gradsCpu), (lossGpu, gradsGpu)) = DeviceParity.StepBoth(cpu, gpu, Gpu.Device, "gpt2");
        Assert.That(lossGpu, Is.EqualTo(lossCpu).Within(tolerance * Math.Abs(lossCpu)), "loss");
        Assert.Multiple(() =>
        {
            foreach (var (name, want) in gradsCpu)
                Assert.That(DeviceParity.GradientError(gradsGpu[name], want), Is.LessThanOrEqualTo(10 * tolerance), name);
        });
        var losses = DeviceParity.TrainSide(cpu, gpu, Gpu.Device, "gpt2", steps: 3);
        foreach (var (c, g) in losses) Assert.That(g, Is.EqualTo(c).Within(tolerance * Math.Abs(c)));
        cpu.Eval();
        gpu.Eval();
        cpu.MergeAdapter();
        gpu.MergeAdapter();
        using var _ = Autograd.NoGrad();
        var (ids, labels) = DeviceParity.Batch("gpt2");
        using var _i = ids;
        using var _l = labels;
        using var idsD = ids.To(Gpu.Device);
        using var a = cpu.Forward(ids).Logits;
        using var b = gpu.Forward(idsD).Logits;
        Assert.That(RelativeError(b.ToFloatArray(), a.ToDoubleArray()), Is.LessThanOrEqualTo(10 * tolerance), "merged into the quantized base");
    }

    [Test]
    public void AdamWStepsOnTheGpuFollowTheCpu()
    {
        using var cpu = DeviceParity.Build("gpt2");
        using var gpu = DeviceParity.Build("gpt2");
        gpu.To(Gpu.Device);
        var losses = DeviceParity.TrainSide(cpu, gpu, Gpu.Device, "gpt2", steps: 5);
        TestContext.Out.WriteLine(string.Join("; ", losses.Select(l => $"{l.Cpu:F6}/{l.Device:F6}")));
        Assert.That(losses[^1].Cpu, Is.LessThan(losses[0].Cpu), "the adapter trains");
        foreach (var (c, g) in losses) Assert.That(g, Is.EqualTo(c).Within(1e-4 * Math.Abs(c)));
        Assert.That(gpu.Parameters().Where(p => p.RequiresGrad).All(p => p.Device == Gpu.Device), "optimizer updates stay on the GPU");
    }

    [Test]
    public void InferenceLogitsOnTheGpuMatchTheCpu()
    {
        using var cpu = DeviceParity.Build("llama");
        using var gpu = DeviceParity.Build("llama");
        gpu.To(Gpu.Device);
        cpu.Eval();
        gpu.Eval();
        using var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12 }, [1, 4]);
        using var _ = Autograd.NoGrad();
        using var a = cpu.Forward(ids).Logits;
        using var idsD = ids.To(Gpu.Device);
        using var b = gpu.Forward(idsD).Logits;
        Assert.That(b.Device, Is.EqualTo(Gpu.Device));
        Assert.That(RelativeError(b.ToFloatArray(), a.ToDoubleArray()), Is.LessThanOrEqualTo(1e-5));
    }

    [Test]
    public void AMixedAdapterBatchOnTheGpuMatchesTheCpu()
    {
        // Three LoRA adapters of different ranks and the base, one per sample: on the GPU every adapted layer runs the
        // batch as one SGMV pair (kernels/sgmv.cu); the CPU runs each adapter on its own rows.
        PeftModel Make()
        {
            var m = DeviceParity.Build("llama");
            m.AddAdapter("two", new LoraConfig { R = 8, LoraAlpha = 4, TargetModules = ["q_proj", "v_proj", "down_proj"], TaskType = "CAUSAL_LM", InitLoraWeights = "false" });
            m.AddAdapter("three", new LoraConfig { R = 12, LoraAlpha = 24, TargetModules = ["all-linear"], TaskType = "CAUSAL_LM", InitLoraWeights = "false", UseRslora = true });
            m.Eval();
            return m;
        }
        using var cpu = Make();
        using var gpu = Make();
        gpu.To(Gpu.Device);
        using var ids = Tensor.FromArray(Enumerable.Range(0, 4 * 7).Select(i => (long)(i * 7 % 31 + 1)).ToArray(), [4, 7]);
        string[] names = ["three", PeftModel.BaseAdapterName, "default", "two"];
        using var _ = Autograd.NoGrad();
        using var a = cpu.Forward(ids, adapterNames: names).Logits;
        using var idsD = ids.To(Gpu.Device);
        using var b = gpu.Forward(idsD, adapterNames: names).Logits;
        Assert.That(b.Device, Is.EqualTo(Gpu.Device));
        Assert.That(RelativeError(b.ToFloatArray(), a.ToDoubleArray()), Is.LessThanOrEqualTo(1e-5));
    }
}
