using Peft.Core.Random;
using Peft.Nn;

namespace Peft.Nn.Tests;

/// <summary>A small classifier with dropout drawn from the default generator, so checkpoints must carry its state.</summary>
internal sealed class DropoutNet : Module
{
    public DropoutNet(double dropout = 0.3)
    {
        RegisterModule("fc1", new Linear(6, 8, generator: new Generator(21)));
        RegisterModule("drop", new Dropout(dropout));
        RegisterModule("fc2", new Linear(8, 3, generator: new Generator(22)));
    }

    public IUnaryModule Child(string name) => Child<IUnaryModule>(name);

    public Tensor Loss((Tensor X, Tensor Y) batch)
    {
        using var h = Child<IUnaryModule>("fc1").Forward(batch.X);
        using var d = Child<IUnaryModule>("drop").Forward(h);
        using var a = d.Relu();
        using var logits = Child<IUnaryModule>("fc2").Forward(a);
        return logits.CrossEntropy(batch.Y);
    }
}

[TestFixture]
public class TrainerTests
{
    private static List<(Tensor X, Tensor Y)> Data(int batches, int size) => Enumerable.Range(0, batches).Select(i =>
        (Tensor.Randn([size, 6], (ulong)(100 + i)).KeepAlive(), Tensor.FromArray(Enumerable.Range(0, size).Select(j => (long)((i + j) % 3)).ToArray()).KeepAlive())).ToList();

    [Test]
    public void SchedulesFollowTransformersFormulas()
    {
        var linear = LrSchedule.Linear(warmup: 10, total: 110);
        Assert.That(new[] { linear(0), linear(5), linear(10), linear(60), linear(110), linear(200) }, Is.EqualTo(new[] { 0, 0.5, 1, 0.5, 0, 0 }).Within(1e-12));
        var cosine = LrSchedule.Cosine(warmup: 10, total: 110);
        Assert.That(new[] { cosine(5), cosine(10), cosine(60), cosine(110) }, Is.EqualTo(new[] { 0.5, 1, 0.5, 0 }).Within(1e-12));
        Assert.That(cosine(35), Is.EqualTo(0.5 * (1 + Math.Cos(Math.PI * 0.25))).Within(1e-12));
        Assert.That(LrSchedule.ConstantWithWarmup(4)(2), Is.EqualTo(0.5));
        Assert.That(LrSchedule.Constant()(1000), Is.EqualTo(1));
        Assert.Throws<ArgumentException>(() => LrSchedule.ByName("polynomial", 0, 10));

        using var p = Tensor.Zeros([2]).RequiresGradient();
        using var opt = new Sgd([new ParamGroup([p], lr: 0.1)]);
        var scheduler = new LrScheduler(opt, LrSchedule.Linear(2, 4));
        var lrs = new List<double> { opt.Groups[0].Lr };
        for (int i = 0; i < 4; i++) { scheduler.Step(); lrs.Add(opt.Groups[0].Lr); }
        Assert.That(lrs, Is.EqualTo(new[] { 0, 0.05, 0.1, 0.05, 0 }).Within(1e-12), "torch's LambdaLR: step 0 applied at construction");
    }

    [Test]
    public void AccumulatingFourMicroBatchesEqualsOneBatchOfFour()
    {
        var micro = Data(4, 1);
        var x = Tensor.Cat(micro.Select(m => m.X).ToList(), 0);
        var y = Tensor.Cat(micro.Select(m => m.Y).ToList(), 0);
        float[] Run(IReadOnlyList<(Tensor X, Tensor Y)> data, int accum)
        {
            var net = new DropoutNet(dropout: 0);   // the two runs must compute the same function
            using var opt = new Sgd(net.Parameters(), lr: 0.5);
            new Trainer<(Tensor X, Tensor Y)>(net, opt, net.Loss, new TrainerOptions { GradientAccumulationSteps = accum, Shuffle = false }).Train(data);
            return net.Parameters().SelectMany(p => p.ToFloatArray()).ToArray();
        }
        Assert.That(Run(micro, 4), Is.EqualTo(Run([(x, y)], 1)).Within(1e-6));
    }

    [Test]
    public void ResumingFromACheckpointContinuesBitIdentically()
    {
        var dir = Directory.CreateTempSubdirectory("peft-trainer-").FullName;
        try
        {
            var data = Data(5, 4);
            var options = new TrainerOptions { Epochs = 3, GradientAccumulationSteps = 2, MaxGradNorm = 1.0, Seed = 7, CheckpointDir = dir, CheckpointEvery = 4 };
            (float[] Params, List<double> Losses) Straight()
            {
                var net = new DropoutNet();
                using var opt = new AdamW(net.Parameters(), lr: 1e-2);
                var trainer = new Trainer<(Tensor X, Tensor Y)>(net, opt, net.Loss, options, new LrScheduler(opt, LrSchedule.Linear(2, 9)));
                trainer.Train(data);
                return (net.Parameters().SelectMany(p => p.ToFloatArray()).ToArray(), trainer.StepLosses);
            }
            var (expected, losses) = Straight();
            Assert.That(losses, Has.Count.EqualTo(9), "3 epochs × ⌈5 / 2⌉ steps");
            Assert.That(Directory.GetDirectories(dir).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { "checkpoint-4", "checkpoint-8" }));

            Generator.Default.ManualSeed(12345);   // a different stream: the checkpoint must restore it
            var resumedNet = new DropoutNet();
            using var resumedOpt = new AdamW(resumedNet.Parameters(), lr: 1e-2);
            var resumed = new Trainer<(Tensor X, Tensor Y)>(resumedNet, resumedOpt, resumedNet.Loss, options with { CheckpointDir = null }, new LrScheduler(resumedOpt, LrSchedule.Linear(2, 9)));
            resumed.Resume(Path.Combine(dir, "checkpoint-4"));
            resumed.Train(data);
            Assert.That(resumed.GlobalStep, Is.EqualTo(9));
            Assert.That(resumed.StepLosses, Is.EqualTo(losses.Skip(4).ToList()), "the same losses after the checkpoint");
            Assert.That(resumedNet.Parameters().SelectMany(p => p.ToFloatArray()).ToArray(), Is.EqualTo(expected), "bit-identical parameters");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MaxStepsStopsEarlyWithTheFullRunsLosses()
    {
        var data = Data(5, 3);
        float[] Params(Module m) => m.Parameters().SelectMany(p => p.ToFloatArray()).ToArray();
        var straightNet = new DropoutNet();
        using var straightOpt = new AdamW(straightNet.Parameters(), lr: 1e-2);
        var straight = new Trainer<(Tensor X, Tensor Y)>(straightNet, straightOpt, straightNet.Loss, new TrainerOptions { Epochs = 2, Seed = 9 });
        straight.Train(data);
        Assert.That(straight.GlobalStep, Is.EqualTo(10));

        var net = new DropoutNet();
        using var opt = new AdamW(net.Parameters(), lr: 1e-2);
        var stopped = new Trainer<(Tensor X, Tensor Y)>(net, opt, net.Loss, new TrainerOptions { Epochs = 2, Seed = 9, MaxSteps = 7 });
        int logs = 0;
        stopped.Logged += _ => logs++;
        stopped.Train(data);
        Assert.That(stopped.GlobalStep, Is.EqualTo(7), "7 steps: all of epoch 1 and 2 of epoch 2");
        Assert.That(logs, Is.EqualTo(1), "the last step is logged even off the LogEvery grid");
        Assert.That(stopped.StepLosses, Is.EqualTo(straight.StepLosses.Take(7).ToList()));
    }

    [Test]
    public void ANonFiniteLossStopsTrainingNamingTheStep()
    {
        var net = new DropoutNet();
        using var opt = new Sgd(net.Parameters(), lr: 0.1);
        var data = Data(3, 2);
        int calls = 0;
        var trainer = new Trainer<(Tensor X, Tensor Y)>(net, opt, b => ++calls == 3 ? Tensor.Scalar(double.NaN) : net.Loss(b), new TrainerOptions { Shuffle = false });
        var ex = Assert.Throws<TrainingDivergedException>(() => trainer.Train(data));
        Assert.That((ex!.Step, double.IsNaN(ex.Loss)), Is.EqualTo((2L, true)));
        Assert.That(ex.Message, Does.Contain("optimizer step 3"));
    }

    [Test]
    public void OptimizerStateRoundTripsThroughItsStateDict()
    {
        using var a = Tensor.Randn([3, 2], 1).RequiresGradient();
        using var b = a.Detach().Clone().RequiresGradient();
        using var optA = new AdamW([a], lr: 0.1);
        using var optB = new AdamW([b], lr: 0.1);
        void StepWith(Tensor p, Optimizer o) { using var s = Tensor.NewScope(); o.ZeroGrad(); p.Mul(p).Sum().Backward(); o.Step(); }
        StepWith(a, optA);
        StepWith(b, optB);
        using var fresh = new AdamW([b], lr: 0.1);
        fresh.LoadStateDict(optB.StateDict());
        StepWith(a, optA);
        StepWith(b, fresh);
        Assert.That(b.ToFloatArray(), Is.EqualTo(a.ToFloatArray()));
        Assert.That(fresh.StepCount, Is.EqualTo(2));
    }
}

/// <summary>A net whose loss overflows once its weight grows: exp(x·w) in the middle of the forward pass.</summary>
internal sealed class OverflowingNet : Module
{
    public OverflowingNet() => RegisterModule("fc", new Linear(6, 3, generator: new Generator(31)));

    public Tensor Loss((Tensor X, Tensor Y) batch)
    {
        using var h = Child<IUnaryModule>("fc").Forward(batch.X);
        using var dropped = h.Dropout(0.5);               // the re-run must draw the same mask
        using var e = dropped.Exp();
        using var logits = e.Log();
        return logits.CrossEntropy(batch.Y);
    }
}

[TestFixture]
public class DivergenceDiagnosisTests
{
    [Test]
    public void ADivergedLossNamesTheFirstOpThatProducedTheNonFiniteValue()
    {
        var net = new OverflowingNet();
        using (Autograd.NoGrad()) net.Parameters().First().MulInPlace(1e3);   // exp(|x·w| ~ 1e3) overflows F32
        using var opt = new Sgd(net.Parameters(), lr: 0.1);
        var data = new List<(Tensor, Tensor)> { (Tensor.Randn([4, 6], 41).KeepAlive(), Tensor.FromArray(new long[] { 0, 1, 2, 0 }).KeepAlive()) };
        var trainer = new Trainer<(Tensor X, Tensor Y)>(net, opt, net.Loss, new TrainerOptions());
        var ex = Assert.Throws<TrainingDivergedException>(() => trainer.Train(data));
        Assert.That(ex!.FirstNonFiniteOp, Is.EqualTo("Exp"));
        Assert.That(ex.Message, Does.Contain("optimizer step 1").And.Contain("first non-finite value: Exp produced a non-finite value").And.Contain("from finite inputs"));
        Assert.That(ex.InnerException, Is.TypeOf<AnomalyException>());
    }

    [Test]
    public void AnomalyDetectionNamesForwardAndBackwardCulprits()
    {
        using var x = Tensor.FromArray(new float[] { 1, 0, 2 }).RequiresGradient();
        using (Autograd.DetectAnomaly())
        {
            var forward = Assert.Throws<AnomalyException>(() => { using var y = x.Log(); });
            Assert.That((forward!.OpName, forward.FromFiniteInputs, forward.InBackward), Is.EqualTo(("Log", true, false)), "log(0) = −∞");
            using var scope = Tensor.NewScope();
            var root = x.Sqrt().Sum();                      // √0 is finite; its derivative 1/(2√0) is not
            var backward = Assert.Throws<AnomalyException>(() => root.Backward());
            Assert.That((backward!.OpName, backward.InBackward), Is.EqualTo(("Sqrt", true)));
        }
        using (var y = x.Log()) Assert.That(float.IsNegativeInfinity(y.ToFloatArray()[1]), "outside the scope nothing is checked");
    }
}

[TestFixture]
public class MetricsTests
{
    [Test]
    public void F1AndAccuracyFollowScikitLearn()
    {
        // scikit-learn's f1_score documentation example: macro 0.2667, micro 0.3333.
        var m = new ClassificationMetrics(3);
        int[] truth = [0, 1, 2, 0, 1, 2], predicted = [0, 2, 1, 0, 0, 1];
        for (int i = 0; i < truth.Length; i++) m.Add(predicted[i], truth[i]);
        Assert.That(m.Accuracy, Is.EqualTo(2.0 / 6).Within(1e-12));
        Assert.That(m.MacroF1, Is.EqualTo(0.26666666666666666).Within(1e-12));
        Assert.That(m.MicroF1, Is.EqualTo(1.0 / 3).Within(1e-12));
        Assert.That(new[] { m.F1(0), m.F1(1), m.F1(2) }, Is.EqualTo(new[] { 0.8, 0, 0 }).Within(1e-12));
        m.Add(1, ClassificationMetrics.IgnoreIndex);
        Assert.That(m.Count, Is.EqualTo(6), "−100 is skipped");
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Add(0, 3));
    }

    [Test]
    public void MacroF1AveragesOnlyTheClassesThatOccurAndLogitsAreArgMaxed()
    {
        var m = new ClassificationMetrics(4);   // class 3 never appears: scikit-learn leaves it out of the macro mean
        using var logits = Tensor.FromArray(new float[] { 2, 1, 0, 0, /**/ 0, 3, 1, 0, /**/ 0, 0.5f, 0.2f, 0 }, [1, 3, 4]);
        using var labels = Tensor.FromArray(new long[] { 0, 2, 1 }, [1, 3]);
        m.Add(logits, labels);
        Assert.That((m[0, 0], m[2, 1], m[1, 1]), Is.EqualTo((1L, 1L, 1L)));
        Assert.That(m.MacroF1, Is.EqualTo((1 + 2.0 / 3 + 0) / 3).Within(1e-12), "classes 0 (F1 1), 1 (2/3), 2 (0)");
    }

    [Test]
    public void EvaluateRunsInEvalModeWithoutAGraphAndRestoresTraining()
    {
        var net = new DropoutNet(dropout: 0.5);
        using var opt = new Sgd(net.Parameters(), lr: 0.1);
        var trainer = new Trainer<(Tensor X, Tensor Y)>(net, opt, net.Loss, new TrainerOptions());
        var data = Enumerable.Range(0, 3).Select(i => (Tensor.Randn([5, 6], (ulong)(500 + i)).KeepAlive(), Tensor.FromArray(new long[] { 0, 1, 2, 1, 0 }).KeepAlive())).ToList();
        bool? sawGrad = null;
        EvalResult Run() => trainer.Evaluate(data, b =>
        {
            sawGrad = Autograd.IsGradEnabled;
            using var h = net.Child("fc1").Forward(b.X);
            using var a = h.Relu();
            var logits = net.Child("fc2").Forward(a);
            return new EvalStep(net.Loss(b), logits, b.Y);
        }, numClasses: 3);
        var first = Run();
        Assert.That(Run().Loss, Is.EqualTo(first.Loss), "dropout is off in eval mode: two passes agree");
        Assert.That(sawGrad, Is.False);
        Assert.That(net.IsTraining, "training mode restored");
        Assert.That(first.Classification!.Count, Is.EqualTo(15));
        Assert.That(first.Perplexity, Is.EqualTo(Math.Exp(first.Loss)));
    }
}
