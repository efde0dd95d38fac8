using System.Runtime.InteropServices;
using Peft.Core;

namespace Peft.Cuda.Kernels;

/// <summary>
/// native/include/peft_kernels.h's <c>peft_strides</c>, passed by value to the element-wise kernels: an iteration
/// shape (outermost first) and two stride sets in elements. <see cref="Create"/> drops size-1 dims and merges dims
/// that are dense in both stride sets, so dense same-shape operands become rank 1 (the kernels' fast path).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct StridedLayout
{
    internal const int MaxRank = 8;
    internal int Rank;
    private readonly int _unused;
    internal fixed long Shape[MaxRank];
    internal fixed long A[MaxRank];
    internal fixed long B[MaxRank];

    /// <summary>The layout of iterating <paramref name="shape"/> with strides <paramref name="a"/> and <paramref name="b"/>.</summary>
    internal static StridedLayout Create(ReadOnlySpan<int> shape, ReadOnlySpan<long> a, ReadOnlySpan<long> b)
    {
        var dims = new List<(long Size, long A, long B)>();
        for (int d = 0; d < shape.Length; d++)
        {
            if (shape[d] == 1) continue;
            if (dims.Count > 0)
            {
                var (size, sa, sb) = dims[^1];
                if (sa == a[d] * shape[d] && sb == b[d] * shape[d])
                {
                    dims[^1] = (size * shape[d], a[d], b[d]);
                    continue;
                }
            }
            dims.Add((shape[d], a[d], b[d]));
        }
        if (dims.Count == 0) dims.Add((1, 1, 1)); // a single element
        if (dims.Count > MaxRank)
            throw new NotSupportedException($"a strided layout of {dims.Count} non-mergeable dims (shape {Shapes.Format(shape.ToArray())}) exceeds the CUDA kernels' {MaxRank}; make the tensor contiguous first");
        var layout = new StridedLayout { Rank = dims.Count };
        for (int d = 0; d < dims.Count; d++)
        {
            layout.Shape[d] = dims[d].Size;
            layout.A[d] = dims[d].A;
            layout.B[d] = dims[d].B;
        }
        return layout;
    }
}
