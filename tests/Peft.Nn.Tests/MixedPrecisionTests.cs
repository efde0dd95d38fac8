using Peft.Core.Random;
using Peft.Nn;

namespace Peft.Nn.Tests;

/// <summary>GradScaler's arithmetic, F32 master weights for 16-bit parameters, and the Trainer in BF16 / F16.</summary>
[TestFixture]
public class MixedPrecisionTests
{
    private static List<(Tensor X, Tensor Y)> Data(int batches, int size) => Enumerable.Range(0, batches).Select(i =>
        (Tensor.Randn([size, 6], (ulong)(300 + i)).KeepAlive(), Tensor.FromArray(Enumerable.Range(0, size).Select(j => (long)((i + 2 * j) % 3)).ToArray()).KeepAlive())).ToList();

    /// <summary>One backward of Σ p·c scaled by <paramref name="lossScale"/>: the gradient is c·scale.</summary>
    private static void Backward(Tensor p, float[] c, double lossScale)
    {
        using var scope = Tensor.NewScope();
        using var ct = Tensor.FromArray(c, [c.Length]);
        p.Mul(ct).Sum().Mul(lossScale).Backward();
    }

    [Test]
    public void GradScalerUnscalesSkipsOnOverflowBacksOffAndGrows()
    {
        using var p = Tensor.FromArray(new float[] { 1, 2 }).RequiresGradient();
        using var opt = new Sgd([p], lr: 0.5);
        var scaler = new GradScaler(initScale: 8, growthInterval: 2);
        var trace = new List<(double Scale, bool Stepped, float P0)>();
        float[][] grads = [[1, 1], [2, 0], [float.PositiveInfinity, 1], [0.5f, 0.5f], [1, 0], [1, 1]];
        foreach (var g in grads)
        {
            opt.ZeroGrad();
            Backward(p, g, scaler.Scale);
            scaler.Unscale(opt);
            if (!scaler.FoundInf) Assert.That(p.Grad!.ToFloatArray(), Is.EqualTo(g), "unscaled: the true gradient");
            bool stepped = scaler.Step(opt);
            scaler.Update();
            trace.Add((scaler.Scale, stepped, p.ToFloatArray()[0]));
        }
        // 8 → (1 clean) 8 → (2 clean) 16 → inf: skip, 8 → 8 → 16 → 16.
        Assert.That(trace.Select(t => t.Scale), Is.EqualTo(new[] { 8.0, 16, 8, 8, 16, 16 }));
        Assert.That(trace.Select(t => t.Stepped), Is.EqualTo(new[] { true, true, false, true, true, true }));
        Assert.That(trace.Select(t => t.P0), Is.EqualTo(new[] { 0.5f, -0.5f, -0.5f, -0.75f, -1.25f, -1.75f }), "p ← p − 0.5·g, untouched on the skipped step");
        Assert.Throws<InvalidOperationException>(() => scaler.Update(), "Update needs a step first");
        Assert.Throws<ArgumentException>(() => new GradScaler(initScale: 0));
    }

    [Test]
    public void SixteenBitParametersKeepAnF32MasterSoSmallStepsAccumulate()
    {
        // 1 + 1e-3 is 1 in bfloat16 (its spacing at 1 is 2^-7): a plain BF16 update would never move.
        using var p = Tensor.FromArray(new float[] { 1, 1 }).To(DType.BF16).RequiresGradient();
        using var opt = new Sgd([p], lr: 1e-3);
        for (int i = 0; i < 10; i++) { opt.ZeroGrad(); Backward(p, [-1, 1], 1); opt.Step(); }
        Assert.That(p.DType, Is.EqualTo(DType.BF16));
        Assert.That(p.ToFloatArray(), Is.EqualTo(new[] { BFloat16.FromSingle(1.01f).ToSingle(), BFloat16.FromSingle(0.99f).ToSingle() }), "the master moved by 10 × 1e-3 and the parameter follows it");
        var state = opt.StateDict();
        Assert.That(state.ContainsKey("master.0") && state["master.0"].DType == DType.F32);
        Assert.That(state["master.0"].ToFloatArray()[0], Is.EqualTo(1.01f).Within(1e-6));
    }

    [Test]
    public void AdamWOnABf16ParameterIsAdamWOnItsF32MasterRounded()
    {
        var start = new float[] { 0.5f, -1.25f, 3f, 0.0078125f };
        float[] c = [0.25f, -2f, 1.5f, 0.125f];          // bf16-exact, so both runs see the same gradient
        using var p16 = Tensor.FromArray(start).To(DType.BF16).RequiresGradient();
        using var p32 = Tensor.FromArray(start).RequiresGradient();
        using var opt16 = new AdamW([p16], lr: 1e-3, weightDecay: 0.01);
        using var opt32 = new AdamW([p32], lr: 1e-3, weightDecay: 0.01);
        for (int i = 0; i < 5; i++)
        {
            opt16.ZeroGrad(); Backward(p16, c, 1); opt16.Step();
            opt32.ZeroGrad(); Backward(p32, c, 1); opt32.Step();
        }
        Assert.That(p16.ToFloatArray(), Is.EqualTo(p32.ToFloatArray().Select(v => BFloat16.FromSingle(v).ToSingle()).ToArray()));
        using var reloaded = new AdamW([p16], lr: 1e-3, weightDecay: 0.01);
        reloaded.LoadStateDict(opt16.StateDict());
        reloaded.ZeroGrad(); Backward(p16, c, 1); reloaded.Step();
        opt32.ZeroGrad(); Backward(p32, c, 1); opt32.Step();
        Assert.That(p16.ToFloatArray(), Is.EqualTo(p32.ToFloatArray().Select(v => BFloat16.FromSingle(v).ToSingle()).ToArray()), "the master travels in the state dict");
    }

    private static (List<double> Losses, Trainer<(Tensor X, Tensor Y)> Trainer) Train(DType? precision, int epochs = 8, GradScaler? scaler = null, TrainerOptions? options = null)
    {
        var net = new DropoutNet(dropout: 0);
        var opt = new AdamW(net.Parameters(), lr: 2e-2);
        var trainer = new Trainer<(Tensor X, Tensor Y)>(net, opt, net.Loss, options ?? new TrainerOptions { Epochs = epochs, MixedPrecision = precision, Seed = 3 });
        if (scaler != null) trainer.Scaler = scaler;
        trainer.Train(Data(6, 8));
        return (trainer.StepLosses, trainer);
    }

    [TestCase(DType.BF16, 0.05)]
    [TestCase(DType.F16, 0.01)]
    public void MixedPrecisionTrainingFollowsTheF32LossCurve(DType precision, double tolerance)
    {
        var (f32, _) = Train(null);
        var (low, trainer) = Train(precision);
        Assert.That(low[^1], Is.LessThan(low[0] * 0.8), "it learns");
        double worst = f32.Zip(low, (a, b) => Math.Abs(a - b) / a).Max();
        TestContext.Out.WriteLine($"{precision}: first loss {low[0]:F4} (F32 {f32[0]:F4}), last {low[^1]:F4} (F32 {f32[^1]:F4}), worst relative gap {worst:E2}");
        Assert.That(worst, Is.LessThan(tolerance), "within the low precision's noise of the F32 run");
        Assert.That(trainer.Scaler != null, Is.EqualTo(precision == DType.F16), "loss scaling comes with F16 only");
        Assert.That(trainer.SkippedSteps, Is.EqualTo(0));
    }

    [Test]
    public void AnOverflowingF16LossScaleSkipsStepsAndBacksOffUntilItFits()
    {
        var (losses, trainer) = Train(DType.F16, epochs: 16, scaler: new GradScaler(initScale: Math.Pow(2, 40)));
        TestContext.Out.WriteLine($"{trainer.SkippedSteps} of {trainer.GlobalStep} steps skipped; final scale 2^{Math.Log2(trainer.Scaler!.Scale)}");
        Assert.That(trainer.SkippedSteps, Is.InRange(10, 40), "2^40 × the gradient overflows F16 until the scale has halved enough");
        Assert.That(trainer.Scaler!.Scale, Is.LessThan(Math.Pow(2, 40)));
        Assert.That(losses[^1], Is.LessThan(losses[0] * 0.8), "it still learns once the scale fits");
    }

    [Test]
    public void F16ResumeRestoresTheLossScaleBitIdentically()
    {
        var dir = Directory.CreateTempSubdirectory("peft-amp-").FullName;
        try
        {
            var options = new TrainerOptions { Epochs = 3, MixedPrecision = DType.F16, Seed = 5, CheckpointDir = dir, CheckpointEvery = 7 };
            var (losses, straight) = Train(DType.F16, scaler: new GradScaler(initScale: Math.Pow(2, 30), growthInterval: 3), options: options);
            var net = new DropoutNet(dropout: 0);
            using var opt = new AdamW(net.Parameters(), lr: 2e-2);
            var resumed = new Trainer<(Tensor X, Tensor Y)>(net, opt, net.Loss, options with { CheckpointDir = null }) { Scaler = new GradScaler(initScale: 1, growthInterval: 3) };
            resumed.Resume(Path.Combine(dir, "checkpoint-7"));
            resumed.Train(Data(6, 8));
            Assert.That(resumed.StepLosses, Is.EqualTo(losses.Skip(7).ToList()));
            Assert.That((resumed.Scaler!.Scale, resumed.SkippedSteps), Is.EqualTo((straight.Scaler!.Scale, straight.SkippedSteps)));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void StoringFrozenWeightsInBf16HalvesThemAndKeepsTiedAndTrainableOnesF32()
    {
        using var model = new TiedLm();
        model.RequiresGrad(false);
        var head = model.Head;
        head.Weight.RequiresGrad = false;
        using var x = Tensor.FromArray(new long[] { 1, 4, 2 }, [1, 3]);
        float[] Out() { using var _ = Autograd.NoGrad(); using var y = model.Forward(x); return y.ToFloatArray(); }
        var before = Out();
        long saved = MixedPrecision.StoreFrozenWeights(model, DType.BF16);
        Assert.That(saved, Is.EqualTo(16 * 16 * 2), "the frozen 16×16 projection: 2 bytes per weight");
        Assert.That(model.Proj.Weight.DType, Is.EqualTo(DType.BF16));
        Assert.That(model.Proj.Bias!.DType, Is.EqualTo(DType.F32), "biases stay F32");
        Assert.That(model.Embed.Weight.DType, Is.EqualTo(DType.F32), "the head's weight is the embedding table: it stays F32");
        var after = Out();
        double n = 0, d = 0;
        for (int i = 0; i < after.Length; i++) { n += Math.Pow(after[i] - before[i], 2); d += before[i] * before[i]; }
        Assert.That(Math.Sqrt(n / d), Is.LessThan(1e-2).And.GreaterThan(0));
        Assert.Throws<ArgumentException>(() => MixedPrecision.StoreFrozenWeights(model, DType.F64));
    }

    /// <summary>Embedding → Linear → Linear head tied to the embedding.</summary>
    private sealed class TiedLm : Module
    {
        public TiedLm()
        {
            RegisterModule("embed", new Embedding(10, 16, generator: new Generator(1)));
            RegisterModule("proj", new Linear(16, 16, generator: new Generator(2)));
            RegisterModule("head", new Linear(16, 10, bias: false, generator: new Generator(3)));
            Head.SetParameter("weight", Embed.Weight);
        }

        public Embedding Embed => Child<Embedding>("embed");
        public Linear Proj => Child<Linear>("proj");
        public Linear Head => Child<Linear>("head");

        public Tensor Forward(Tensor ids)
        {
            using var e = Embed.Forward(ids);
            using var h = Proj.Forward(e);
            return Head.Forward(h);
        }
    }
}
