using Peft.Core;
using Peft.Core.Cpu;
using Peft.Core.Quantization;
using Peft.Cuda.Interop;
using Peft.Cuda.Kernels;

namespace Peft.Cuda;

/// <summary>
/// Tensor's front-ends on CUDA tensors: element-wise ops (kernels/elementwise.cu), reductions, softmax and norms
/// (kernels/rows.cu), dtype casts and batched matrix products (cuBLAS). Registered with Peft.Core by
/// <see cref="CudaBackend"/>, so <c>x.Add(y)</c>, <c>loss.Backward()</c> and every backward formula written with tensor
/// ops run on the GPU when the operands are there. Everything is queued on the device's stream.
/// </summary>
internal sealed unsafe class CudaOps : IDeviceKernels
{
    private const uint Block = 256;

    public Tensor Empty(int[] shape, DType dtype, Device device) => CudaTensors.Empty(shape, dtype, CudaDevice.Get(device.Index));

    public void Copy(Tensor destination, Tensor source)
    {
        long n = destination.NumEl;
        if (n == 0) return;
        if (source.DType.SizeOf() != destination.DType.SizeOf())
            throw new ArgumentException($"internal: CUDA copy between {source.DType} and {destination.DType}");
        var layout = StridedLayout.Create(destination.Shape, source.Strides, destination.Strides);
        string name = destination.DType.SizeOf() switch
        {
            1 => "strided_copy_u8",
            2 => "strided_copy_f16",
            4 => "strided_copy_f32",
            8 => "strided_copy_f64",
            var size => throw new NotSupportedException($"no CUDA copy for {size}-byte elements"),
        };
        var device = CudaTensors.DeviceOf(destination);
        device.Kernels.Launch(name, (device.Kernels.GridFor(n, Block), 1, 1), (Block, 1, 1), 0, false, &layout,
            CudaTensors.Address(source), CudaTensors.Address(destination), n);
    }

    public Tensor Cast(Tensor x, DType dtype)
    {
        if (x.DType == dtype) return x.ContiguousCopy();
        using var dense = x.IsContiguous ? null : x.ContiguousCopy(); // a transposed bf16 weight, say: the cast kernels read dense memory
        var src = dense ?? x;
        if (src.DType is DType.BF16 or DType.F16 && dtype is DType.BF16 or DType.F16)
        {
            using var wide = CudaKernels.Cast(src, DType.F32);
            return CudaKernels.Cast(wide, dtype);
        }
        return CudaKernels.Cast(src, dtype);
    }

    public Tensor Binary(BinaryOp op, Tensor a, Tensor b, int[] shape)
    {
        RequireF32(op.ToString(), a, b);
        var device = CudaTensors.DeviceOf(a);
        var output = CudaTensors.Empty(shape, DType.F32, device);
        long n = output.NumEl;
        if (n == 0) return output;
        var layout = StridedLayout.Create(shape, Shapes.BroadcastStrides(a.Shape, a.Strides, shape), Shapes.BroadcastStrides(b.Shape, b.Strides, shape));
        device.Kernels.Launch("binary_f32", (device.Kernels.GridFor(n, Block), 1, 1), (Block, 1, 1), 0, false, &layout,
            OpCode(op), CudaTensors.Address(a), CudaTensors.Address(b), CudaTensors.Address(output), n);
        return output;
    }

    public Tensor Unary(UnaryOp op, Tensor x, double p0, double p1)
    {
        RequireF32(op.ToString(), x);
        CudaTensors.RequireContiguous(x, op.ToString());
        var device = CudaTensors.DeviceOf(x);
        var y = CudaTensors.Empty(x.Shape, DType.F32, device);
        long n = x.NumEl;
        if (n > 0)
            device.Kernels.Launch("unary_f32", device.Kernels.GridFor(n, Block), Block, OpCode(op), CudaTensors.Address(x), CudaTensors.Address(y), n, (float)p0, (float)p1);
        return y;
    }

    public Tensor Reduce(ReduceOp op, Tensor x, bool[] reduced, int[] outShape)
    {
        RequireF32(op.ToString(), x);
        var device = CudaTensors.DeviceOf(x);
        var output = CudaTensors.Empty(outShape, DType.F32, device);
        if (output.NumEl == 0) return output;
        var shape = x.Shape;
        if (x.IsContiguous && ReducedBlock(shape, reduced) is (long outer, long r, long inner))
        {
            if (inner == 1) ReduceRows(device, op, x, output, outer, r);
            else device.Kernels.Launch("reduce_mid_f32", device.Kernels.GridFor(outer * inner, Block), Block,
                ReduceCode(op), CudaTensors.Address(x), CudaTensors.Address(output), outer, r, inner);
            return output;
        }
        // Reduced dims moved last and made dense: then each output is one row.
        var order = Enumerable.Range(0, shape.Length).Where(d => !reduced[d]).Concat(Enumerable.Range(0, shape.Length).Where(d => reduced[d])).ToArray();
        var strides = x.Strides;
        using var permuted = x.ViewOf(order.Select(d => shape[d]).ToArray(), order.Select(d => strides[d]).ToArray(), x.Offset);
        using var dense = permuted.ContiguousCopy();
        long rowLength = order.Where(d => reduced[d]).Aggregate(1L, (p, d) => p * shape[d]);
        ReduceRows(device, op, dense, output, output.NumEl, rowLength);
        return output;
    }

    /// <summary>(outer, r, inner) when the reduced dims of a dense tensor form one block (size-1 dims ignored).</summary>
    private static (long Outer, long R, long Inner)? ReducedBlock(int[] shape, bool[] reduced)
    {
        int lo = -1, hi = -1;
        for (int d = 0; d < shape.Length; d++)
        {
            if (!reduced[d] || shape[d] == 1) continue;
            if (lo < 0) lo = d;
            hi = d;
        }
        if (lo < 0) return (Shapes.NumEl(shape), 1, 1);
        for (int d = lo; d <= hi; d++)
            if (!reduced[d] && shape[d] != 1) return null;
        long outer = 1, r = 1, inner = 1;
        for (int d = 0; d < shape.Length; d++)
        {
            if (d < lo) outer *= shape[d];
            else if (d <= hi) r *= shape[d];
            else inner *= shape[d];
        }
        return (outer, r, inner);
    }

    private static void ReduceRows(CudaDevice device, ReduceOp op, Tensor x, Tensor output, long rows, long n) =>
        device.Kernels.Launch("reduce_rows_f32", RowGrid(device, rows), RowBlock(n), ReduceCode(op), CudaTensors.Address(x), CudaTensors.Address(output), rows, n);

    public Tensor MatMul(Tensor a, Tensor b, int[] outShape) => CudaMatMul.Batched(a, b, outShape);

    public Tensor Softmax(Tensor x, bool log)
    {
        RequireF32("Softmax", x);
        CudaTensors.RequireContiguous(x, "Softmax");
        var device = CudaTensors.DeviceOf(x);
        var y = CudaTensors.Empty(x.Shape, DType.F32, device);
        var (rows, n) = Rows(x);
        if (rows * n > 0)
            device.Kernels.Launch("softmax_rows_f32", RowGrid(device, rows), RowBlock(n), CudaTensors.Address(x), CudaTensors.Address(y), rows, n, log ? 1 : 0);
        return y;
    }

    public Tensor SoftmaxBackward(Tensor y, Tensor g, bool log)
    {
        RequireF32("Softmax backward", y, g);
        CudaTensors.RequireContiguous(y, "Softmax backward");
        CudaTensors.RequireContiguous(g, "Softmax backward");
        var device = CudaTensors.DeviceOf(y);
        var dx = CudaTensors.Empty(y.Shape, DType.F32, device);
        var (rows, n) = Rows(y);
        if (rows * n > 0)
            device.Kernels.Launch("softmax_rows_backward_f32", RowGrid(device, rows), RowBlock(n),
                CudaTensors.Address(y), CudaTensors.Address(g), CudaTensors.Address(dx), rows, n, log ? 1 : 0);
        return dx;
    }

    public (Tensor Y, Tensor Mean, Tensor Rstd) Norm(Tensor x, Tensor? weight, Tensor? bias, double eps, bool rms)
    {
        RequireF32("Norm", [x, .. new[] { weight, bias }.OfType<Tensor>()]);
        CudaTensors.RequireContiguous(x, "Norm");
        var device = CudaTensors.DeviceOf(x);
        var (rows, n) = Rows(x);
        var y = CudaTensors.Empty(x.Shape, DType.F32, device);
        var mean = CudaTensors.Empty([checked((int)rows)], DType.F32, device);
        var rstd = CudaTensors.Empty([checked((int)rows)], DType.F32, device);
        if (rows * n > 0)
            device.Kernels.Launch("norm_rows_f32", RowGrid(device, rows), RowBlock(n), CudaTensors.Address(x), AddressOrNull(weight), AddressOrNull(bias),
                CudaTensors.Address(y), CudaTensors.Address(mean), CudaTensors.Address(rstd), rows, n, (float)eps, rms ? 1 : 0);
        return (y, mean, rstd);
    }

    public (Tensor Dx, Tensor Xhat) NormBackward(Tensor x, Tensor g, Tensor mean, Tensor rstd, Tensor? weight, bool rms)
    {
        RequireF32("Norm backward", [x, g, mean, rstd, .. new[] { weight }.OfType<Tensor>()]);
        var device = CudaTensors.DeviceOf(x);
        var (rows, n) = Rows(x);
        var dx = CudaTensors.Empty(x.Shape, DType.F32, device);
        var xhat = CudaTensors.Empty(x.Shape, DType.F32, device);
        if (rows * n > 0)
            device.Kernels.Launch("norm_rows_backward_f32", RowGrid(device, rows), RowBlock(n), CudaTensors.Address(x), CudaTensors.Address(g),
                CudaTensors.Address(mean), CudaTensors.Address(rstd), AddressOrNull(weight), CudaTensors.Address(dx), CudaTensors.Address(xhat), rows, n, rms ? 1 : 0);
        return (dx, xhat);
    }

    public Tensor IndexSelect(Tensor source, long[] index, long outer, int dimSize, long inner, int[] outShape)
    {
        RequireF32("IndexSelect", source);
        CudaTensors.RequireContiguous(source, "IndexSelect");
        var device = CudaTensors.DeviceOf(source);
        var output = CudaTensors.Empty(outShape, DType.F32, device);
        long total = outer * index.Length * inner;
        if (total == 0) return output;
        using var idx = Upload(index, device);
        device.Kernels.Launch("index_select_f32", device.Kernels.GridFor(total, Block), Block, CudaTensors.Address(source), CudaTensors.Address(output),
            CudaTensors.Address(idx), outer, (long)dimSize, (long)index.Length, inner);
        return output;
    }

    public Tensor IndexAdd(Tensor g, long[] index, long outer, int dimSize, long inner, int[] inShape)
    {
        RequireF32("IndexSelect backward", g);
        CudaTensors.RequireContiguous(g, "IndexSelect backward");
        var device = CudaTensors.DeviceOf(g);
        var acc = CudaTensors.Zeros(inShape, DType.F32, device);
        if (outer * index.Length * inner == 0) return acc;
        // The positions of each distinct row, ascending (a stable sort by row): one thread then sums each output
        // element in the CPU's order, so repeated ids need no atomics and the sum is the CPU's bit for bit.
        var order = Enumerable.Range(0, index.Length).OrderBy(j => index[j]).ToArray();
        var rows = new List<long>();
        var starts = new List<long>();
        for (int p = 0; p < order.Length; p++)
            if (p == 0 || index[order[p]] != index[order[p - 1]]) { rows.Add(index[order[p]]); starts.Add(p); }
        starts.Add(order.Length);
        using var rowsD = Upload(rows.ToArray(), device);
        using var startsD = Upload(starts.ToArray(), device);
        using var positionsD = Upload(order.Select(j => (long)j).ToArray(), device);
        long blocks = outer * rows.Count;
        device.Kernels.Launch("index_add_f32", (uint)Math.Clamp(blocks, 1, (long)device.MultiprocessorCount * 32), RowBlock(inner), CudaTensors.Address(g), CudaTensors.Address(acc),
            CudaTensors.Address(rowsD), CudaTensors.Address(startsD), CudaTensors.Address(positionsD), (long)rows.Count, outer, (long)dimSize, (long)index.Length, inner);
        return acc;
    }

    public Tensor Where(Tensor condition, Tensor a, Tensor b)
    {
        if (condition.DType != DType.U8 || a.DType.SizeOf() != 4 || b.DType != a.DType)
            throw new NotSupportedException($"Where on CUDA takes a U8 condition and two 4-byte branches of one dtype (got {condition.DType}, {a.DType}, {b.DType})");
        var device = CudaTensors.DeviceOf(a);
        var output = CudaTensors.Empty(a.Shape, a.DType, device);
        long n = output.NumEl;
        if (n > 0)
            device.Kernels.Launch("where_f32", device.Kernels.GridFor(n, Block), Block, CudaTensors.Address(condition), CudaTensors.Address(a), CudaTensors.Address(b), CudaTensors.Address(output), n);
        return output;
    }

    public (Tensor Loss, Tensor Lse) CrossEntropy(Tensor logits, long[] targets, long ignoreIndex, double smoothing)
    {
        RequireF32("CrossEntropy", logits);
        CudaTensors.RequireContiguous(logits, "CrossEntropy");
        var device = CudaTensors.DeviceOf(logits);
        var (rows, c) = Rows(logits);
        var loss = CudaTensors.Empty([checked((int)rows)], DType.F32, device);
        var lse = CudaTensors.Empty([checked((int)rows)], DType.F32, device);
        if (rows * c == 0) return (loss, lse);
        using var t = Upload(targets, device);
        device.Kernels.Launch("cross_entropy_f32", RowGrid(device, rows), RowBlock(c), CudaTensors.Address(logits), CudaTensors.Address(t),
            CudaTensors.Address(loss), CudaTensors.Address(lse), rows, c, ignoreIndex, (float)smoothing);
        return (loss, lse);
    }

    public Tensor CrossEntropyBackward(Tensor logits, long[] targets, Tensor lse, Tensor scale, long ignoreIndex, double smoothing)
    {
        RequireF32("CrossEntropy backward", logits, lse, scale);
        var device = CudaTensors.DeviceOf(logits);
        var (rows, c) = Rows(logits);
        var dx = CudaTensors.Empty(logits.Shape, DType.F32, device);
        if (rows * c == 0) return dx;
        using var t = Upload(targets, device);
        device.Kernels.Launch("cross_entropy_backward_f32", RowGrid(device, rows), RowBlock(c), CudaTensors.Address(logits), CudaTensors.Address(t),
            CudaTensors.Address(lse), CudaTensors.Address(scale), CudaTensors.Address(dx), rows, c, ignoreIndex, (float)smoothing);
        return dx;
    }

    public void AdamW(Tensor p, Tensor g, Tensor m, Tensor v, float decay, bool decayOn, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2, float invSqrtBc2, float eps, float stepSize)
    {
        var device = CudaTensors.DeviceOf(p);
        long n = p.NumEl;
        if (n > 0)
            device.Kernels.Launch("adamw_f32", device.Kernels.GridFor(n, Block), Block, CudaTensors.Address(p), CudaTensors.Address(g), CudaTensors.Address(m), CudaTensors.Address(v), n,
                decay, decayOn ? 1 : 0, beta1, oneMinusBeta1, beta2, oneMinusBeta2, invSqrtBc2, eps, stepSize);
    }

    // adamw_multi_f32: one block per chunk of ≤ 4096 elements of one tensor.
    private const int AdamWChunk = 4096;

    public void AdamWMulti(Tensor[] p, Tensor[] g, Tensor[] m, Tensor[] v, float decay, bool decayOn, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2, float invSqrtBc2, float eps, float stepSize)
    {
        var device = CudaTensors.DeviceOf(p[0]);
        var tensors = new long[4 * p.Length];
        var chunks = new List<long>();
        for (int t = 0; t < p.Length; t++)
        {
            (tensors[4 * t], tensors[4 * t + 1], tensors[4 * t + 2], tensors[4 * t + 3]) =
                ((long)CudaTensors.Address(p[t]), (long)CudaTensors.Address(g[t]), (long)CudaTensors.Address(m[t]), (long)CudaTensors.Address(v[t]));
            for (long first = 0; first < p[t].NumEl; first += AdamWChunk) chunks.AddRange([t, first, Math.Min(AdamWChunk, p[t].NumEl - first)]);
        }
        if (chunks.Count == 0) return;
        using var tensorsD = Upload(tensors, device);
        using var chunksD = Upload(chunks.ToArray(), device);
        device.Kernels.Launch("adamw_multi_f32", ((uint)(chunks.Count / 3), 1u, 1u), (Block, 1u, 1u), 0, CudaTensors.Address(tensorsD), CudaTensors.Address(chunksD),
            decay, decayOn ? 1 : 0, beta1, oneMinusBeta1, beta2, oneMinusBeta2, invSqrtBc2, eps, stepSize);
    }

    public Tensor DropoutMask(int[] shape, double p, uint key0, uint key1, long first, Device device)
    {
        var gpu = CudaDevice.Get(device.Index);
        var mask = CudaTensors.Empty(shape, DType.F32, gpu);
        long n = mask.NumEl;
        if (n > 0)
            gpu.Kernels.Launch("dropout_mask_f32", gpu.Kernels.GridFor((n + 3) / 4, Block), Block, CudaTensors.Address(mask), n, first, key0, key1, p, (float)(1.0 / (1.0 - p)));
        return mask;
    }

    // kernels/attention.cu: the forward keeps 16 query rows per block of 4 warps; the backward 8 rows (dq) or 8 keys
    // (dk, dv) per block, after one warp per row for delta = do·o.
    private const uint AttentionBlock = 128;

    public (Tensor O, Tensor Lse) Attention(Tensor q, Tensor k, Tensor v, Tensor? keyMask, int heads, bool causal, long causalOffset, double scale, AttentionDropout? dropout)
    {
        var device = CudaTensors.DeviceOf(q);
        var (bh, tq, tk, d) = AttentionDims(q, k);
        var o = CudaTensors.Empty(q.Shape, DType.F32, device);
        var lse = CudaTensors.Empty(q.Shape[..^1], DType.F32, device);
        device.Kernels.Launch("attention_fwd_f32", ((uint)((tq + 15) / 16), bh, 1), (AttentionBlock, 1, 1), 0,
            [CudaTensors.Address(q), CudaTensors.Address(k), CudaTensors.Address(v), AddressOrNull(keyMask), CudaTensors.Address(o), CudaTensors.Address(lse),
             (long)heads, tq, tk, d, causal ? 1 : 0, causalOffset, (float)scale, .. DropoutArgs(dropout)]);
        return (o, lse);
    }

    public (Tensor Dq, Tensor Dk, Tensor Dv) AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor g, Tensor lse, Tensor? keyMask, int heads, bool causal, long causalOffset, double scale, AttentionDropout? dropout)
    {
        var device = CudaTensors.DeviceOf(q);
        var (bh, tq, tk, d) = AttentionDims(q, k);
        using var delta = CudaTensors.Empty(q.Shape[..^1], DType.F32, device);
        long rows = bh * tq;
        device.Kernels.Launch("attention_bwd_delta_f32", (uint)Math.Clamp((rows + 3) / 4, 1, (long)device.MultiprocessorCount * 32), AttentionBlock,
            CudaTensors.Address(o), CudaTensors.Address(g), CudaTensors.Address(delta), rows, d);
        var dq = CudaTensors.Empty(q.Shape, DType.F32, device);
        var dk = CudaTensors.Empty(k.Shape, DType.F32, device);
        var dv = CudaTensors.Empty(v.Shape, DType.F32, device);
        KernelArg[] common = [(long)heads, tq, tk, d, causal ? 1 : 0, causalOffset, (float)scale, .. DropoutArgs(dropout)];
        device.Kernels.Launch("attention_bwd_dq_f32", ((uint)((tq + 7) / 8), bh, 1), (AttentionBlock, 1, 1), 0,
            [CudaTensors.Address(q), CudaTensors.Address(k), CudaTensors.Address(v), AddressOrNull(keyMask), CudaTensors.Address(g), CudaTensors.Address(lse),
             CudaTensors.Address(delta), CudaTensors.Address(dq), .. common]);
        device.Kernels.Launch("attention_bwd_dkdv_f32", ((uint)((tk + 7) / 8), bh, 1), (AttentionBlock, 1, 1), 0,
            [CudaTensors.Address(q), CudaTensors.Address(k), CudaTensors.Address(v), AddressOrNull(keyMask), CudaTensors.Address(g), CudaTensors.Address(lse),
             CudaTensors.Address(delta), CudaTensors.Address(dk), CudaTensors.Address(dv), .. common]);
        return (dq, dk, dv);
    }

    /// <summary>The kernels' trailing dropout arguments: p, 1/(1−p) as F32, the Philox key and first counter (p = 0: none).</summary>
    private static KernelArg[] DropoutArgs(AttentionDropout? dropout) => dropout is { } d
        ? [d.P, (float)(1.0 / (1.0 - d.P)), d.Key0, d.Key1, d.First]
        : [0.0, 1f, 0u, 0u, 0L];

    /// <summary>(B·H, Tq, Tk, D) of dense [B, H, T, D] heads; the front-end keeps B·H within the grid's y limit.</summary>
    private static (uint Bh, long Tq, long Tk, long D) AttentionDims(Tensor q, Tensor k) =>
        ((uint)(q.Size(0) * q.Size(1)), q.Size(2), k.Size(2), q.Size(3));

    // kernels/sgmv.cu: the rows that have an adapter, sorted by adapter, in tiles of ≤ 16 rows of one adapter.
    private const int SgmvTile = 16, SgmvMaxRank = 64;

    public Tensor SegmentedLora(Tensor baseOutput, Tensor x, int[] rowAdapter, Tensor[] a, Tensor[] b, float[] scales)
    {
        var device = CudaTensors.DeviceOf(x);
        var ranks = a.Select(f => f.Size(0)).ToArray();
        if (ranks.Any(r => r > SgmvMaxRank))
            throw new NotSupportedException($"SegmentedLora on CUDA takes ranks up to {SgmvMaxRank}, got {ranks.Max()}");
        var y = baseOutput.Clone();
        var positions = new List<long>();
        var tiles = new List<int>();
        for (int adapter = 0; adapter < a.Length; adapter++)
        {
            int start = positions.Count;
            for (int row = 0; row < rowAdapter.Length; row++)
                if (rowAdapter[row] == adapter) positions.Add(row);
            for (int first = start; first < positions.Count; first += SgmvTile)
                tiles.AddRange([first, Math.Min(SgmvTile, positions.Count - first), adapter]);
        }
        int tileCount = tiles.Count / 3, rStride = Math.Max(1, ranks.DefaultIfEmpty(1).Max());
        long k = x.Size(1), c = baseOutput.Size(1);
        if (tileCount == 0 || c == 0) return y;
        using var rowsD = Upload(positions.ToArray(), device);
        using var tilesD = Upload(tiles.ToArray(), device);
        using var aPtrs = Upload(a.Select(f => (long)CudaTensors.Address(f)).ToArray(), device);
        using var bPtrs = Upload(b.Select(f => (long)CudaTensors.Address(f)).ToArray(), device);
        using var ranksD = Upload(ranks, device);
        using var scalesD = Upload(scales, device);
        using var t = CudaTensors.Empty([positions.Count, rStride], DType.F32, device);
        device.Kernels.Launch("sgmv_shrink_f32", ((uint)tileCount, 1u, 1u), (256u, 1u, 1u), 0,
            CudaTensors.Address(x), CudaTensors.Address(t), CudaTensors.Address(rowsD), CudaTensors.Address(tilesD), CudaTensors.Address(aPtrs),
            CudaTensors.Address(ranksD), k, rStride);
        device.Kernels.Launch("sgmv_expand_f32", ((uint)tileCount, (uint)((c + 255) / 256), 1u), (256u, 1u, 1u), 0,
            CudaTensors.Address(t), CudaTensors.Address(y), CudaTensors.Address(rowsD), CudaTensors.Address(tilesD), CudaTensors.Address(bPtrs),
            CudaTensors.Address(ranksD), CudaTensors.Address(scalesD), c, rStride);
        return y;
    }

    // kernels/lycoris.cu: a block of 256 threads owns 32 rows × 64 columns of ΔW.
    public Tensor LowRankHadamard(Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale)
    {
        var device = CudaTensors.DeviceOf(a1);
        var (m, n, r) = LowRankHadamardDims(a1, b1);
        var delta = CudaTensors.Empty([m, n], DType.F32, device);
        if ((long)m * n > 0)
            device.Kernels.Launch("loha_delta_f32", LowRankHadamardGrid(m, n), (256u, 1u, 1u), 0,
                CudaTensors.Address(a1), CudaTensors.Address(b1), CudaTensors.Address(a2), CudaTensors.Address(b2), CudaTensors.Address(delta),
                (long)m, (long)n, (long)r, (float)scale);
        return delta;
    }

    public (Tensor? G1, Tensor? G2) LowRankHadamardBackward(Tensor g, Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale, bool want1, bool want2)
    {
        var device = CudaTensors.DeviceOf(g);
        var (m, n, r) = LowRankHadamardDims(a1, b1);
        var g1 = want1 ? CudaTensors.Empty([m, n], DType.F32, device) : null;
        var g2 = want2 ? CudaTensors.Empty([m, n], DType.F32, device) : null;
        if ((long)m * n > 0 && (want1 || want2))
            device.Kernels.Launch("loha_delta_bwd_f32", LowRankHadamardGrid(m, n), (256u, 1u, 1u), 0,
                CudaTensors.Address(g), CudaTensors.Address(a1), CudaTensors.Address(b1), CudaTensors.Address(a2), CudaTensors.Address(b2),
                AddressOrNull(g1), AddressOrNull(g2), (long)m, (long)n, (long)r, (float)scale);
        return (g1, g2);
    }

    private static (int M, int N, int R) LowRankHadamardDims(Tensor a1, Tensor b1) => (a1.Size(0), b1.Size(1), a1.Size(1));

    private static (uint, uint, uint) LowRankHadamardGrid(int m, int n) =>
        (m + 31) / 32 <= 65535 ? ((uint)((n + 63) / 64), (uint)((m + 31) / 32), 1u)
            : throw new NotSupportedException($"LowRankHadamard on CUDA: {m} rows exceed the kernel's grid (65535 blocks of 32 rows)");

    public Tensor DequantizeInt8(Tensor q, Tensor scb) => CudaKernels.DequantizeInt8(q, scb, DType.F32);

    public Tensor DequantizeNf4(Tensor packed, Tensor absmax, int[] shape) => CudaKernels.DequantizeNf4(packed, absmax, shape, DType.F32);

    public Tensor DequantizeBlockwise8(Tensor codes, Tensor nestedAbsmax, float offset)
    {
        var device = CudaTensors.DeviceOf(codes);
        Tensor table;
        lock (_codeTables)
            if (!_codeTables.TryGetValue(device.Index, out table!))
                _codeTables[device.Index] = table = Upload(Blockwise8.Code, device).KeepAlive();   // first made inside someone's scope
        return CudaKernels.DequantizeBlockwise8(codes, table, nestedAbsmax, offset);
    }

    /// <summary>Blockwise8's 256 levels on each device that dequantized doubly quantized statistics (1 KiB each, kept
    /// for the process: the device's memory outlives every model on it).</summary>
    private readonly Dictionary<int, Tensor> _codeTables = new();

    /// <summary>Host values (indices, a code table) as a device tensor (the copy is queued on the device's stream before
    /// the kernel).</summary>
    private static Tensor Upload<T>(T[] values, CudaDevice device) where T : unmanaged
    {
        using var host = Tensor.FromArray(values);
        return host.To(device.Device);
    }

    private static (long Rows, long N) Rows(Tensor x)
    {
        long n = x.Rank == 0 ? 1 : x.Size(-1);
        return (n == 0 ? 0 : x.NumEl / n, n);
    }

    private static ulong AddressOrNull(Tensor? t) => t == null ? 0UL : CudaTensors.Address(t);

    /// <summary>One block per row (grid-strided past a few blocks per SM).</summary>
    private static uint RowGrid(CudaDevice device, long rows) => (uint)Math.Clamp(rows, 1, (long)device.MultiprocessorCount * 32);

    /// <summary>Threads per row: the row length rounded up to whole warps, 32 to 512.</summary>
    private static uint RowBlock(long n) => (uint)Math.Clamp((n + 31) / 32 * 32, 32, 512);

    private static void RequireF32(string op, params Tensor[] tensors)
    {
        foreach (var t in tensors)
            if (t.DType != DType.F32) throw new DTypeMismatchException($"{op} on CUDA computes in F32, got {t.DType}");
    }

    // The op numbers of kernels/elementwise.cu and kernels/rows.cu, spelled out so that reordering Peft.Core's enums
    // cannot silently change which op a kernel runs.
    internal static int OpCode(BinaryOp op) => op switch
    {
        BinaryOp.Add => 0, BinaryOp.Sub => 1, BinaryOp.Mul => 2, BinaryOp.Div => 3, BinaryOp.Pow => 4,
        BinaryOp.Maximum => 5, BinaryOp.Minimum => 6, BinaryOp.Greater => 7, BinaryOp.Less => 8, BinaryOp.Equal => 9,
        _ => throw new NotSupportedException($"binary op {op} has no CUDA kernel"),
    };

    internal static int OpCode(UnaryOp op) => op switch
    {
        UnaryOp.Neg => 0, UnaryOp.Exp => 1, UnaryOp.Log => 2, UnaryOp.Sqrt => 3, UnaryOp.Rsqrt => 4, UnaryOp.Abs => 5,
        UnaryOp.Tanh => 6, UnaryOp.Sigmoid => 7, UnaryOp.Relu => 8, UnaryOp.GeluErf => 9, UnaryOp.GeluTanh => 10,
        UnaryOp.Silu => 11, UnaryOp.Sign => 12, UnaryOp.Sin => 13, UnaryOp.Cos => 14, UnaryOp.ReluGrad => 15,
        UnaryOp.GeluErfGrad => 16, UnaryOp.GeluTanhGrad => 17, UnaryOp.SiluGrad => 18, UnaryOp.Clamp => 19,
        UnaryOp.ClampMask => 20, UnaryOp.PowScalar => 21, UnaryOp.AddScalar => 22, UnaryOp.MulScalar => 23,
        UnaryOp.Round => 24,
        _ => throw new NotSupportedException($"unary op {op} has no CUDA kernel"),
    };

    internal static int ReduceCode(ReduceOp op) => op switch
    {
        ReduceOp.Sum => 0, ReduceOp.Max => 1, ReduceOp.Min => 2,
        _ => throw new NotSupportedException($"reduction {op} has no CUDA kernel"),
    };
}
