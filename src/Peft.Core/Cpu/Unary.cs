using System.Numerics;
using System.Numerics.Tensors;

namespace Peft.Core.Cpu;

internal enum UnaryOp
{
    Neg, Exp, Log, Sqrt, Rsqrt, Abs, Tanh, Sigmoid, Relu, GeluErf, GeluTanh, Silu, Sign, Sin, Cos,
    // Derivatives used by backward passes; they have no backward of their own.
    ReluGrad, GeluErfGrad, GeluTanhGrad, SiluGrad,
    // Parameterised: Clamp(P0, P1) and its pass-through mask; PowScalar(P0); AddScalar(P0); MulScalar(P0).
    Clamp, ClampMask, PowScalar, AddScalar, MulScalar,
    // Round half to even (torch.round, MathF.Round's default, CUDA's rintf); no backward.
    Round,
}

/// <summary>Element-wise unary maths over contiguous F32/F64 buffers, vectorised by TensorPrimitives where it has the op.</summary>
internal static unsafe class Unary<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private const int Chunk = 16384;

    public static void Apply(UnaryOp op, T* x, T* y, long n, double p0, double p1)
    {
        long chunks = (n + Chunk - 1) / Chunk;
        if (chunks <= 1) { Run(op, x, y, (int)n, p0, p1); return; }
        CpuParallel.For(chunks, c =>
        {
            long s = c * Chunk;
            Run(op, x + s, y + s, (int)Math.Min(Chunk, n - s), p0, p1);
        });
    }

    private static void Run(UnaryOp op, T* px, T* py, int n, double p0, double p1)
    {
        var x = new ReadOnlySpan<T>(px, n);
        var y = new Span<T>(py, n);
        T a = T.CreateTruncating(p0), b = T.CreateTruncating(p1);
        switch (op)
        {
            case UnaryOp.Neg: TensorPrimitives.Negate(x, y); return;
            case UnaryOp.Exp: TensorPrimitives.Exp(x, y); return;
            case UnaryOp.Log: TensorPrimitives.Log(x, y); return;
            case UnaryOp.Sqrt: TensorPrimitives.Sqrt(x, y); return;
            case UnaryOp.Rsqrt: TensorPrimitives.Sqrt(x, y); TensorPrimitives.Reciprocal(y, y); return;
            case UnaryOp.Abs: TensorPrimitives.Abs(x, y); return;
            case UnaryOp.Tanh: TensorPrimitives.Tanh(x, y); return;
            case UnaryOp.Sigmoid: TensorPrimitives.Sigmoid(x, y); return;
            case UnaryOp.Sin: TensorPrimitives.Sin(x, y); return;
            case UnaryOp.Cos: TensorPrimitives.Cos(x, y); return;
            case UnaryOp.Relu: TensorPrimitives.Max(x, T.Zero, y); return;
            case UnaryOp.Round: TensorPrimitives.Round(x, MidpointRounding.ToEven, y); return;
            case UnaryOp.AddScalar: TensorPrimitives.Add(x, a, y); return;
            case UnaryOp.MulScalar: TensorPrimitives.Multiply(x, a, y); return;
            case UnaryOp.PowScalar: TensorPrimitives.Pow(x, a, y); return;
            case UnaryOp.Clamp: TensorPrimitives.Max(x, a, y); TensorPrimitives.Min(y, b, y); return;
            case UnaryOp.Silu:
                TensorPrimitives.Sigmoid(x, y);
                TensorPrimitives.Multiply(x, y, y);
                return;
            case UnaryOp.GeluTanh:
            case UnaryOp.GeluTanhGrad:
                GeluTanhVectorised(x, y, op == UnaryOp.GeluTanhGrad);
                return;
        }
        for (int i = 0; i < n; i++) py[i] = Scalar(op, px[i], a, b);
    }

    /// <summary>u = √(2/π)(x + 0.044715x³), t = tanh(u); y = ½x(1+t), or dy/dx = ½(1+t) + ½x(1−t²)·√(2/π)(1+3·0.044715x²).</summary>
    private static void GeluTanhVectorised(ReadOnlySpan<T> x, Span<T> y, bool derivative)
    {
        var pool = System.Buffers.ArrayPool<T>.Shared;
        T[] ua = pool.Rent(x.Length), ta = pool.Rent(x.Length);
        try
        {
            var x2 = ua.AsSpan(0, x.Length);
            var t = ta.AsSpan(0, x.Length);
            TensorPrimitives.Multiply(x, x, x2);                          // x²
            TensorPrimitives.Multiply(x2, GeluC, t);
            TensorPrimitives.Add(t, T.One, t);                            // 1 + c·x²
            TensorPrimitives.Multiply(t, x, t);                           // x + c·x³
            TensorPrimitives.Multiply(t, Sqrt2OverPi, t);                 // u
            TensorPrimitives.Tanh(t, t);                                  // t
            if (!derivative)
            {
                TensorPrimitives.Add(t, T.One, t);
                TensorPrimitives.Multiply(t, x, t);
                TensorPrimitives.Multiply(t, Half, y);
                return;
            }
            // du/dx = √(2/π)(1 + 3c·x²) into x2; (1 − t²) into y; combine.
            TensorPrimitives.Multiply(x2, T.CreateTruncating(3) * GeluC, x2);
            TensorPrimitives.Add(x2, T.One, x2);
            TensorPrimitives.Multiply(x2, Sqrt2OverPi, x2);
            TensorPrimitives.Multiply(t, t, y);
            TensorPrimitives.Subtract(T.One, y, y);                       // 1 − t²
            TensorPrimitives.Multiply(y, x2, y);
            TensorPrimitives.Multiply(y, x, y);                           // x(1 − t²)·du
            TensorPrimitives.Add(y, t, y);
            TensorPrimitives.Add(y, T.One, y);                            // 1 + t + x(1 − t²)·du
            TensorPrimitives.Multiply(y, Half, y);
        }
        finally
        {
            pool.Return(ua);
            pool.Return(ta);
        }
    }

    private static readonly T Half = T.CreateTruncating(0.5);
    private static readonly T InvSqrt2 = T.CreateTruncating(0.70710678118654752440);
    private static readonly T InvSqrt2Pi = T.CreateTruncating(0.39894228040143267794);
    private static readonly T Sqrt2OverPi = T.CreateTruncating(0.79788456080286535588);
    private static readonly T GeluC = T.CreateTruncating(0.044715);

    private static T Scalar(UnaryOp op, T x, T a, T b)
    {
        switch (op)
        {
            case UnaryOp.Sign: return T.IsNaN(x) ? x : x > T.Zero ? T.One : x < T.Zero ? -T.One : T.Zero;
            case UnaryOp.ReluGrad: return x > T.Zero ? T.One : T.Zero;
            case UnaryOp.ClampMask: return x >= a && x <= b ? T.One : T.Zero;
            case UnaryOp.GeluErf: return Half * x * (T.One + Erf(x * InvSqrt2));
            case UnaryOp.GeluErfGrad:
                // d/dx x·Φ(x) = Φ(x) + x·φ(x)
                return Half * (T.One + Erf(x * InvSqrt2)) + x * InvSqrt2Pi * T.Exp(-Half * x * x);
            case UnaryOp.GeluTanh:
            {
                T u = Sqrt2OverPi * (x + GeluC * x * x * x);
                return Half * x * (T.One + T.Tanh(u));
            }
            case UnaryOp.GeluTanhGrad:
            {
                T u = Sqrt2OverPi * (x + GeluC * x * x * x);
                T t = T.Tanh(u);
                T du = Sqrt2OverPi * (T.One + T.CreateTruncating(3) * GeluC * x * x);
                return Half * (T.One + t) + Half * x * (T.One - t * t) * du;
            }
            case UnaryOp.SiluGrad:
            {
                T s = T.One / (T.One + T.Exp(-x));
                return s * (T.One + x * (T.One - s));
            }
            default: throw new ArgumentOutOfRangeException(nameof(op), op, "not a scalar-path unary op");
        }
    }

    /// <summary>erf in double precision, then rounded to T: Maclaurin series for |x| &lt; 2.5 and a Lentz
    /// continued fraction for erfc beyond; both are accurate to ~1e-15, which the F64 gradient checks need.</summary>
    public static T Erf(T x) => T.CreateTruncating(SpecialFunctions.Erf(double.CreateTruncating(x)));
}

/// <summary>Special functions .NET lacks.</summary>
public static class SpecialFunctions
{
    /// <summary>The error function, accurate to about 1e-15 absolute.</summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return x;
        double ax = Math.Abs(x);
        if (ax < 2.5)
        {
            // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
            double term = x, sum = x, x2 = x * x;
            for (int n = 1; n < 100; n++)
            {
                term *= -x2 / n;
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
            }
            return sum * 1.1283791670955125739;
        }
        if (ax > 6) return Math.Sign(x);
        return Math.Sign(x) * (1 - Erfc(ax));
    }

    /// <summary>erfc for x ≥ 2.5 by the continued fraction erfc(x) = e^(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))).</summary>
    private static double Erfc(double x)
    {
        // Modified Lentz on K = x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))).
        const double tiny = 1e-300;
        double f = x, c = x, d = 0;
        for (int k = 1; k < 200; k++)
        {
            double ak = k * 0.5;
            d = x + ak * d;
            d = Math.Abs(d) < tiny ? 1 / tiny : 1 / d;
            c = x + ak / c;
            if (Math.Abs(c) < tiny) c = tiny;
            double delta = c * d;
            f *= delta;
            if (Math.Abs(delta - 1) < 1e-16) break;
        }
        return Math.Exp(-x * x) / (f * 1.7724538509055160273);
    }
}
