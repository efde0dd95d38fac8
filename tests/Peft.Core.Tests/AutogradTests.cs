namespace Peft.Core.Tests;

[TestFixture]
public class AutogradTests
{
    [Test]
    public void GradientsAccumulateAcrossBackwardCalls()
    {
        using var s = Tensor.NewScope();
        var w = Tensor.FromArray(new double[] { 1, 2, 3 }).RequiresGradient();
        (w * w).Sum().Backward();
        (w * w).Sum().Backward();
        Assert.That(w.Grad!.ToArray<double>(), Is.EqualTo(new double[] { 4, 8, 12 }));
        w.ZeroGrad();
        Assert.That(w.Grad, Is.Null);
    }

    [Test]
    public void OnlyTensorsThatRequireGradGetGradients()
    {
        using var s = Tensor.NewScope();
        var frozen = Tensor.Randn([4, 3], 1, DType.F64);
        var trainable = Tensor.Randn([3, 2], 2, DType.F64).RequiresGradient();
        Tensor.Randn([5, 4], 3, DType.F64).MatMul(frozen).MatMul(trainable).Sum().Backward();
        Assert.That(frozen.Grad, Is.Null);
        Assert.That(trainable.Grad, Is.Not.Null);
    }

    [Test]
    public void NoGradAndDetachRecordNothing()
    {
        using var s = Tensor.NewScope();
        var w = Tensor.Ones([3]).RequiresGradient();
        using (Autograd.NoGrad())
        {
            var y = w * 2.0;
            Assert.That(y.RequiresGrad, Is.False);
            Assert.That(y.GradFn, Is.Null);
        }
        var d = (w * 2.0).Detach();
        Assert.That(d.RequiresGrad, Is.False);
        Assert.Throws<InvalidOperationException>(() => d.Sum().Backward());
    }

    [Test]
    public void DeepGraphsDoNotOverflowTheStack()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.Ones([2]).RequiresGradient();
        var y = x;
        for (int i = 0; i < 20000; i++) y = y * 1.0;
        y.Sum().Backward();
        Assert.That(x.Grad!.ToArray<float>(), Is.EqualTo(new float[] { 1, 1 }));
    }

    [Test]
    public void DiamondGraphsSumBothPaths()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.FromArray(new double[] { 3 }).RequiresGradient();
        var a = x * 2.0;
        var y = a * a + a; // dy/dx = (2a + 1)·2 = 26 at x = 3
        y.Sum().Backward();
        Assert.That(x.Grad!.Item(), Is.EqualTo(26));
    }

    [Test]
    public void ASecondBackwardThroughTheSameGraphIsRefused()
    {
        using var s = Tensor.NewScope();
        var x = Tensor.Ones([2]).RequiresGradient();
        var y = (x * x).Sum();
        y.Backward();
        Assert.Throws<InvalidOperationException>(() => y.Backward());
    }

    [Test]
    public void InPlaceUpdatesOfTrainableTensorsNeedNoGrad()
    {
        using var s = Tensor.NewScope();
        var w = Tensor.Ones([2]).RequiresGradient();
        Assert.Throws<InvalidOperationException>(() => w.AddInPlace(Tensor.Ones([2])));
        using (Autograd.NoGrad()) w.AddInPlace(Tensor.Ones([2]), alpha: -0.5);
        Assert.That(w.ToArray<float>(), Is.EqualTo(new float[] { 0.5f, 0.5f }));
    }

    [Test]
    public void TheGradientCheckerCatchesAWrongBackward()
    {
        // Guard against a checker that cannot fail: an op whose backward is off by a factor of 2 must be rejected.
        using var s = Tensor.NewScope();
        var x = GradCheck.Leaf([3], 1);
        Assert.Throws<AssertionException>(() => GradCheck.Check(inputs =>
        {
            var y = inputs[0].Detach() * 3.0;
            return Autograd.Record(y, "WrongTriple", [inputs[0]], (g, _) => [g * 6.0]);
        }, [x]));
    }
}
