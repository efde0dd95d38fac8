using Peft.Core.Linalg;

namespace Peft.Core.Tests;

[TestFixture]
public class DecompositionTests
{
    private static double[,] Random(int m, int n, int seed)
    {
        var r = new System.Random(seed);
        var a = new double[m, n];
        for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) a[i, j] = r.NextDouble() * 2 - 1;
        return a;
    }

    private static double MaxAbsDiff(double[,] a, double[,] b)
    {
        double d = 0;
        for (int i = 0; i < a.GetLength(0); i++) for (int j = 0; j < a.GetLength(1); j++) d = Math.Max(d, Math.Abs(a[i, j] - b[i, j]));
        return d;
    }

    [TestCase(7, 4)]
    [TestCase(30, 30)]
    [TestCase(4, 9)]
    public void QrReconstructsWithOrthonormalQAndTriangularR(int m, int n)
    {
        var a = Random(m, n, 1);
        var (q, r) = Decompositions.Qr(a);
        Assert.That(MaxAbsDiff(Decompositions.MatMul(q, r), a), Is.LessThan(1e-12));
        int k = Math.Min(m, n);
        var qtq = Decompositions.MatMul(Decompositions.Transpose(q), q);
        for (int i = 0; i < k; i++) for (int j = 0; j < k; j++) Assert.That(qtq[i, j], Is.EqualTo(i == j ? 1 : 0).Within(1e-12));
        for (int i = 0; i < k; i++) for (int j = 0; j < i; j++) Assert.That(r[i, j], Is.EqualTo(0));
    }

    [TestCase(9, 5)]
    [TestCase(5, 9)]
    [TestCase(24, 24)]
    public void SvdReconstructsWithOrthonormalFactorsAndSortedValues(int m, int n)
    {
        var a = Random(m, n, 2);
        var (u, s, v) = Decompositions.Svd(a);
        int p = Math.Min(m, n);
        var us = new double[m, p];
        for (int i = 0; i < m; i++) for (int k = 0; k < p; k++) us[i, k] = u[i, k] * s[k];
        Assert.That(MaxAbsDiff(Decompositions.MatMul(us, Decompositions.Transpose(v)), a), Is.LessThan(1e-12));
        Assert.That(s, Is.Ordered.Descending);
        var vtv = Decompositions.MatMul(Decompositions.Transpose(v), v);
        for (int i = 0; i < p; i++) Assert.That(vtv[i, i], Is.EqualTo(1).Within(1e-12));
    }

    [Test]
    public void TruncatedLowRankKeepsAnExactlyLowRankProductAndDropsTheSmallestDirections()
    {
        var b = Random(40, 3, 3);
        var a = Random(3, 30, 4);
        var full = Decompositions.MatMul(b, a);
        var (b3, a3) = Decompositions.TruncatedLowRank(b, a, 3);
        Assert.That(MaxAbsDiff(Decompositions.MatMul(b3, a3), full), Is.LessThan(1e-12), "rank 3 of a rank-3 product is exact");
        var (b2, a2) = Decompositions.TruncatedLowRank(b, a, 2);
        var (_, s, _) = Decompositions.Svd(full);
        double err = 0;
        var approx = Decompositions.MatMul(b2, a2);
        for (int i = 0; i < 40; i++) for (int j = 0; j < 30; j++) err += Math.Pow(approx[i, j] - full[i, j], 2);
        Assert.That(Math.Sqrt(err), Is.EqualTo(s[2]).Within(1e-9), "Eckart–Young: the error is the dropped singular value");
    }

    [Test]
    public void MatrixReadsATensorThroughItsStrides()
    {
        using var scope = Tensor.NewScope();
        var t = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, [2, 3]).Transpose(0, 1); // [3, 2] view
        Assert.That(Decompositions.Matrix(t), Is.EqualTo(new double[,] { { 1, 4 }, { 2, 5 }, { 3, 6 } }));
        Assert.Throws<ArgumentException>(() => Decompositions.Matrix(Tensor.Ones([2, 2, 2])));
    }
}

[TestFixture]
public class InverseTests
{
    [Test]
    public void InverseTimesTheMatrixIsTheIdentityAndSingularMatricesThrow()
    {
        using var scope = Tensor.NewScope();
        var a = Tensor.Randn([3, 5, 5], 4) + Tensor.FromArray(Enumerable.Range(0, 25).Select(i => i % 6 == 0 ? 2f : 0f).ToArray(), [5, 5]);
        var product = a.MatMul(a.Inverse()).ToArray<float>();
        for (int b = 0; b < 3; b++)
            for (int i = 0; i < 5; i++)
                for (int j = 0; j < 5; j++)
                    Assert.That(product[(b * 5 + i) * 5 + j], Is.EqualTo(i == j ? 1f : 0f).Within(1e-5));
        var singular = Tensor.FromArray(new float[] { 1, 2, 2, 4 }, [2, 2]);
        Assert.That(Assert.Throws<InvalidOperationException>(() => singular.Inverse())!.Message, Does.Contain("singular"));
        Assert.Throws<ShapeMismatchException>(() => Tensor.Randn([2, 3], 1).Inverse());
    }
}
