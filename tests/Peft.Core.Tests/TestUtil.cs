namespace Peft.Core.Tests;

internal static class TestUtil
{
    /// <summary>‖a − b‖ / ‖b‖ (‖a − b‖ when b is zero).</summary>
    public static double RelErr(double[] a, double[] b)
    {
        Assert.That(a.Length, Is.EqualTo(b.Length), "length mismatch");
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - b[i]) * (a[i] - b[i]); den += b[i] * b[i]; }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }

    public static double RelErr(Tensor a, Tensor b) => RelErr(a.ToDoubleArray(), b.ToDoubleArray());

    /// <summary>Naive triple-loop reference: C = op(A)·op(B) in double.</summary>
    public static double[] NaiveMatMul(double[] a, double[] b, int m, int n, int k, bool ta, bool tb)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++) s += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
                c[i * n + j] = s;
            }
        return c;
    }
}
