using System.Runtime.CompilerServices;

namespace Peft.Core.Cpu;

/// <summary>Copies between strided and contiguous layouts. The innermost dimension is a tight loop (a memcpy when
/// its stride is 1); the outer dimensions advance an index counter, so any rank works without recursion.</summary>
internal static unsafe class StridedCopy
{
    /// <summary>dst (contiguous) ← src viewed with (shape, srcStrides). Element size in bytes is <paramref name="elem"/>.</summary>
    public static void Gather(byte* src, ReadOnlySpan<int> shape, ReadOnlySpan<long> srcStrides, byte* dst, int elem)
    {
        long n = Shapes.NumEl(shape);
        if (n == 0) return;
        if (shape.Length == 0) { Buffer.MemoryCopy(src, dst, elem, elem); return; }
        int rank = shape.Length;
        int inner = shape[rank - 1];
        long innerStride = srcStrides[rank - 1] * elem;
        Span<int> idx = stackalloc int[rank];
        long rows = n / Math.Max(inner, 1);
        byte* d = dst;
        for (long r = 0; r < rows; r++)
        {
            long off = 0;
            for (int k = 0; k < rank - 1; k++) off += idx[k] * srcStrides[k];
            byte* s = src + off * elem;
            if (innerStride == elem) Buffer.MemoryCopy(s, d, (long)inner * elem, (long)inner * elem);
            else CopyStridedRow(s, innerStride, d, elem, inner);
            d += (long)inner * elem;
            Advance(idx, shape, rank - 1);
        }
    }

    /// <summary>dst viewed with (shape, dstStrides) ← src (contiguous).</summary>
    public static void Scatter(byte* src, ReadOnlySpan<int> shape, byte* dst, ReadOnlySpan<long> dstStrides, int elem)
    {
        long n = Shapes.NumEl(shape);
        if (n == 0) return;
        if (shape.Length == 0) { Buffer.MemoryCopy(src, dst, elem, elem); return; }
        int rank = shape.Length;
        int inner = shape[rank - 1];
        long innerStride = dstStrides[rank - 1] * elem;
        Span<int> idx = stackalloc int[rank];
        long rows = n / Math.Max(inner, 1);
        byte* s = src;
        for (long r = 0; r < rows; r++)
        {
            long off = 0;
            for (int k = 0; k < rank - 1; k++) off += idx[k] * dstStrides[k];
            byte* d = dst + off * elem;
            if (innerStride == elem) Buffer.MemoryCopy(s, d, (long)inner * elem, (long)inner * elem);
            else for (int i = 0; i < inner; i++) CopyElem(s + (long)i * elem, d + i * innerStride, elem);
            s += (long)inner * elem;
            Advance(idx, shape, rank - 1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CopyStridedRow(byte* s, long stride, byte* d, int elem, int count)
    {
        switch (elem)
        {
            case 4: for (int i = 0; i < count; i++) ((uint*)d)[i] = *(uint*)(s + i * stride); break;
            case 8: for (int i = 0; i < count; i++) ((ulong*)d)[i] = *(ulong*)(s + i * stride); break;
            case 2: for (int i = 0; i < count; i++) ((ushort*)d)[i] = *(ushort*)(s + i * stride); break;
            default: for (int i = 0; i < count; i++) d[i] = s[i * stride]; break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CopyElem(byte* s, byte* d, int elem)
    {
        switch (elem)
        {
            case 4: *(uint*)d = *(uint*)s; break;
            case 8: *(ulong*)d = *(ulong*)s; break;
            case 2: *(ushort*)d = *(ushort*)s; break;
            default: *d = *s; break;
        }
    }

    /// <summary>Odometer increment of the first <paramref name="dims"/> indices.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Advance(Span<int> idx, ReadOnlySpan<int> shape, int dims)
    {
        for (int k = dims - 1; k >= 0; k--)
        {
            if (++idx[k] < shape[k]) return;
            idx[k] = 0;
        }
    }
}
