using Peft.Core.Cpu;

namespace Peft.Core;

// Reductions over dims, with keepDim. dims == null reduces everything to a scalar.
public sealed partial class Tensor
{
    private (bool[] Reduced, int[] KeepShape, int[] OutShape) ReductionShapes(int[]? dims, bool keepDim)
    {
        var reduced = new bool[Rank];
        if (dims == null) Array.Fill(reduced, true);
        else foreach (var d in dims) reduced[Shapes.NormalizeDim(d, Rank)] = true;
        var keep = _shape.Select((s, i) => reduced[i] ? 1 : s).ToArray();
        var outShape = keepDim ? keep : _shape.Where((_, i) => !reduced[i]).ToArray();
        return (reduced, keep, outShape);
    }

    private Tensor ReduceKernel(ReduceOp op, bool[] reduced, int[] outShape)
    {
        if (Device.Type != DeviceType.Cpu && DeviceKernels(op.ToString(), this) is { } k) // the name is built only off the CPU path
        {
            using var wide = WidenOnDevice(k, op.ToString(), this);
            return k.Reduce(op, wide ?? this, reduced, outShape);
        }
        CheckFloatOperands(op.ToString(), this);
        return DType == DType.F64 ? Reduce<double>.Apply(op, this, reduced, outShape) : Reduce<float>.Apply(op, this, reduced, outShape);
    }

    /// <summary>Sum over <paramref name="dims"/> (all when null).</summary>
    public Tensor Sum(int[]? dims = null, bool keepDim = false)
    {
        var (reduced, keep, outShape) = ReductionShapes(dims, keepDim);
        var r = ReduceKernel(ReduceOp.Sum, reduced, outShape);
        var inShape = _shape;
        return Autograd.Record(r, "Sum", [this], (g, _) =>
        {
            using var gk = g.Reshape(keep);
            return [gk.Expand(inShape)];
        });
    }

    /// <summary>Sum over one dim.</summary>
    public Tensor Sum(int dim, bool keepDim = false) => Sum([dim], keepDim);

    /// <summary>Mean over <paramref name="dims"/> (all when null).</summary>
    public Tensor Mean(int[]? dims = null, bool keepDim = false)
    {
        var (reduced, _, _) = ReductionShapes(dims, keepDim);
        long count = 1;
        for (int i = 0; i < Rank; i++) if (reduced[i]) count *= _shape[i];
        using var s = Sum(dims, keepDim);
        return s.Mul(1.0 / count);
    }

    /// <summary>Mean over one dim.</summary>
    public Tensor Mean(int dim, bool keepDim = false) => Mean([dim], keepDim);

    /// <summary>Maximum over <paramref name="dims"/> (torch.amax: the gradient is shared evenly between ties).</summary>
    public Tensor Max(int[]? dims = null, bool keepDim = false) => Extremum(ReduceOp.Max, dims, keepDim);

    /// <summary>Maximum over one dim.</summary>
    public Tensor Max(int dim, bool keepDim = false) => Max([dim], keepDim);

    /// <summary>Minimum over <paramref name="dims"/> (torch.amin).</summary>
    public Tensor Min(int[]? dims = null, bool keepDim = false) => Extremum(ReduceOp.Min, dims, keepDim);

    private Tensor Extremum(ReduceOp op, int[]? dims, bool keepDim)
    {
        var (reduced, keep, outShape) = ReductionShapes(dims, keepDim);
        var r = ReduceKernel(op, reduced, outShape);
        return Autograd.Record(r, op.ToString(), [this], saved =>
        {
        var (x, rr) = (saved.Save(this), saved.Save(r));
        return (g, _) =>
        {
            using var rk = rr.Reshape(keep);
            using var hit = BinaryKernel(BinaryOp.Equal, x, rk);
            using var ties = hit.Sum(dims, keepDim: true);
            using var gk = g.Reshape(keep);
            using var share = gk.Div(ties);
            return [hit.Mul(share)];
        };
        });
    }

    /// <summary>Variance over <paramref name="dims"/> with Bessel's <paramref name="correction"/> (1 = unbiased, torch's default).</summary>
    public Tensor Var(int[]? dims = null, int correction = 1, bool keepDim = false)
    {
        var (reduced, _, _) = ReductionShapes(dims, keepDim);
        long count = 1;
        for (int i = 0; i < Rank; i++) if (reduced[i]) count *= _shape[i];
        using var mean = Mean(dims, keepDim: true);
        using var centered = Sub(mean);
        using var sq = centered.Mul(centered);
        using var s = sq.Sum(dims, keepDim);
        return s.Mul(1.0 / Math.Max(count - correction, 0));
    }

    /// <summary>p-norm over <paramref name="dims"/> (all when null): (Σ|x|^p)^(1/p); p = 2 by default (DoRA's weight norm).</summary>
    public Tensor Norm(double p = 2, int[]? dims = null, bool keepDim = false)
    {
        if (p == 2)
        {
            using var sq = Mul(this);
            using var s = sq.Sum(dims, keepDim);
            return s.Sqrt();
        }
        using var a = Abs();
        using var ap = a.Pow(p);
        using var sp = ap.Sum(dims, keepDim);
        return sp.Pow(1.0 / p);
    }
}
