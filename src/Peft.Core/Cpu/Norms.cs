using System.Numerics;
using System.Numerics.Tensors;

namespace Peft.Core.Cpu;

/// <summary>
/// Fused LayerNorm / RMSNorm over the last dim of contiguous [rows, d] data. Forward saves per-row statistics
/// (mean and 1/σ) so backward never recomputes a reduction over the full input.
/// </summary>
internal static unsafe class Norms<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>y = (x − μ)·rstd (LayerNorm) or x·rstd (RMSNorm, μ = 0); scale/shift by weight/bias if given.</summary>
    public static void Forward(T* x, T* y, T* mean, T* rstd, T* weight, T* bias, long rows, int d, double eps, bool rms)
    {
        T e = T.CreateTruncating(eps), invD = T.One / T.CreateTruncating(d);
        CpuParallel.For(rows, r =>
        {
            var xi = new ReadOnlySpan<T>(x + r * d, d);
            var yi = new Span<T>(y + r * d, d);
            T mu = rms ? T.Zero : TensorPrimitives.Sum(xi) * invD;
            TensorPrimitives.Subtract(xi, mu, yi);
            T variance = TensorPrimitives.Dot(yi, yi) * invD;
            T rs = T.One / T.Sqrt(variance + e);
            TensorPrimitives.Multiply(yi, rs, yi);
            if (weight != null) TensorPrimitives.Multiply(yi, new ReadOnlySpan<T>(weight, d), yi);
            if (bias != null) TensorPrimitives.Add(yi, new ReadOnlySpan<T>(bias, d), yi);
            mean[r] = mu;
            rstd[r] = rs;
        });
    }

    /// <summary>dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)) with ĝ = g⊙w (the mean(ĝ) term only for LayerNorm);
    /// also writes x̂ so the caller can form dW = Σ g⊙x̂ and dB = Σ g with tensor ops.</summary>
    public static void Backward(T* x, T* g, T* mean, T* rstd, T* weight, T* dx, T* xhat, long rows, int d, bool rms)
    {
        T invD = T.One / T.CreateTruncating(d);
        CpuParallel.For(rows, r =>
        {
            var xi = new ReadOnlySpan<T>(x + r * d, d);
            var gi = new ReadOnlySpan<T>(g + r * d, d);
            var dxi = new Span<T>(dx + r * d, d);
            var xh = new Span<T>(xhat + r * d, d);
            TensorPrimitives.Subtract(xi, mean[r], xh);
            TensorPrimitives.Multiply(xh, rstd[r], xh);
            if (weight != null) TensorPrimitives.Multiply(gi, new ReadOnlySpan<T>(weight, d), dxi);
            else gi.CopyTo(dxi);
            T meanG = rms ? T.Zero : TensorPrimitives.Sum(dxi) * invD;
            T meanGx = TensorPrimitives.Dot(dxi, xh) * invD;
            for (int j = 0; j < d; j++) dxi[j] = rstd[r] * (dxi[j] - meanG - xh[j] * meanGx);
        });
    }
}

/// <summary>
/// Cross-entropy over rows of logits [n, c] with integer targets, in one pass per row: loss = lse − (1−ε)·x_t − ε/C·Σx.
/// Only the per-row log-sum-exp is kept for backward, never the [n, c] probability matrix.
/// </summary>
internal static unsafe class CrossEntropyKernel<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public static void Forward(T* logits, long[] targets, T* loss, T* lse, long n, int c, long ignoreIndex, double smoothing)
    {
        T eps = T.CreateTruncating(smoothing), onMinus = T.One - eps, perClass = eps / T.CreateTruncating(c);
        CpuParallel.For(n, r =>
        {
            if (targets[r] == ignoreIndex) { loss[r] = T.Zero; lse[r] = T.Zero; return; }
            var x = new ReadOnlySpan<T>(logits + r * c, c);
            T max = TensorPrimitives.Max(x);
            T l = max + T.Log(Scratch<T>.SumExpShifted(x, max));
            lse[r] = l;
            T v = l - onMinus * x[(int)targets[r]];
            if (smoothing != 0) v -= perClass * TensorPrimitives.Sum(x);
            loss[r] = v;
        });
    }

    /// <summary>dlogits[r] = scale[r]·(softmax(x_r) − (1−ε)·onehot(t_r) − ε/C); zero for ignored rows.</summary>
    public static void Backward(T* logits, long[] targets, T* lse, T* scale, T* dlogits, long n, int c, long ignoreIndex, double smoothing)
    {
        T eps = T.CreateTruncating(smoothing), onMinus = T.One - eps, perClass = eps / T.CreateTruncating(c);
        CpuParallel.For(n, r =>
        {
            var d = new Span<T>(dlogits + r * c, c);
            if (targets[r] == ignoreIndex) { d.Clear(); return; }
            var x = new ReadOnlySpan<T>(logits + r * c, c);
            TensorPrimitives.Subtract(x, lse[r], d);
            TensorPrimitives.Exp(d, d);
            if (smoothing != 0) TensorPrimitives.Subtract(d, perClass, d);
            d[(int)targets[r]] -= onMinus;
            TensorPrimitives.Multiply(d, scale[r], d);
        });
    }
}
