using Peft.Core.Cpu;

namespace Peft.Core;

// Element-wise unary maths. Each backward is written with other tensor ops (or a derivative kernel).
public sealed partial class Tensor
{
    internal unsafe Tensor UnaryKernel(UnaryOp op, double p0 = 0, double p1 = 0)
    {
        if (Device.Type != DeviceType.Cpu && DeviceKernels(op.ToString(), this) is { } k) // the name is built only off the CPU path
        {
            using var wide = WidenOnDevice(k, op.ToString(), this);
            using var dense = (wide ?? this).ContiguousData();
            return k.Unary(op, dense, p0, p1);
        }
        // The CPU computes element-wise maths in F32: a BF16/F16 input widens exactly and the result is F32.
        if (DType is DType.BF16 or DType.F16)
        {
            using var wide = ToDTypeNoGrad(DType.F32);
            return wide.UnaryKernel(op, p0, p1);
        }
        CheckFloatOperands(op.ToString(), this);
        using var x = ContiguousData();
        var y = Allocate(_shape, DType, zero: false);
        if (DType == DType.F64) Unary<double>.Apply(op, x.Ptr<double>(), y.Ptr<double>(), NumEl, p0, p1);
        else Unary<float>.Apply(op, x.Ptr<float>(), y.Ptr<float>(), NumEl, p0, p1);
        return y;
    }

    /// <summary>Runs a unary kernel and records <paramref name="grad"/>(g, x, y) as its backward.</summary>
    private Tensor UnaryOpWithGrad(UnaryOp op, double p0, double p1, string name, Func<Tensor, Tensor, Tensor, Tensor> grad)
    {
        var y = UnaryKernel(op, p0, p1);
        return Autograd.Record(y, name, [this], saved =>
        {
            var (x, yy) = (saved.Save(this), saved.Save(y));
            return (g, _) => [grad(g, x, yy)];
        });
    }

    /// <summary>Product g ⊙ d(x) where d is a derivative kernel.</summary>
    private static Tensor TimesDerivative(Tensor g, Tensor x, UnaryOp derivative, double p0 = 0, double p1 = 0)
    {
        using var d = x.UnaryKernel(derivative, p0, p1);
        return g.Mul(d);
    }

    /// <summary>e^x.</summary>
    public Tensor Exp() => UnaryOpWithGrad(UnaryOp.Exp, 0, 0, "Exp", (g, x, y) => g.Mul(y));

    /// <summary>Natural logarithm.</summary>
    public Tensor Log() => UnaryOpWithGrad(UnaryOp.Log, 0, 0, "Log", (g, x, y) => g.Div(x));

    /// <summary>√x.</summary>
    public Tensor Sqrt() => UnaryOpWithGrad(UnaryOp.Sqrt, 0, 0, "Sqrt", (g, x, y) =>
    {
        using var h = g.Mul(0.5);
        return h.Div(y);
    });

    /// <summary>1/√x.</summary>
    public Tensor Rsqrt() => UnaryOpWithGrad(UnaryOp.Rsqrt, 0, 0, "Rsqrt", (g, x, y) =>
    {
        using var y3 = y.Pow(3.0);
        using var d = y3.Mul(-0.5);
        return g.Mul(d);
    });

    /// <summary>|x| (gradient sign(x), 0 at 0).</summary>
    public Tensor Abs() => UnaryOpWithGrad(UnaryOp.Abs, 0, 0, "Abs", (g, x, y) => TimesDerivative(g, x, UnaryOp.Sign));

    /// <summary>sign(x) ∈ {−1, 0, 1} (no gradient).</summary>
    public Tensor Sign() => UnaryKernel(UnaryOp.Sign);

    /// <summary>x rounded to the nearest integer, halves to even (torch.round; no gradient).</summary>
    public Tensor Round() => UnaryKernel(UnaryOp.Round);

    /// <summary>tanh(x).</summary>
    public Tensor Tanh() => UnaryOpWithGrad(UnaryOp.Tanh, 0, 0, "Tanh", (g, x, y) =>
    {
        using var y2 = y.Mul(y);
        using var d = y2.Neg();
        using var d1 = d.Add(1.0);
        return g.Mul(d1);
    });

    /// <summary>Logistic sigmoid.</summary>
    public Tensor Sigmoid() => UnaryOpWithGrad(UnaryOp.Sigmoid, 0, 0, "Sigmoid", (g, x, y) =>
    {
        using var om = y.Neg();
        using var om1 = om.Add(1.0);
        using var d = y.Mul(om1);
        return g.Mul(d);
    });

    /// <summary>sin(x).</summary>
    public Tensor Sin() => UnaryOpWithGrad(UnaryOp.Sin, 0, 0, "Sin", (g, x, y) => TimesDerivative(g, x, UnaryOp.Cos));

    /// <summary>cos(x).</summary>
    public Tensor Cos() => UnaryOpWithGrad(UnaryOp.Cos, 0, 0, "Cos", (g, x, y) =>
    {
        using var s = x.UnaryKernel(UnaryOp.Sin);
        using var ns = s.Neg();
        return g.Mul(ns);
    });

    /// <summary>max(x, 0).</summary>
    public Tensor Relu() => UnaryOpWithGrad(UnaryOp.Relu, 0, 0, "Relu", (g, x, y) => TimesDerivative(g, x, UnaryOp.ReluGrad));

    /// <summary>GELU: exact x·Φ(x) (BERT, ViT), or the tanh approximation (GPT-2's "gelu_new") when
    /// <paramref name="approximateTanh"/>.</summary>
    public Tensor Gelu(bool approximateTanh = false) => approximateTanh
        ? UnaryOpWithGrad(UnaryOp.GeluTanh, 0, 0, "GeluTanh", (g, x, y) => TimesDerivative(g, x, UnaryOp.GeluTanhGrad))
        : UnaryOpWithGrad(UnaryOp.GeluErf, 0, 0, "Gelu", (g, x, y) => TimesDerivative(g, x, UnaryOp.GeluErfGrad));

    /// <summary>SiLU / swish: x·σ(x) (LLaMA's MLP).</summary>
    public Tensor Silu() => UnaryOpWithGrad(UnaryOp.Silu, 0, 0, "Silu", (g, x, y) => TimesDerivative(g, x, UnaryOp.SiluGrad));

    /// <summary>Clamps into [min, max] (gradient passes where the value was inside).</summary>
    public Tensor Clamp(double min = double.NegativeInfinity, double max = double.PositiveInfinity)
    {
        if (min > max) throw new ArgumentException($"Clamp: min {min} is greater than max {max}");
        return UnaryOpWithGrad(UnaryOp.Clamp, min, max, "Clamp", (g, x, y) => TimesDerivative(g, x, UnaryOp.ClampMask, min, max));
    }
}
