namespace Peft.Core.Cpu;

/// <summary>Index kernels over contiguous data viewed as [outer, dimSize, inner] around the indexed dim.</summary>
internal static unsafe class Indexing
{
    /// <summary>Reads indices of an I64 or I32 tensor as longs, checking each against [0, limit).</summary>
    public static long[] ReadIndices(Tensor index, int limit, string what)
    {
        if (index.DType is not (DType.I64 or DType.I32))
            throw new DTypeMismatchException($"{what}: indices must be I64 or I32, got {index.DType}");
        using var c = index.HostData(); // indices are validated on the host, wherever they live
        var r = new long[c.NumEl];
        if (c.DType == DType.I64) c.Span<long>().CopyTo(r);
        else { var s = c.Span<int>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; }
        for (int i = 0; i < r.Length; i++)
        {
            if (r[i] < 0) r[i] += limit; // torch allows negative indices for index_select/gather
            if (r[i] < 0 || r[i] >= limit)
                throw new IndexOutOfRangeException($"{what}: index {(r[i] < 0 ? r[i] - limit : r[i])} is out of range for a dimension of size {limit}");
        }
        return r;
    }

    /// <summary>out[o, j, i] = src[o, idx[j], i].</summary>
    public static void Select(byte* src, byte* dst, long outer, int dimSize, long inner, long[] idx, int elem)
    {
        long rowBytes = inner * elem;
        CpuParallel.For(outer, o =>
        {
            for (int j = 0; j < idx.Length; j++)
                Buffer.MemoryCopy(src + (o * dimSize + idx[j]) * rowBytes, dst + (o * idx.Length + j) * rowBytes, rowBytes, rowBytes);
        });
    }

    /// <summary>acc[o, idx[j], i] += src[o, j, i] (serial over j: indices may repeat, e.g. a token id twice).</summary>
    public static void AddAt<T>(T* src, T* acc, long outer, int dimSize, long inner, long[] idx) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        CpuParallel.For(outer, o =>
        {
            for (int j = 0; j < idx.Length; j++)
            {
                var d = new Span<T>(acc + (o * dimSize + idx[j]) * inner, (int)inner);
                System.Numerics.Tensors.TensorPrimitives.Add(d, new ReadOnlySpan<T>(src + (o * idx.Length + j) * inner, (int)inner), d);
            }
        });
    }

    /// <summary>torch.gather on [outer, n, inner] data with an index of shape [outer, m, inner].</summary>
    public static void Gather<T>(T* src, T* dst, long outer, int n, int m, long inner, long[] idx) where T : unmanaged
    {
        for (long o = 0; o < outer; o++)
            for (int j = 0; j < m; j++)
                for (long i = 0; i < inner; i++)
                {
                    long at = (o * m + j) * inner + i;
                    dst[at] = src[(o * n + idx[at]) * inner + i];
                }
    }

    /// <summary>The adjoint of <see cref="Gather{T}"/>: acc[o, idx, i] += src[o, j, i].</summary>
    public static void ScatterAdd<T>(T* src, T* acc, long outer, int n, int m, long inner, long[] idx) where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        for (long o = 0; o < outer; o++)
            for (int j = 0; j < m; j++)
                for (long i = 0; i < inner; i++)
                {
                    long at = (o * m + j) * inner + i;
                    acc[(o * n + idx[at]) * inner + i] += src[at];
                }
    }

    /// <summary>out = cond ? a : b on contiguous, equally shaped buffers (cond is U8).</summary>
    public static void Where(byte* cond, byte* a, byte* b, byte* dst, long n, int elem)
    {
        for (long i = 0; i < n; i++)
            Buffer.MemoryCopy((cond[i] != 0 ? a : b) + i * elem, dst + i * elem, elem, elem);
    }
}
