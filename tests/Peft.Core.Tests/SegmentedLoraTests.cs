using Peft.Core.Random;

namespace Peft.Core.Tests;

/// <summary>Tensor.SegmentedLora (a mixed-adapter LoRA batch as one op, SGMV) against LoRA's per-row formula.</summary>
[TestFixture]
public class SegmentedLoraTests
{
    [Test]
    public void EachRowGetsItsOwnAdaptersTermAndMinusOneKeepsTheBase()
    {
        using var scope = Tensor.NewScope();
        int rows = 11, k = 37, c = 29;
        int[] ranks = [3, 16, 20];
        var g = new Generator(4);
        var x = Tensor.Randn([rows, k], g);
        var baseOut = Tensor.Randn([rows, c], g);
        var a = ranks.Select(r => Tensor.Randn([r, k], g)).ToList();
        var b = ranks.Select(r => Tensor.Randn([c, r], g)).ToList();
        double[] scales = [0.5, 2.0, -1.25];
        int[] rowAdapter = [2, -1, 0, 0, 1, 2, -1, 1, 1, 0, 2];
        var got = Tensor.SegmentedLora(baseOut, x, rowAdapter, a, b, scales);
        Assert.That(got.Shape, Is.EqualTo(new[] { rows, c }));
        for (int row = 0; row < rows; row++)
        {
            var xr = x.Narrow(0, row, 1);
            var want = baseOut.Narrow(0, row, 1);
            int i = rowAdapter[row];
            if (i >= 0) want = want + xr.MatMul(a[i].Transpose(0, 1)).MatMul(b[i].Transpose(0, 1)) * scales[i];
            Assert.That(TestUtil.RelErr(got.Narrow(0, row, 1), want), Is.LessThan(1e-5), $"row {row} (adapter {i})");
        }
        Assert.That(baseOut.ToDoubleArray(), Is.Not.EqualTo(got.ToDoubleArray()), "the result is a new tensor; the base output is left as it was");
    }

    [Test]
    public void ItIsInferenceOnlyAndChecksItsOperands()
    {
        using var scope = Tensor.NewScope();
        var x = Tensor.Randn([2, 4], 1);
        var y = Tensor.Randn([2, 3], 2);
        var a = Tensor.Randn([2, 4], 3).RequiresGradient();
        var b = Tensor.Randn([3, 2], 4);
        Assert.Throws<InvalidOperationException>(() => Tensor.SegmentedLora(y, x, [0, 0], [a], [b], [1.0]));
        using (Autograd.NoGrad()) Assert.DoesNotThrow(() => Tensor.SegmentedLora(y, x, [0, -1], [a], [b], [1.0]).Dispose());
        using var _ = Autograd.NoGrad();
        var ex = Assert.Throws<ShapeMismatchException>(() => Tensor.SegmentedLora(y, x, [0, 0], [a], [Tensor.Zeros([3, 5])], [1.0]));
        Assert.That(ex!.Message, Does.Contain("adapter 0").And.Contain("[3, 5]"));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tensor.SegmentedLora(y, x, [1, 0], [a], [b], [1.0]));
        Assert.Throws<ArgumentException>(() => Tensor.SegmentedLora(y, x, [0], [a], [b], [1.0]));
    }
}
