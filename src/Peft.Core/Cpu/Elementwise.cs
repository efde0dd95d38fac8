using System.Numerics;
using System.Numerics.Tensors;

namespace Peft.Core.Cpu;

internal enum BinaryOp { Add, Sub, Mul, Div, Pow, Maximum, Minimum, Greater, Less, Equal }

/// <summary>
/// Broadcasting binary ops on F32/F64. The output is walked row by row (last dim); each row is one vectorised
/// TensorPrimitives call when its inputs are unit-stride or broadcast scalars, so broadcasting costs no more than
/// the fast path except for rows with odd strides.
/// </summary>
internal static unsafe class Elementwise<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public static void Binary(BinaryOp op, Tensor a, Tensor b, Tensor output)
    {
        var shape = output._shape;
        var sa = Shapes.BroadcastStrides(a._shape, a._strides, shape);
        var sb = Shapes.BroadcastStrides(b._shape, b._strides, shape);
        T* pa = a.Ptr<T>(), pb = b.Ptr<T>(), po = output.Ptr<T>();
        long n = output.NumEl;
        if (n == 0) return;
        int rank = shape.Length;
        if (rank == 0) { Row(op, pa, 0, pb, 0, po, 1); return; }
        int inner = shape[rank - 1];
        long rows = n / inner;
        long ia = sa[rank - 1], ib = sb[rank - 1];
        // Rows are independent; split them over threads only when there is enough work to pay for it.
        long rowsPerTask = Math.Max(1, 32768 / Math.Max(inner, 1));
        long tasks = (rows + rowsPerTask - 1) / rowsPerTask;
        void RunRows(long r0, long r1)
        {
            Span<int> idx = stackalloc int[rank];
            StridedCopy.Seek(idx, shape, rank - 1, r0);
            for (long r = r0; r < r1; r++)
            {
                long oa = 0, ob = 0;
                for (int k = 0; k < rank - 1; k++) { oa += idx[k] * sa[k]; ob += idx[k] * sb[k]; }
                Row(op, pa + oa, ia, pb + ob, ib, po + r * inner, inner);
                StridedCopy.Advance(idx, shape, rank - 1);
            }
        }
        if (tasks <= 1) RunRows(0, rows);
        else CpuParallel.For(tasks, t => RunRows(t * rowsPerTask, Math.Min(rows, (t + 1) * rowsPerTask)));
    }

    private static void Row(BinaryOp op, T* a, long sa, T* b, long sb, T* o, int n)
    {
        var dst = new Span<T>(o, n);
        if (sa == 1 && sb == 1)
        {
            var x = new ReadOnlySpan<T>(a, n);
            var y = new ReadOnlySpan<T>(b, n);
            switch (op)
            {
                case BinaryOp.Add: TensorPrimitives.Add(x, y, dst); return;
                case BinaryOp.Sub: TensorPrimitives.Subtract(x, y, dst); return;
                case BinaryOp.Mul: TensorPrimitives.Multiply(x, y, dst); return;
                case BinaryOp.Div: TensorPrimitives.Divide(x, y, dst); return;
                case BinaryOp.Pow: TensorPrimitives.Pow(x, y, dst); return;
                case BinaryOp.Maximum: TensorPrimitives.Max(x, y, dst); return;
                case BinaryOp.Minimum: TensorPrimitives.Min(x, y, dst); return;
            }
        }
        else if (sa == 1 && sb == 0)
        {
            var x = new ReadOnlySpan<T>(a, n);
            T y = *b;
            switch (op)
            {
                case BinaryOp.Add: TensorPrimitives.Add(x, y, dst); return;
                case BinaryOp.Sub: TensorPrimitives.Subtract(x, y, dst); return;
                case BinaryOp.Mul: TensorPrimitives.Multiply(x, y, dst); return;
                case BinaryOp.Div: TensorPrimitives.Divide(x, y, dst); return;
                case BinaryOp.Pow: TensorPrimitives.Pow(x, y, dst); return;
                case BinaryOp.Maximum: TensorPrimitives.Max(x, y, dst); return;
                case BinaryOp.Minimum: TensorPrimitives.Min(x, y, dst); return;
            }
        }
        else if (sa == 0 && sb == 1)
        {
            T x = *a;
            var y = new ReadOnlySpan<T>(b, n);
            switch (op)
            {
                case BinaryOp.Add: TensorPrimitives.Add(y, x, dst); return;
                case BinaryOp.Sub: TensorPrimitives.Subtract(x, y, dst); return;
                case BinaryOp.Mul: TensorPrimitives.Multiply(y, x, dst); return;
                case BinaryOp.Div: TensorPrimitives.Divide(x, y, dst); return;
                case BinaryOp.Pow: TensorPrimitives.Pow(x, y, dst); return;
                case BinaryOp.Maximum: TensorPrimitives.Max(y, x, dst); return;
                case BinaryOp.Minimum: TensorPrimitives.Min(y, x, dst); return;
            }
        }
        for (int i = 0; i < n; i++) o[i] = Scalar(op, a[i * sa], b[i * sb]);
    }

    public static T Scalar(BinaryOp op, T x, T y) => op switch
    {
        BinaryOp.Add => x + y,
        BinaryOp.Sub => x - y,
        BinaryOp.Mul => x * y,
        BinaryOp.Div => x / y,
        BinaryOp.Pow => T.Pow(x, y),
        BinaryOp.Maximum => T.Max(x, y),
        BinaryOp.Minimum => T.Min(x, y),
        BinaryOp.Greater => x > y ? T.One : T.Zero,
        BinaryOp.Less => x < y ? T.One : T.Zero,
        BinaryOp.Equal => x == y ? T.One : T.Zero,
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };
}
