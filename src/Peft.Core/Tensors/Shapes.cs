namespace Peft.Core;

/// <summary>Shape and stride arithmetic shared by the front end and the backends.</summary>
public static class Shapes
{
    /// <summary>Product of the dimensions (1 for a scalar).</summary>
    public static long NumEl(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        return n;
    }

    /// <summary>Row-major strides for <paramref name="shape"/>.</summary>
    public static long[] ContiguousStrides(ReadOnlySpan<int> shape)
    {
        var s = new long[shape.Length];
        long acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
        return s;
    }

    /// <summary>True when the strides are row-major with no gaps (size-1 dims may have any stride).</summary>
    public static bool IsContiguous(ReadOnlySpan<int> shape, ReadOnlySpan<long> strides)
    {
        long expected = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            if (shape[i] == 1) continue;
            if (strides[i] != expected) return false;
            expected *= shape[i];
        }
        return true;
    }

    /// <summary>Maps a possibly negative dim into [0, rank).</summary>
    public static int NormalizeDim(int dim, int rank)
    {
        int d = dim < 0 ? dim + rank : dim;
        if (d < 0 || d >= Math.Max(rank, 1))
            throw new ArgumentOutOfRangeException(nameof(dim), $"dimension {dim} is out of range for a tensor of rank {rank}");
        return d;
    }

    /// <summary>NumPy/PyTorch broadcasting of two shapes.</summary>
    public static int[] Broadcast(ReadOnlySpan<int> a, ReadOnlySpan<int> b)
    {
        int rank = Math.Max(a.Length, b.Length);
        var r = new int[rank];
        for (int i = 0; i < rank; i++)
        {
            int da = i < rank - a.Length ? 1 : a[i - (rank - a.Length)];
            int db = i < rank - b.Length ? 1 : b[i - (rank - b.Length)];
            if (da != db && da != 1 && db != 1)
                throw new ShapeMismatchException($"shapes {Format(a)} and {Format(b)} cannot be broadcast together (dimension {i}: {da} vs {db})");
            r[i] = da == 1 ? db : da;
        }
        return r;
    }

    /// <summary>Strides that read a tensor of (<paramref name="shape"/>, <paramref name="strides"/>) as if it had
    /// shape <paramref name="target"/>: broadcast dims get stride 0.</summary>
    public static long[] BroadcastStrides(ReadOnlySpan<int> shape, ReadOnlySpan<long> strides, ReadOnlySpan<int> target)
    {
        var r = new long[target.Length];
        int off = target.Length - shape.Length;
        for (int i = 0; i < target.Length; i++)
        {
            if (i < off) { r[i] = 0; continue; }
            r[i] = shape[i - off] == 1 && target[i] != 1 ? 0 : strides[i - off];
        }
        return r;
    }

    /// <summary>Formats a shape as "[2, 3]".</summary>
    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    /// <summary>Resolves one -1 entry of a reshape target against the element count.</summary>
    public static int[] InferReshape(ReadOnlySpan<int> target, long numel)
    {
        var r = target.ToArray();
        int infer = -1;
        long known = 1;
        for (int i = 0; i < r.Length; i++)
        {
            if (r[i] == -1)
            {
                if (infer >= 0) throw new ShapeMismatchException($"reshape target {Format(target)} has more than one -1");
                infer = i;
            }
            else if (r[i] < 0) throw new ShapeMismatchException($"reshape target {Format(target)} has a negative size");
            else known *= r[i];
        }
        if (infer >= 0)
        {
            if (known == 0 || numel % known != 0)
                throw new ShapeMismatchException($"cannot reshape {numel} elements into {Format(target)}");
            r[infer] = (int)(numel / known);
        }
        else if (known != numel)
            throw new ShapeMismatchException($"cannot reshape {numel} elements into {Format(target)}");
        return r;
    }
}

/// <summary>Thrown when tensor shapes do not fit an operation; the message names both shapes.</summary>
public sealed class ShapeMismatchException(string message) : ArgumentException(message);

/// <summary>Thrown when an operation gets a dtype it does not support or two dtypes that do not match.</summary>
public sealed class DTypeMismatchException(string message) : ArgumentException(message);
