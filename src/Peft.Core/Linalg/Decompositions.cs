namespace Peft.Core.Linalg;

/// <summary>
/// Dense decompositions in double precision for the sizes PEFT needs them (adapter factors, their k×k products):
/// Householder QR and one-sided Jacobi SVD. Row-major arrays, [rows, cols].
/// </summary>
public static class Decompositions
{
    /// <summary>Reduced QR of an m×n matrix (torch.linalg.qr's default): A = Q·R with Q m×k orthonormal columns and
    /// R k×n upper triangular, k = min(m, n). Householder reflections with LAPACK's sign convention (R's diagonal is
    /// −sign(a)·‖x‖), so factors match LAPACK-based libraries.</summary>
    public static (double[,] Q, double[,] R) Qr(double[,] a)
    {
        int m = a.GetLength(0), n = a.GetLength(1), steps = Math.Min(m, n);
        var r = (double[,])a.Clone();
        var vs = new double[steps][];
        for (int k = 0; k < steps; k++)
        {
            // Householder vector v reflecting column k (rows k..m-1) onto ±‖x‖·e₁.
            double norm = 0;
            for (int i = k; i < m; i++) norm += r[i, k] * r[i, k];
            norm = Math.Sqrt(norm);
            var v = new double[m - k];
            for (int i = k; i < m; i++) v[i - k] = r[i, k];
            double alpha = r[k, k] >= 0 ? -norm : norm;
            v[0] -= alpha;
            double vnorm = 0;
            foreach (var x in v) vnorm += x * x;
            vs[k] = v;
            if (vnorm == 0) continue;
            for (int j = k; j < n; j++)
            {
                double dot = 0;
                for (int i = k; i < m; i++) dot += v[i - k] * r[i, j];
                double f = 2 * dot / vnorm;
                for (int i = k; i < m; i++) r[i, j] -= f * v[i - k];
            }
        }
        // Q = H₀·H₁·…·H_{k−1} applied to the first k columns of the identity.
        var q = new double[m, steps];
        for (int j = 0; j < steps; j++) q[j, j] = 1;
        for (int k = steps - 1; k >= 0; k--)
        {
            var v = vs[k];
            double vnorm = 0;
            foreach (var x in v) vnorm += x * x;
            if (vnorm == 0) continue;
            for (int j = 0; j < steps; j++)
            {
                double dot = 0;
                for (int i = k; i < m; i++) dot += v[i - k] * q[i, j];
                double f = 2 * dot / vnorm;
                for (int i = k; i < m; i++) q[i, j] -= f * v[i - k];
            }
        }
        var rr = new double[steps, n];
        for (int i = 0; i < steps; i++) for (int j = i; j < n; j++) rr[i, j] = r[i, j];
        return (q, rr);
    }

    /// <summary>
    /// SVD of an m×n matrix by one-sided Jacobi rotations (Hestenes): A = U·diag(S)·Vᵀ with singular values in
    /// descending order; U is m×p, V is n×p, p = min(m, n). Accurate to a few ulps relative to ‖A‖.
    /// </summary>
    public static (double[,] U, double[] S, double[,] V) Svd(double[,] a)
    {
        int m = a.GetLength(0), n = a.GetLength(1);
        if (m < n)
        {
            var (u2, s2, v2) = Svd(Transpose(a));
            return (v2, s2, u2);
        }
        var w = (double[,])a.Clone();   // columns are rotated until mutually orthogonal
        var v = new double[n, n];
        for (int i = 0; i < n; i++) v[i, i] = 1;
        for (int sweep = 0; sweep < 60; sweep++)
        {
            double off = 0;
            for (int p = 0; p < n - 1; p++)
                for (int q = p + 1; q < n; q++)
                {
                    double alpha = 0, beta = 0, gamma = 0;
                    for (int i = 0; i < m; i++) { alpha += w[i, p] * w[i, p]; beta += w[i, q] * w[i, q]; gamma += w[i, p] * w[i, q]; }
                    if (gamma == 0 || Math.Abs(gamma) <= 1e-15 * Math.Sqrt(alpha * beta)) continue;
                    off = Math.Max(off, Math.Abs(gamma) / Math.Sqrt(alpha * beta));
                    double zeta = (beta - alpha) / (2 * gamma);
                    double t = Math.Sign(zeta == 0 ? 1 : zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
                    double c = 1 / Math.Sqrt(1 + t * t), s = c * t;
                    for (int i = 0; i < m; i++) { double x = w[i, p], y = w[i, q]; w[i, p] = c * x - s * y; w[i, q] = s * x + c * y; }
                    for (int i = 0; i < n; i++) { double x = v[i, p], y = v[i, q]; v[i, p] = c * x - s * y; v[i, q] = s * x + c * y; }
                }
            if (off <= 1e-15) break;
        }
        var sv = new double[n];
        for (int j = 0; j < n; j++) { double s = 0; for (int i = 0; i < m; i++) s += w[i, j] * w[i, j]; sv[j] = Math.Sqrt(s); }
        var order = Enumerable.Range(0, n).OrderByDescending(j => sv[j]).ToArray();
        var u = new double[m, n];
        var vo = new double[n, n];
        var so = new double[n];
        for (int k = 0; k < n; k++)
        {
            int j = order[k];
            so[k] = sv[j];
            for (int i = 0; i < m; i++) u[i, k] = sv[j] > 0 ? w[i, j] / sv[j] : 0;
            for (int i = 0; i < n; i++) vo[i, k] = v[i, j];
        }
        return (u, so, vo);
    }

    /// <summary>A 2-D tensor's values (any dtype, any strides) as a matrix.</summary>
    public static double[,] Matrix(Tensor t)
    {
        if (t.Rank != 2) throw new ArgumentException($"a matrix needs a 2-D tensor, got rank {t.Rank}", nameof(t));
        var v = t.ToDoubleArray();
        int m = t.Size(0), n = t.Size(1);
        var a = new double[m, n];
        for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) a[i, j] = v[i * n + j];
        return a;
    }

    /// <summary>Aᵀ.</summary>
    public static double[,] Transpose(double[,] a)
    {
        int m = a.GetLength(0), n = a.GetLength(1);
        var t = new double[n, m];
        for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) t[j, i] = a[i, j];
        return t;
    }

    /// <summary>A·B.</summary>
    public static double[,] MatMul(double[,] a, double[,] b)
    {
        int m = a.GetLength(0), k = a.GetLength(1), n = b.GetLength(1);
        if (b.GetLength(0) != k) throw new ArgumentException($"inner dimensions differ: {m}×{k} · {b.GetLength(0)}×{n}");
        var c = new double[m, n];
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++)
            {
                double x = a[i, p];
                if (x == 0) continue;
                for (int j = 0; j < n; j++) c[i, j] += x * b[p, j];
            }
        return c;
    }

    /// <summary>
    /// Truncated SVD of the low-rank product B·A (B m×k, A k×n) without forming it: QR of B and of Aᵀ, then SVD of
    /// the k×k core. Returns the rank-<paramref name="rank"/> factors B' = U·S (m×rank) and A' = Vᵀ (rank×n).
    /// </summary>
    public static (double[,] B, double[,] A) TruncatedLowRank(double[,] b, double[,] a, int rank)
    {
        int m = b.GetLength(0), k = b.GetLength(1), n = a.GetLength(1);
        double[,] u, vt;
        double[] s;
        if (k < Math.Min(m, n))
        {
            var (qb, rb) = Qr(b);
            var (qa, ra) = Qr(Transpose(a));
            var (us, ss, vs) = Svd(MatMul(rb, Transpose(ra)));
            u = MatMul(qb, us);
            vt = Transpose(MatMul(qa, vs));
            s = ss;
        }
        else
        {
            var (uf, sf, vf) = Svd(MatMul(b, a));
            u = uf; s = sf; vt = Transpose(vf);
        }
        rank = Math.Min(rank, s.Length);
        var bOut = new double[m, rank];
        var aOut = new double[rank, n];
        for (int r = 0; r < rank; r++)
        {
            for (int i = 0; i < m; i++) bOut[i, r] = u[i, r] * s[r];
            for (int j = 0; j < n; j++) aOut[r, j] = vt[r, j];
        }
        return (bOut, aOut);
    }
}
