using System.Numerics;
using System.Numerics.Tensors;

namespace Peft.Core.Cpu;

internal enum ReduceOp { Sum, Max, Min }

/// <summary>
/// Reductions over a set of dims. The input is permuted so reduced dims come last and made contiguous (a copy
/// only when the layout needs it); each output element is then one vectorised reduction of a contiguous row.
/// A reduction over leading dims of a contiguous tensor (bias gradients) instead adds whole rows.
/// </summary>
internal static unsafe class Reduce<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public static Tensor Apply(ReduceOp op, Tensor x, bool[] reduced, int[] outShape)
    {
        int rank = x.Rank;
        long outer = 1, inner = 1;
        for (int d = 0; d < rank; d++) { if (reduced[d]) inner *= x._shape[d]; else outer *= x._shape[d]; }
        var result = Tensor.Allocate(outShape, x.DType, zero: false);
        T* po = result.Ptr<T>();

        int firstKept = Array.IndexOf(reduced, false);
        bool prefix = op == ReduceOp.Sum && x.IsContiguous && firstKept > 0 && !reduced.Skip(firstKept).Any(r => r);
        if (prefix)
        {
            // out[j] = Σ_i x[i, j]: add contiguous rows of length `outer`.
            T* px = x.Ptr<T>();
            var acc = new Span<T>(po, (int)outer);
            acc.Clear();
            for (long i = 0; i < inner; i++) TensorPrimitives.Add(acc, new ReadOnlySpan<T>(px + i * outer, (int)outer), acc);
            return result;
        }

        var perm = Enumerable.Range(0, rank).Where(d => !reduced[d]).Concat(Enumerable.Range(0, rank).Where(d => reduced[d])).ToArray();
        var shape = perm.Select(d => x._shape[d]).ToArray();
        var strides = perm.Select(d => x._strides[d]).ToArray();
        using var permuted = x.ViewOf(shape, strides, x.Offset);
        using var data = permuted.ContiguousData();
        T* p = data.Ptr<T>();
        int len = (int)inner;
        void RowsRange(long r0, long r1)
        {
            for (long r = r0; r < r1; r++)
            {
                var row = new ReadOnlySpan<T>(p + r * inner, len);
                po[r] = len == 0 ? (op == ReduceOp.Sum ? T.Zero : throw new ArgumentException("max/min over an empty dimension"))
                    : op switch
                    {
                        ReduceOp.Sum => TensorPrimitives.Sum(row),
                        ReduceOp.Max => TensorPrimitives.Max(row),
                        _ => TensorPrimitives.Min(row),
                    };
            }
        }
        long perTask = Math.Max(1, 65536 / Math.Max(len, 1));
        long tasks = (outer + perTask - 1) / perTask;
        if (tasks <= 1) RowsRange(0, outer);
        else CpuParallel.For(tasks, t => RowsRange(t * perTask, Math.Min(outer, (t + 1) * perTask)));
        return result;
    }
}

/// <summary>Softmax and log-softmax over the last dim of a contiguous tensor, with max subtraction for stability.</summary>
internal static unsafe class RowSoftmax<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public static void Forward(T* x, T* y, long rows, int n, bool log)
    {
        void Range(long r0, long r1)
        {
            for (long r = r0; r < r1; r++)
            {
                var xi = new ReadOnlySpan<T>(x + r * n, n);
                var yi = new Span<T>(y + r * n, n);
                T max = TensorPrimitives.Max(xi);
                if (T.IsNegativeInfinity(max)) { yi.Fill(log ? T.NegativeInfinity : T.Zero); continue; } // fully masked row
                TensorPrimitives.Subtract(xi, max, yi);
                if (log)
                {
                    // log_softmax = (x - max) - log Σ exp(x - max)
                    TensorPrimitives.Subtract(yi, T.Log(Scratch<T>.SumExpShifted(xi, max)), yi);
                }
                else
                {
                    TensorPrimitives.Exp(yi, yi);
                    TensorPrimitives.Divide(yi, TensorPrimitives.Sum(yi), yi);
                }
            }
        }
        Parallel(rows, n, Range);
    }

    /// <summary>Gradient w.r.t. the input given the forward output y and upstream g.
    /// softmax: y ⊙ (g − Σ g⊙y); log-softmax: g − exp(y) · Σ g.</summary>
    public static void Backward(T* y, T* g, T* dx, long rows, int n, bool log)
    {
        void Range(long r0, long r1)
        {
            for (long r = r0; r < r1; r++)
            {
                var yi = new ReadOnlySpan<T>(y + r * n, n);
                var gi = new ReadOnlySpan<T>(g + r * n, n);
                var di = new Span<T>(dx + r * n, n);
                if (log)
                {
                    T s = TensorPrimitives.Sum(gi);
                    TensorPrimitives.Exp(yi, di);
                    TensorPrimitives.MultiplyAdd(di, -s, gi, di);
                }
                else
                {
                    T dot = TensorPrimitives.Dot(gi, yi);
                    TensorPrimitives.Subtract(gi, dot, di);
                    TensorPrimitives.Multiply(di, yi, di);
                }
            }
        }
        Parallel(rows, n, Range);
    }

    private static void Parallel(long rows, int n, Action<long, long> range)
    {
        long perTask = Math.Max(1, 32768 / Math.Max(n, 1));
        long tasks = (rows + perTask - 1) / perTask;
        if (tasks <= 1) range(0, rows);
        else CpuParallel.For(tasks, t => range(t * perTask, Math.Min(rows, (t + 1) * perTask)));
    }
}
