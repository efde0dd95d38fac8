using System.Runtime.CompilerServices;

namespace Peft.Core.Cpu;

/// <summary>Copies between strided and contiguous layouts. The innermost dimension is a tight loop (a memcpy when
/// its stride is 1); the outer dimensions advance an index counter, so any rank works without recursion.</summary>
internal static unsafe class StridedCopy
{
    // Below this many bytes a copy stays on the calling thread (a region costs ~1 µs; 256 KiB copies in ~15–30 µs).
    private const long ParallelBytes = 1 << 18;

    /// <summary>dst (contiguous) ← src viewed with (shape, srcStrides). Element size in bytes is <paramref name="elem"/>.</summary>
    public static void Gather(byte* src, ReadOnlySpan<int> shape, ReadOnlySpan<long> srcStrides, byte* dst, int elem) =>
        Copy(src, shape, srcStrides, dst, elem, gather: true);

    /// <summary>dst viewed with (shape, dstStrides) ← src (contiguous).</summary>
    public static void Scatter(byte* src, ReadOnlySpan<int> shape, byte* dst, ReadOnlySpan<long> dstStrides, int elem) =>
        Copy(dst, shape, dstStrides, src, elem, gather: false);

    /// <summary>Copies between the strided view (<paramref name="strided"/>, shape, strides) and the contiguous buffer
    /// <paramref name="dense"/>, in the direction <paramref name="gather"/> says. Copies above 256 KiB split their rows over
    /// the CPU team: a GPT-2 step's ContiguousCopy calls (head permutes, gradient accumulation, clones) were ≈ 5 %
    /// of the calling thread's time, all of it serial.</summary>
    private static void Copy(byte* strided, ReadOnlySpan<int> shape, ReadOnlySpan<long> strides, byte* dense, int elem, bool gather)
    {
        long n = Shapes.NumEl(shape);
        if (n == 0) return;
        if (shape.Length == 0) { if (gather) Buffer.MemoryCopy(strided, dense, elem, elem); else Buffer.MemoryCopy(dense, strided, elem, elem); return; }
        int inner = shape[^1];
        long rows = n / Math.Max(inner, 1);
        if (n * elem < ParallelBytes || rows < 2) { CopyRows(strided, shape, strides, dense, elem, gather, 0, rows); return; }
        int[] shapeCopy = shape.ToArray();
        long[] stridesCopy = strides.ToArray();
        long chunks = Math.Min(rows, Math.Max(2, n * elem / (ParallelBytes / 4)));
        long perChunk = (rows + chunks - 1) / chunks;
        chunks = (rows + perChunk - 1) / perChunk;
        CpuParallel.For(chunks, c => CopyRows(strided, shapeCopy, stridesCopy, dense, elem, gather, c * perChunk, Math.Min(rows, (c + 1) * perChunk)));
    }

    /// <summary>Rows [r0, r1) of the copy (a row = the innermost dimension).</summary>
    private static void CopyRows(byte* strided, ReadOnlySpan<int> shape, ReadOnlySpan<long> strides, byte* dense, int elem, bool gather, long r0, long r1)
    {
        int rank = shape.Length;
        int inner = shape[rank - 1];
        long innerStride = strides[rank - 1] * elem;
        long rowBytes = (long)inner * elem;
        Span<int> idx = stackalloc int[rank];
        Seek(idx, shape, rank - 1, r0);
        byte* d = dense + r0 * rowBytes;
        for (long r = r0; r < r1; r++)
        {
            long off = 0;
            for (int k = 0; k < rank - 1; k++) off += idx[k] * strides[k];
            byte* s = strided + off * elem;
            if (innerStride == elem)
            {
                if (gather) Buffer.MemoryCopy(s, d, rowBytes, rowBytes);
                else Buffer.MemoryCopy(d, s, rowBytes, rowBytes);
            }
            else if (gather && innerStride == 0) FillRow(s, d, elem, inner);
            else if (gather) CopyStridedRow(s, innerStride, d, elem, inner);
            else for (int i = 0; i < inner; i++) CopyElem(d + (long)i * elem, s + i * innerStride, elem);
            d += rowBytes;
            Advance(idx, shape, rank - 1);
        }
    }

    /// <summary>A row broadcast along its innermost dimension (stride 0: an expanded scalar or column, as the
    /// gradient of a sum or a bias arrives): one value, a vectorised fill instead of an element-by-element copy.</summary>
    private static void FillRow(byte* s, byte* d, int elem, int count)
    {
        switch (elem)
        {
            case 4: new Span<uint>(d, count).Fill(*(uint*)s); break;
            case 8: new Span<ulong>(d, count).Fill(*(ulong*)s); break;
            case 2: new Span<ushort>(d, count).Fill(*(ushort*)s); break;
            case 1: new Span<byte>(d, count).Fill(*s); break;
            default: for (int i = 0; i < count; i++) Buffer.MemoryCopy(s, d + (long)i * elem, elem, elem); break;
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

    /// <summary>Sets the first <paramref name="dims"/> indices to those of row <paramref name="row"/> (row-major over
    /// those dims): where a chunk of rows starts its odometer.</summary>
    public static void Seek(Span<int> idx, ReadOnlySpan<int> shape, int dims, long row)
    {
        for (int k = dims - 1; k >= 0; k--) { idx[k] = (int)(row % shape[k]); row /= shape[k]; }
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
