using Peft.Core.Random;
using Peft.TestSupport;

namespace Peft.Tests.Device;

/// <summary>
/// The device paths of Tensor's front-ends and of the models, on <see cref="EmulatedDevice"/> (host memory that
/// reports itself as cuda:0): the same results as on the CPU, gradients included, with every kernel call routed to the
/// device — so a routing or autograd bug in a device branch fails here, on every machine, before a GPU ever runs it.
/// </summary>
[TestFixture, NonParallelizable]
public class DevicePathTests
{
    private EmulatedDevice _device = null!;
    private IDisposable _registration = null!;

    [SetUp]
    public void Install() => (_device, _registration) = EmulatedDevice.Install();

    [TearDown]
    public void Uninstall() => _registration.Dispose();

    private static readonly Peft.Core.Device Dev = EmulatedDevice.Target;

    /// <summary>‖device − cpu‖/‖cpu‖ of <paramref name="op"/> run on CPU inputs and on their device copies.</summary>
    private static double Versus(Func<Tensor[], Tensor> op, params Tensor[] inputs)
    {
        using var want = op(inputs);
        var moved = inputs.Select(t => t.To(Dev)).ToArray();
        try
        {
            using var got = op(moved);
            Assert.That(got.Device, Is.EqualTo(Dev), "the result stays on the device");
            Assert.That(got.Shape, Is.EqualTo(want.Shape));
            return DeviceParity.RelativeError(got.ToDoubleArray(), want.ToDoubleArray());
        }
        finally
        {
            foreach (var t in moved) t.Dispose();
        }
    }

    private static Tensor R(int[] shape, ulong seed, double std = 1) => Tensor.Randn(shape, new Generator(seed), std: std);

    /// <summary>The gradient of Σ f(inputs)⊙weights with respect to input <paramref name="i"/> (weights: the last input).</summary>
    private static Tensor GradOf(Tensor[] t, Func<Tensor[], Tensor> f, int i)
    {
        var leaves = t[..^1].Select(v => v.Clone().RequiresGradient()).ToArray();
        try
        {
            using var y = f(leaves);
            using var weighted = y.Mul(t[^1]);
            using var loss = weighted.Sum();
            loss.Backward();
            return leaves[i].Grad!.Clone();
        }
        finally
        {
            foreach (var l in leaves) l.Dispose();
        }
    }

    [Test]
    public void ElementwiseReductionsAndMatMulsTakeTheDevicePath()
    {
        using var a = R([4, 1, 33], 1);
        using var b = R([5, 33], 2);
        using var m = R([6, 33, 7], 3);
        using var up = R([4, 5, 7], 4);
        using var m4 = m.Narrow(0, 0, 4).Contiguous();
        Assert.Multiple(() =>
        {
            Assert.That(Versus(t => t[0].Add(t[1]).Mul(t[0]).Sub(t[1].Exp()).Div(t[1].Abs().Add(1)), a, b), Is.LessThanOrEqualTo(1e-7), "broadcast arithmetic");
            Assert.That(Versus(t => t[0].Gelu(true).Tanh().Clamp(-0.5, 0.5).Pow(2.0), a), Is.LessThanOrEqualTo(1e-7), "unary chain");
            Assert.That(Versus(t => t[0].Sum([0, 2]), m), Is.LessThanOrEqualTo(1e-6), "sum");
            Assert.That(Versus(t => t[0].Max(1, keepDim: true), m), Is.EqualTo(0), "max");
            Assert.That(Versus(t => t[0].Permute(2, 0, 1).Contiguous(), m), Is.EqualTo(0), "strided copy");
            Assert.That(Versus(t => t[0].MatMul(t[1]), R([4, 5, 33], 5), m4), Is.LessThanOrEqualTo(1e-6), "batched matmul");
            Assert.That(Versus(t => GradOf(t, l => l[0].Add(l[1]).MatMul(l[2]), 2), a, b, m4, up), Is.LessThanOrEqualTo(1e-6), "matmul gradient through a broadcast add");
            Assert.That(Versus(t => GradOf(t, l => l[0].Add(l[1]).MatMul(l[2]), 0), a, b, m4, up), Is.LessThanOrEqualTo(1e-6), "gradient summed back to a broadcast shape");
        });
        Assert.That(_device.Calls.Keys, Is.SupersetOf(new[] { "Binary", "Unary", "Reduce", "MatMul", "Copy" }));
    }

    [Test]
    public void FusedOpsAndTheirBackwardsTakeTheDevicePath()
    {
        using var x = R([3, 7, 40], 11, std: 2);
        using var w = R([40], 12);
        using var bias = R([40], 13);
        using var up = R([3, 7, 40], 14);
        using var targets = Tensor.FromArray(new long[] { 1, 39, -100, 5, 0, 7, 7, 2, 3, -100, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21 }, [3, 7]);
        Assert.Multiple(() =>
        {
            Assert.That(Versus(t => t[0].Softmax(1), x), Is.LessThanOrEqualTo(1e-6), "softmax over a middle dim");
            Assert.That(Versus(t => GradOf(t, l => l[0].LogSoftmax(), 0), x, up), Is.LessThanOrEqualTo(1e-6), "log-softmax backward");
            Assert.That(Versus(t => GradOf(t, l => l[0].Softmax(), 0), x, up), Is.LessThanOrEqualTo(1e-6), "softmax backward");
            for (int i = 0; i < 3; i++)
                Assert.That(Versus(t => GradOf(t, l => l[0].LayerNorm(l[1], l[2]), i), x, w, bias, up), Is.LessThanOrEqualTo(1e-5), $"layer norm gradient {i}");
            Assert.That(Versus(t => GradOf(t, l => l[0].RmsNorm(l[1]), 1), x, w, up), Is.LessThanOrEqualTo(1e-5), "rms norm weight gradient");
            Assert.That(Versus(t => t[0].CrossEntropy(targets, labelSmoothing: 0.1), x), Is.LessThanOrEqualTo(1e-6), "cross-entropy (ignored targets, smoothing)");
            Assert.That(Versus(t =>
            {
                using var leaf = t[0].Clone().RequiresGradient();
                using var targetsHere = targets.To(t[0].Device);
                using var loss = leaf.CrossEntropy(targetsHere, reduction: Reduction.Sum);
                loss.Backward();
                return leaf.Grad!.Clone();
            }, x), Is.LessThanOrEqualTo(1e-6), "cross-entropy gradient, targets on the device");
        });
        Assert.That(_device.Calls.Keys, Is.SupersetOf(new[] { "Softmax", "SoftmaxBackward", "Norm", "NormBackward", "CrossEntropy", "CrossEntropyBackward" }));
    }

    [Test]
    public void IndexingMaskingJoiningAndDropoutTakeTheDevicePath()
    {
        using var table = R([10, 6], 21);
        using var ids = Tensor.FromArray(new long[] { 3, 3, 9, 0, 3 }, [5]);
        using var up = R([5, 6], 22);
        using var scores = R([2, 4, 4], 23);
        using var x = R([3, 8], 24);
        Assert.Multiple(() =>
        {
            Assert.That(Versus(t => GradOf(t, l => l[0].Embedding(ids), 0), table, up), Is.EqualTo(0), "embedding backward adds repeated ids");
            Assert.That(Versus(t => t[0].Tril(), scores), Is.EqualTo(0), "a host mask applied on the device");
            Assert.That(Versus(t => GradOf(t, l => l[0].MaskedFill(Tensor.TriangleMask(4, 4, 0, lower: true), -1e9).Softmax(), 0), scores, scores), Is.LessThanOrEqualTo(1e-6), "masked softmax gradient");
            Assert.That(Versus(t => Tensor.Cat([t[0], t[0].Mul(2.0)], 1), x), Is.EqualTo(0), "cat");
            Assert.That(Versus(t => { Generator.Default.ManualSeed(3); return t[0].Dropout(0.5); }, x), Is.EqualTo(0), "dropout draws the CPU's mask");
        });
        Assert.That(_device.Calls.Keys, Is.SupersetOf(new[] { "IndexSelect", "IndexAdd", "Where", "DropoutMask" }));
    }

    [TestCase(2, 3, 5, 5, 16, false, false)]
    [TestCase(2, 3, 7, 7, 72, true, false)]     // D not a multiple of 32, causal
    [TestCase(2, 2, 3, 9, 64, true, true)]      // a KV cache's past: Tq < Tk, causal offset 6, padding
    [TestCase(1, 2, 40, 40, 8, true, true)]     // several key tiles
    public void FusedAttentionOnTheDeviceIsTheCompositeOnTheCpu(int b, int h, int tq, int tk, int d, bool causal, bool padded)
    {
        using var q = R([b, h, tq, d], 61);
        using var k = R([b, h, tk, d], 62);
        using var v = R([b, h, tk, d], 63);
        using var up = R([b, h, tq, d], 64);
        // Key-padding mask [B, 1, 1, Tk] built on the host, as the models build it; sample 0 hides its first two keys.
        using var mask = padded ? Tensor.FromArray(Enumerable.Range(0, b * tk).Select(i => (byte)(i < 2 ? 0 : 1)).ToArray(), [b, 1, 1, tk]) : null;
        Func<Tensor[], Tensor> attend = t => Tensor.ScaledDotProductAttention(t[0], t[1], t[2], mask, isCausal: causal);
        Assert.Multiple(() =>
        {
            Assert.That(Versus(attend, q, k, v), Is.LessThanOrEqualTo(1e-6), "output");
            for (int i = 0; i < 3; i++)
                Assert.That(Versus(t => GradOf(t, attend, i), q, k, v, up), Is.LessThanOrEqualTo(1e-5), $"gradient of input {i}");
        });
        Assert.That(_device.Calls.GetValueOrDefault("Attention"), Is.GreaterThan(0), "the fused kernel ran");
        Assert.That(_device.Calls.GetValueOrDefault("AttentionBackward"), Is.GreaterThan(0));
        Assert.That(_device.Calls.GetValueOrDefault("Softmax"), Is.EqualTo(0), "no score matrix was made");
    }

    [Test]
    public void FusedAttentionUnderAutocastIsTorchsFusedSixteenBitAttention()
    {
        // Under BF16 autocast the device keeps the fused kernel: q, k, v rounded to BF16, F32 inside, a BF16 output —
        // what the CPU computes under autocast too (its composite in F32 on the rounded inputs), gradients included.
        using var q = R([2, 2, 9, 16], 71);
        using var k = R([2, 2, 9, 16], 72);
        using var v = R([2, 2, 9, 16], 73);
        using var up = R([2, 2, 9, 16], 74);
        Tensor Attend(Tensor[] t) { using var _ = Autocast.Enable(DType.BF16); return Tensor.ScaledDotProductAttention(t[0], t[1], t[2], isCausal: true); }
        var moved = new[] { q, k, v }.Select(t => t.To(Dev)).ToArray();
        try
        {
            using var got = Attend(moved);
            Assert.That(got.DType, Is.EqualTo(DType.BF16));
            Assert.That(_device.Calls.GetValueOrDefault("Attention"), Is.GreaterThan(0), "the fused kernel ran under autocast");
            using var qr = q.To(DType.BF16).To(DType.F32);
            using var kr = k.To(DType.BF16).To(DType.F32);
            using var vr = v.To(DType.BF16).To(DType.F32);
            using var exact = Tensor.ScaledDotProductAttention(qr, kr, vr, isCausal: true);
            using var exactRounded = exact.To(DType.BF16);
            Assert.That(DeviceParity.RelativeError(got.ToDoubleArray(), exactRounded.ToDoubleArray()), Is.LessThanOrEqualTo(4e-3), "one BF16 rounding of the F32 result");
        }
        finally
        {
            foreach (var t in moved) t.Dispose();
        }
        Assert.Multiple(() =>
        {
            Assert.That(Versus(Attend, q, k, v), Is.LessThanOrEqualTo(4e-3), "output against the CPU's autocast attention (a BF16 ulp where F32 sums round apart)");
            for (int i = 0; i < 3; i++)
                Assert.That(Versus(t => GradOf(t, Attend, i), q, k, v, up), Is.LessThanOrEqualTo(4e-3), $"gradient of input {i}");
        });
        Assert.That(_device.Calls.GetValueOrDefault("AttentionBackward"), Is.GreaterThan(0));
    }

    [Test]
    public void FusedAttentionWithDropoutDropsTheCompositesElements()
    {
        // Dropout on the probabilities runs inside the fused kernels with the Philox counters the composite's Dropout
        // reserves, so the device drops exactly the CPU's elements (and leaves the generator where the CPU leaves it);
        // the U8 key-padding mask may already be on the device.
        using var q = R([2, 2, 37, 8], 71);
        using var k = R([2, 2, 37, 8], 72);
        using var v = R([2, 2, 37, 8], 73);
        using var up = R([2, 2, 37, 8], 74);
        using var mask = Tensor.FromArray(Enumerable.Range(0, 74).Select(i => (byte)(i % 37 == 0 ? 0 : 1)).ToArray(), [2, 1, 1, 37]);
        var offsets = new List<long>();
        Tensor Attend(Tensor[] t)
        {
            Generator.Default.ManualSeed(5);
            using var m = mask.To(t[0].Device);
            var y = Tensor.ScaledDotProductAttention(t[0], t[1], t[2], m, isCausal: true, dropoutP: 0.3);
            offsets.Add(Generator.Default.Offset);
            return y;
        }
        Assert.Multiple(() =>
        {
            Assert.That(Versus(Attend, q, k, v), Is.LessThanOrEqualTo(1e-6), "output");
            for (int i = 0; i < 3; i++)
                Assert.That(Versus(t => GradOf(t, Attend, i), q, k, v, up), Is.LessThanOrEqualTo(1e-5), $"gradient of input {i}");
        });
        Assert.That(offsets.Distinct().Count(), Is.EqualTo(1), "the fused call reserves the composite's counters");
        Assert.That(_device.Calls.GetValueOrDefault("Attention"), Is.GreaterThan(0), "dropout is fused");
        Assert.That(_device.Calls.GetValueOrDefault("DropoutMask"), Is.EqualTo(0), "no [B, H, T, T] mask was drawn");
    }

    [Test]
    public void ReadingBackAndMixingDevices()
    {
        using var x = R([2, 3], 31);
        using var d = x.To(Dev);
        Assert.That(d.ToArray<float>(), Is.EqualTo(x.ToArray<float>()));
        using (var s = d.Sum()) Assert.That(s.Item(), Is.EqualTo(x.Sum().Item()).Within(1e-6));
        Assert.That(d.ToString(), Is.EqualTo(x.ToString()));
        using var ones = Tensor.OnesLike(d);
        Assert.That(ones.Device, Is.EqualTo(Dev));
        Assert.That(ones.ToArray<float>(), Has.All.EqualTo(1f));
        var e = Assert.Throws<ArgumentException>(() => d.Mul(x))!;
        Assert.That(e.Message, Does.Contain("different devices").And.Contain("Mul"));
        using var two = Tensor.Scalar(2);
        using var doubled = d.Mul(two);
        Assert.That(doubled.Device, Is.EqualTo(Dev), "a CPU 0-dim tensor is moved over, as torch does");
        using var i32 = Tensor.FromArray(new[] { 1, 2 }).To(Dev);
        Assert.That(Assert.Throws<DTypeMismatchException>(() => i32.Exp())!.Message, Does.Contain("F32"));
    }

    [TestCaseSource(typeof(DeviceParity), nameof(DeviceParity.Architectures))]
    public void ModelsMovedToTheDeviceTrainLikeOnTheCpu(string arch)
    {
        using var cpu = DeviceParity.Build(arch);
        using var dev = DeviceParity.Build(arch);
        dev.To(Dev);
        Assert.That(dev.Parameters().All(p => p.Device == Dev), "every parameter moved");
        Assert.That(dev.CountParameters(trainableOnly: true), Is.EqualTo(cpu.CountParameters(trainableOnly: true)));
        var (ids, labels) = DeviceParity.Batch(arch);
        using var _i = ids;
        using var _l = labels;
        var (lossCpu, gradsCpu) = DeviceParity.Step(cpu, ids, labels);
        var (lossDev, gradsDev) = DeviceParity.Step(dev, ids, labels); // host ids: indices are read on the host anyway
        Assert.That(lossDev, Is.EqualTo(lossCpu).Within(1e-6 * Math.Max(1, Math.Abs(lossCpu))));
        Assert.That(gradsDev.Keys, Is.EquivalentTo(gradsCpu.Keys));
        Assert.Multiple(() =>
        {
            foreach (var (name, want) in gradsCpu)
                Assert.That(DeviceParity.GradientError(gradsDev[name], want), Is.LessThanOrEqualTo(1e-5), name);
        });
        var losses = DeviceParity.TrainSide(cpu, dev, Dev, arch, steps: 3);
        foreach (var (c, d) in losses) Assert.That(d, Is.EqualTo(c).Within(1e-5 * Math.Abs(c)));
        Assert.That(dev.Parameters().All(p => p.Device == Dev), "optimizer updates stay on the device");
    }

    [TestCaseSource(typeof(Cases), nameof(Cases.All))]
    public void EveryTunerCaseTrainsOnTheDeviceAsOnTheCpu(PeftCase c)
    {
        using var cpu = Peft.PeftModel.Create(c.Model(), c.Config(true));
        using var dev = Peft.PeftModel.Create(c.Model(), c.Config(true));
        dev.To(Dev);
        using var input = c.Input();
        using var labels = c.Labels();
        using var inputD = input.To(Dev);
        using var labelsD = labels.To(Dev);
        var (lossCpu, gradsCpu) = DeviceParity.Step(cpu, input, labels);
        var (lossDev, gradsDev) = DeviceParity.Step(dev, inputD, labelsD);
        Assert.That(lossDev, Is.EqualTo(lossCpu).Within(1e-5 * Math.Max(1, Math.Abs(lossCpu))));
        Assert.Multiple(() =>
        {
            foreach (var (name, want) in gradsCpu)
                Assert.That(DeviceParity.GradientError(gradsDev[name], want), Is.LessThanOrEqualTo(1e-4), name);
        });
    }

    [TestCaseSource(typeof(PromptLearningTests), "Methods")]
    public void PromptLearningTrainsOnTheDeviceAsOnTheCpu(string json, Func<PromptLearningConfig> make)
    {
        long[] tasks = [0, 1];
        using var cpu = Peft.PeftModel.Create(Cases.Create(json), make());
        using var dev = Peft.PeftModel.Create(Cases.Create(json), make());
        dev.To(Dev);
        using var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6 }, [2, 5]);
        using var idsD = ids.To(Dev);
        var (lossCpu, gradsCpu) = DeviceParity.Step(cpu, ids, ids, tasks);
        var (lossDev, gradsDev) = DeviceParity.Step(dev, idsD, idsD, tasks);
        Assert.That(lossDev, Is.EqualTo(lossCpu).Within(1e-5 * Math.Max(1, Math.Abs(lossCpu))));
        Assert.Multiple(() =>
        {
            foreach (var (name, want) in gradsCpu)
                Assert.That(DeviceParity.GradientError(gradsDev[name], want), Is.LessThanOrEqualTo(1e-4), name);
        });
    }

    [TestCase("gpt2")]
    [TestCase("llama")]
    public void GenerationWithAKvCacheOnTheDevicePicksTheCpusTokens(string arch)
    {
        using var cpu = DeviceParity.Build(arch);
        using var dev = DeviceParity.Build(arch);
        dev.To(Dev);
        using var prompt = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1 }, [2, 3]);
        using var promptD = prompt.To(Dev);
        var options = new Peft.Transformers.GenerationOptions { MaxNewTokens = 6 };
        var want = cpu.Generate(prompt, options);
        var got = dev.Generate(promptD, options);
        Assert.That(got, Is.EqualTo(want));
        Assert.That(want[0], Has.Length.EqualTo(6));
    }

    [TestCaseSource(typeof(Cases), nameof(Cases.All))]
    public void MergingOnTheDeviceKeepsTheOutputAndMatchesTheCpu(PeftCase c)
    {
        using var cpu = Peft.PeftModel.Create(c.Model(), c.Config(true));
        using var dev = Peft.PeftModel.Create(c.Model(), c.Config(true));
        dev.To(Dev);
        cpu.Eval();
        dev.Eval();
        using var input = c.Input();
        using var inputD = input.To(Dev);
        double[] Out(Peft.PeftModel m, Tensor x)
        {
            using var _ = Autograd.NoGrad();
            using var scope = Tensor.NewScope();
            return m.Forward(x).Logits.ToDoubleArray();
        }
        var unmerged = Out(dev, inputD);
        Assert.That(DeviceParity.RelativeError(unmerged, Out(cpu, input)), Is.LessThanOrEqualTo(1e-5), "unmerged, device vs CPU");
        dev.MergeAdapter();
        Assert.That(DeviceParity.RelativeError(Out(dev, inputD), unmerged), Is.LessThanOrEqualTo(1e-5), "merged on the device");
        dev.UnmergeAdapter();
        Assert.That(DeviceParity.RelativeError(Out(dev, inputD), unmerged), Is.LessThanOrEqualTo(1e-5), "unmerged again");
        Assert.That(dev.Parameters().All(p => p.Device == Dev), "merging keeps every weight on the device");
    }

    [TestCaseSource(typeof(DeviceParity), nameof(DeviceParity.QuantizedBases))]
    public void QuantizedBasesTrainAndMergeOnTheDeviceAsOnTheCpu(string kind)
    {
        using var cpu = DeviceParity.BuildQuantized(kind);
        using var dev = DeviceParity.BuildQuantized(kind);
        dev.To(Dev);
        Assert.That(dev.NamedBuffers().All(b => b.Buffer.Device == Dev), "the quantized codes and statistics moved");
        var (ids, labels) = DeviceParity.Batch("gpt2");
        using var _i = ids;
        using var _l = labels;
        var (lossCpu, gradsCpu) = DeviceParity.Step(cpu, ids, labels);
        var (lossDev, gradsDev) = DeviceParity.Step(dev, ids, labels);
        Assert.That(lossDev, Is.EqualTo(lossCpu).Within(1e-6 * Math.Abs(lossCpu)));
        Assert.Multiple(() =>
        {
            foreach (var (name, want) in gradsCpu)
                Assert.That(DeviceParity.GradientError(gradsDev[name], want), Is.LessThanOrEqualTo(1e-5), name);
        });
        string dequant = kind.StartsWith("int8", StringComparison.Ordinal) ? "DequantizeInt8" : "DequantizeNf4";
        Assert.That(_device.Calls.GetValueOrDefault(dequant), Is.GreaterThan(0), "the weights dequantized on the device");
        if (kind == "nf4-double-quant") Assert.That(_device.Calls.GetValueOrDefault("DequantizeBlockwise8"), Is.GreaterThan(0));
        if (kind == "int8")
        {
            Assert.That(_device.Calls.GetValueOrDefault("Where"), Is.GreaterThan(0), "the activations quantized on the device");
            Assert.That(_device.Calls.GetValueOrDefault("IndexSelect"), Is.GreaterThan(2), "outlier columns were set aside (the two embeddings take 2 selections)");
        }
        foreach (var (c, d) in DeviceParity.TrainSide(cpu, dev, Dev, "gpt2", steps: 2)) Assert.That(d, Is.EqualTo(c).Within(1e-5 * Math.Abs(c)));

        // Merging into a quantized base (dequantize, add ΔW, requantize) on the device gives the CPU's merged model.
        cpu.Eval();
        dev.Eval();
        double[] Out(Peft.PeftModel m, Tensor x)
        {
            using var _ = Autograd.NoGrad();
            using var scope = Tensor.NewScope();
            return m.Forward(x).Logits.ToDoubleArray();
        }
        cpu.MergeAdapter();
        dev.MergeAdapter();
        Assert.That(DeviceParity.RelativeError(Out(dev, ids), Out(cpu, ids)), Is.LessThanOrEqualTo(1e-5), "merged on the device vs the CPU");
        Assert.That(dev.NamedBuffers().All(b => b.Buffer.Device == Dev), "requantized buffers stay on the device");
    }

    [TestCaseSource(typeof(MixedBatchTests), "Methods")]
    public void MixedAdapterBatchesOnTheDeviceAreTheCpus(TunerConfig first, TunerConfig second)
    {
        // The per-sample row masks are built on the host and must follow the activations to the device.
        PeftModel Make()
        {
            var m = PeftModel.Create(Cases.Create(Cases.Bert, Peft.Transformers.ModelTask.SequenceClassification), first);
            m.AddAdapter("other", second);
            m.Eval();
            return m;
        }
        using var cpu = Make();
        using var dev = Make();
        dev.To(Dev);
        using var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6, 11, 13 }, [3, 4]);
        using var idsD = ids.To(Dev);
        string[] names = ["other", PeftModel.BaseAdapterName, "default"];
        using var _ = Autograd.NoGrad();
        using var scope = Tensor.NewScope();
        var want = cpu.Forward(ids, adapterNames: names).Logits.ToDoubleArray();
        var got = dev.Forward(idsD, adapterNames: names).Logits;
        Assert.That(got.Device, Is.EqualTo(Dev));
        Assert.That(DeviceParity.RelativeError(got.ToDoubleArray(), want), Is.LessThanOrEqualTo(1e-5));
        if (first is LoraConfig)   // LoRA's device path is one SGMV op per layer; the CPU keeps its per-adapter products
            Assert.That(_device.Calls.GetValueOrDefault("SegmentedLora"), Is.GreaterThan(0));
    }

    [TestCase("loha")]
    [TestCase("lokr")]
    public void LycorisRankAndModuleDropoutTrainOnTheDeviceAsOnTheCpu(string method)
    {
        // Rank dropout draws its row mask on the host (the CPU generator's stream) and applies it where ΔW is.
        TunerConfig Config() => method == "loha"
            ? new LoHaConfig { R = 4, TargetModules = ["query", "value"], TaskType = "SEQ_CLS", InitWeights = false, RankDropout = 0.4, ModuleDropout = 0.3 }
            : new LoKrConfig { R = 2, TargetModules = ["query", "value"], TaskType = "SEQ_CLS", InitWeights = "false", RankDropout = 0.4, ModuleDropout = 0.3, RankDropoutScale = true };
        using var cpu = PeftModel.Create(Cases.Create(Cases.Bert, Peft.Transformers.ModelTask.SequenceClassification), Config());
        using var dev = PeftModel.Create(Cases.Create(Cases.Bert, Peft.Transformers.ModelTask.SequenceClassification), Config());
        dev.To(Dev);
        using var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1, 5, 2, 8, 6, 11, 13 }, [3, 4]);
        using var labels = Tensor.FromArray(new long[] { 1, 0, 1 });
        using var idsD = ids.To(Dev);
        using var labelsD = labels.To(Dev);
        var (lossCpu, gradsCpu) = DeviceParity.Step(cpu, ids, labels);
        var (lossDev, gradsDev) = DeviceParity.Step(dev, idsD, labelsD);
        Assert.That(lossDev, Is.EqualTo(lossCpu).Within(1e-6 * Math.Abs(lossCpu)));
        Assert.That(gradsDev.Keys, Is.EquivalentTo(gradsCpu.Keys), "the same adapters skipped by module dropout");
        Assert.That(gradsCpu.Keys.Count(k => k.Contains(method == "loha" ? "hada_" : "lokr_")), Is.GreaterThan(0), "some adapter ran");
        if (method == "loha")
        {
            Assert.That(_device.Calls.GetValueOrDefault("LowRankHadamard"), Is.GreaterThan(0), "ΔW built by the fused kernel");
            Assert.That(_device.Calls.GetValueOrDefault("LowRankHadamardBackward"), Is.GreaterThan(0));
        }
        Assert.Multiple(() =>
        {
            foreach (var (name, want) in gradsCpu)
                Assert.That(DeviceParity.GradientError(gradsDev[name], want), Is.LessThanOrEqualTo(1e-5), name);
        });
    }

    [Test]
    public void AdaLoraResizedByARankPatternStaysOnTheDevice()
    {
        // A loaded rank_pattern may prune a layer to no triplet at all: its empty factors are made on the device too.
        var config = new AdaLoraConfig { InitR = 4, TargetR = 2, Tinit = 1, Tfinal = 2, TotalStep = 10, TargetModules = ["q_proj", "v_proj"], TaskType = "CAUSAL_LM", InitLoraWeights = false };
        PeftModel Make() => PeftModel.Create(Cases.Create(Cases.Llama), config);
        using var cpu = Make();
        using var dev = Make();
        dev.To(Dev);
        int layerIndex = 0;
        foreach (var m in new[] { cpu, dev })
        {
            layerIndex = 0;
            foreach (var layer in m.Model.NamedModules().Select(x => x.Module).OfType<AdaLoraLayer>())
                layer.ResizeTo("default", layerIndex++ == 0 ? [false, false, false, false] : [true, false, true, false]);
        }
        Assert.That(layerIndex, Is.GreaterThan(1));
        Assert.That(dev.Parameters().All(p => p.Device == Dev), "resized factors on the device");
        cpu.Eval();
        dev.Eval();
        using var ids = Tensor.FromArray(new long[] { 3, 9, 4, 12, 7, 1 }, [1, 6]);
        using var idsD = ids.To(Dev);
        using var _ = Autograd.NoGrad();
        using var scope = Tensor.NewScope();
        Assert.That(DeviceParity.RelativeError(dev.Forward(idsD).Logits.ToDoubleArray(), cpu.Forward(ids).Logits.ToDoubleArray()), Is.LessThanOrEqualTo(1e-5));
    }

    [TestCase(0.0)]
    [TestCase(0.01)]
    public void TheFusedAdamWStepEqualsTheTensorOpStepBitForBit(double weightDecay)
    {
        // The device runs AdamW as one fused kernel (here: its contract, element by element); the CPU as tensor ops.
        using var p0 = R([1000, 3], 41, std: 0.5);
        using var cpu = p0.Clone().RequiresGradient();
        using var dev = p0.To(Dev).RequiresGradient();
        var optCpu = new Peft.Nn.AdamW([cpu], lr: 1e-2, weightDecay: weightDecay);
        var optDev = new Peft.Nn.AdamW([dev], lr: 1e-2, weightDecay: weightDecay);
        for (int step = 0; step < 4; step++)
        {
            using var g = R([1000, 3], 50 + (ulong)step);
            cpu.Grad?.Dispose();
            dev.Grad?.Dispose();
            cpu.Grad = g.Clone().KeepAlive();
            dev.Grad = g.To(Dev).KeepAlive();
            optCpu.Step();
            optDev.Step();
        }
        Assert.That(_device.Calls.GetValueOrDefault("AdamW"), Is.EqualTo(4), "one fused call per step");
        Assert.That(dev.ToArray<float>(), Is.EqualTo(cpu.ToArray<float>()));
    }

    [Test]
    public void TheMultiTensorAdamWStepsAGroupInOneCallBitForBit()
    {
        // A group of three parameters (one BF16, stepped through its F32 master) in one call per step; a one-parameter
        // group keeps the per-tensor kernel. Both against the CPU's tensor ops.
        var shapes = new[] { new[] { 1000, 3 }, new[] { 7 }, new[] { 50, 101 }, new[] { 9, 4 } };
        var initial = shapes.Select((s, i) => R(s, 60 + (ulong)i, std: 0.5)).ToArray();
        var cpu = initial.Select(t => t.Clone().RequiresGradient()).ToArray();
        var dev = initial.Select(t => t.To(Dev).RequiresGradient()).ToArray();
        cpu[1] = cpu[1].To(DType.BF16).RequiresGradient();
        dev[1] = dev[1].To(DType.BF16).RequiresGradient();
        Peft.Nn.AdamW Make(Tensor[] p) => new([new Peft.Nn.ParamGroup(p[..3], lr: 1e-2, weightDecay: 0.01), new Peft.Nn.ParamGroup([p[3]], lr: 3e-3)]);
        var optCpu = Make(cpu);
        var optDev = Make(dev);
        try
        {
            for (int step = 0; step < 3; step++)
            {
                for (int i = 0; i < shapes.Length; i++)
                {
                    using var g = R(shapes[i], 70 + (ulong)(step * 10 + i));
                    using var gc = g.To(cpu[i].DType);
                    cpu[i].Grad?.Dispose();
                    dev[i].Grad?.Dispose();
                    cpu[i].Grad = gc.Clone().KeepAlive();
                    dev[i].Grad = gc.To(Dev).KeepAlive();
                }
                optCpu.Step();
                optDev.Step();
            }
            Assert.That(_device.Calls.GetValueOrDefault("AdamWMulti"), Is.EqualTo(3), "the three-parameter group: one call per step");
            for (int i = 0; i < shapes.Length; i++)
                Assert.That(dev[i].ToDoubleArray(), Is.EqualTo(cpu[i].ToDoubleArray()), $"parameter {i}");
        }
        finally
        {
            optCpu.Dispose();
            optDev.Dispose();
            foreach (var t in initial.Concat(cpu).Concat(dev)) t.Dispose();
        }
    }
}
