using Peft.Core.Random;

namespace Peft.Core.Tests;

/// <summary>Gradient checkpointing: the recomputed region gives the gradients of the plain one, replays its random
/// numbers, routes side inputs and refuses tensors that sneak in from outside.</summary>
[TestFixture]
public class CheckpointTests
{
    /// <summary>dropout(tanh(x·W1), own generator) · W2, then dropout from the default generator.</summary>
    private static Tensor Region(Tensor x, Tensor w1, Tensor w2, Generator own)
    {
        using var h = x.MatMul(w1);
        using var a = h.Tanh();
        using var d = a.Dropout(0.3, true, own);
        using var y = d.MatMul(w2);
        return y.Dropout(0.2);
    }

    private static (float[] X, float[] W1, float[] W2, long Offset) Grads(bool checkpoint, bool inputRequiresGrad = true)
    {
        Generator.Default.ManualSeed(77);
        var own = new Generator(5);
        using var x = Tensor.Randn([4, 6], new Generator(1));
        if (inputRequiresGrad) x.RequiresGradient();
        using var w1 = Tensor.Randn([6, 8], new Generator(2)).RequiresGradient();
        using var w2 = Tensor.Randn([8, 3], new Generator(3)).RequiresGradient();
        using (var scope = Tensor.NewScope())
        {
            var y = checkpoint ? Checkpoint.Run(t => Region(t, w1, w2, own), x, [w1, w2]) : Region(x, w1, w2, own);
            using var z = y.Dropout(0.1);   // a draw after the region: its stream must not see the replay
            z.Mul(z).Sum().Backward();
        }
        return (x.Grad?.ToFloatArray() ?? [], w1.Grad!.ToFloatArray(), w2.Grad!.ToFloatArray(), Generator.Default.Offset);
    }

    [Test]
    public void CheckpointedGradientsAreThoseOfThePlainRegionBitForBit()
    {
        var plain = Grads(false);
        var checkpointed = Grads(true);
        Assert.That(checkpointed.X, Is.EqualTo(plain.X));
        Assert.That(checkpointed.W1, Is.EqualTo(plain.W1), "the dropout masks of both generators were replayed");
        Assert.That(checkpointed.W2, Is.EqualTo(plain.W2));
        Assert.That(checkpointed.Offset, Is.EqualTo(plain.Offset), "the default stream ends where it would without recomputation");
    }

    [Test]
    public void ParametersGetGradientsWhenTheInputIsFrozen()
    {
        var plain = Grads(false, inputRequiresGrad: false);
        var checkpointed = Grads(true, inputRequiresGrad: false);
        Assert.That(checkpointed.X, Is.Empty);
        Assert.That(checkpointed.W1, Is.EqualTo(plain.W1));
        Assert.That(checkpointed.W2, Is.EqualTo(plain.W2));
    }

    [Test]
    public void GradCheckThroughACheckpointWithASideInput()
    {
        using var x = Tensor.Randn([3, 4], new Generator(11), DType.F64).RequiresGradient();
        using var side = Tensor.Randn([3, 4], new Generator(12), DType.F64).RequiresGradient();
        using var w = Tensor.Randn([4, 2], new Generator(13), DType.F64).RequiresGradient();
        GradCheck.Check(t => Checkpoint.Run((h, s) =>
        {
            using var mixed = h.Mul(s[0]);
            using var act = mixed.Sigmoid();
            return act.MatMul(t[2]);
        }, t[0], [t[1]], [t[2]]), [x, side, w]);
    }

    [Test]
    public void ATensorFromOutsideThatRequiresGradIsRefusedByName()
    {
        using var w = Tensor.Randn([4, 4], new Generator(14)).RequiresGradient();
        using var x = Tensor.Randn([2, 4], new Generator(15));
        using var scope = Tensor.NewScope();
        var outside = w.Mul(2.0);                                   // made before the region, needs a gradient
        var y = Checkpoint.Run(h => h.MatMul(outside), x, [w]);
        var ex = Assert.Throws<InvalidOperationException>(() => y.Sum().Backward());
        Assert.That(ex!.Message, Does.Contain("gradient checkpointing").And.Contain("MulScalar").And.Contain("pass it as an input"));
    }

    [Test]
    public void TheRecomputationRunsInTheAutocastDtypeOfTheForward()
    {
        float[] Grad(bool checkpoint)
        {
            using var x = Tensor.Randn([5, 9], new Generator(16)).RequiresGradient();
            using var w = Tensor.Randn([9, 4], new Generator(17)).RequiresGradient();
            using (var scope = Tensor.NewScope())
            {
                Tensor y;
                using (Autocast.Enable(DType.BF16)) y = checkpoint ? Checkpoint.Run(h => h.MatMul(w), x, [w]) : x.MatMul(w);
                y.Sum().Backward();
            }
            return w.Grad!.ToFloatArray();
        }
        Assert.That(Grad(true), Is.EqualTo(Grad(false)));
    }

    [Test]
    public void OutsideGradModeTheFunctionSimplyRuns()
    {
        using var w = Tensor.Randn([3, 3], new Generator(18)).RequiresGradient();
        using var x = Tensor.Randn([2, 3], new Generator(19));
        using (Autograd.NoGrad())
        using (var y = Checkpoint.Run(h => h.MatMul(w), x, [w]))
            Assert.That(y.RequiresGrad, Is.False);
    }
}
