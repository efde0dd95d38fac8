using Peft.Core.Cpu;

namespace Peft.Core;

// Gathering, joining and masking.
public sealed partial class Tensor
{
    private (long Outer, long Inner) AroundDim(int d)
    {
        long outer = 1, inner = 1;
        for (int i = 0; i < d; i++) outer *= _shape[i];
        for (int i = d + 1; i < Rank; i++) inner *= _shape[i];
        return (outer, inner);
    }

    /// <summary>Picks entries <paramref name="index"/> (1-D, I64/I32) along <paramref name="dim"/> (torch.index_select).</summary>
    public unsafe Tensor IndexSelect(int dim, Tensor index)
    {
        ThrowIfDisposed();
        int d = Shapes.NormalizeDim(dim, Rank);
        if (index.Rank > 1) throw new ShapeMismatchException($"IndexSelect: index must be 1-D, got {Shapes.Format(index._shape)}");
        var idx = Indexing.ReadIndices(index, _shape[d], "IndexSelect");
        var (outer, inner) = AroundDim(d);
        var outShape = (int[])_shape.Clone();
        outShape[d] = idx.Length;
        if (DeviceKernels("IndexSelect", this) is { } k) return DeviceIndexSelect(k, idx, outer, _shape[d], inner, outShape);
        using var src = ContiguousData();
        var r = Allocate(outShape, DType, zero: false);
        Indexing.Select(src.Ptr<byte>(), r.Ptr<byte>(), outer, _shape[d], inner, idx, DType.SizeOf());
        var (inShape, dt, size) = (_shape, DType, _shape[d]);
        return Autograd.Record(r, "IndexSelect", [this], (g, _) =>
        {
            var acc = Zeros(inShape, dt);
            using var gc = g.ContiguousData();
            if (dt == DType.F64) Indexing.AddAt(gc.Ptr<double>(), acc.Ptr<double>(), outer, size, inner, idx);
            else Indexing.AddAt(gc.Ptr<float>(), acc.Ptr<float>(), outer, size, inner, idx);
            return [acc];
        });
    }

    private Tensor DeviceIndexSelect(IDeviceKernels k, long[] idx, long outer, int size, long inner, int[] outShape)
    {
        using var wide = WidenOnDevice(k, "IndexSelect", this);
        using var src = (wide ?? this).ContiguousData();
        var r = k.IndexSelect(src, idx, outer, size, inner, outShape);
        var inShape = _shape;
        return Autograd.Record(r, "IndexSelect", [this], (g, _) =>
        {
            using var gc = g.ContiguousData();
            return [k.IndexAdd(gc, idx, outer, size, inner, inShape)];
        });
    }

    /// <summary>Embedding lookup: rows of this [vocab, dim] table for token ids of any shape → [..., dim].</summary>
    public Tensor Embedding(Tensor ids)
    {
        if (Rank != 2) throw new ShapeMismatchException($"Embedding table must be 2-D [vocab, dim], got {Shapes.Format(_shape)}");
        using var flat = ids.Reshape(-1);
        using var rows = IndexSelect(0, flat);
        return rows.Reshape(ids._shape.Concat([_shape[1]]).ToArray());
    }

    /// <summary>torch.gather: out[..., j, ...] = this[..., index[..., j, ...], ...] along <paramref name="dim"/>;
    /// index has this tensor's shape except along dim.</summary>
    public unsafe Tensor Gather(int dim, Tensor index)
    {
        CheckFloatOperands("Gather", this);
        int d = Shapes.NormalizeDim(dim, Rank);
        if (index.Rank != Rank || Enumerable.Range(0, Rank).Any(i => i != d && index._shape[i] != _shape[i]))
            throw new ShapeMismatchException($"Gather: index shape {Shapes.Format(index._shape)} must equal {Shapes.Format(_shape)} except in dim {d}");
        var idx = Indexing.ReadIndices(index, _shape[d], "Gather");
        var (outer, inner) = AroundDim(d);
        int n = _shape[d], m = index._shape[d];
        using var src = ContiguousData();
        var r = Allocate(index._shape, DType, zero: false);
        if (DType == DType.F64) Indexing.Gather(src.Ptr<double>(), r.Ptr<double>(), outer, n, m, inner, idx);
        else Indexing.Gather(src.Ptr<float>(), r.Ptr<float>(), outer, n, m, inner, idx);
        var (inShape, dt) = (_shape, DType);
        return Autograd.Record(r, "Gather", [this], (g, _) =>
        {
            var acc = Zeros(inShape, dt);
            using var gc = g.ContiguousData();
            if (dt == DType.F64) Indexing.ScatterAdd(gc.Ptr<double>(), acc.Ptr<double>(), outer, n, m, inner, idx);
            else Indexing.ScatterAdd(gc.Ptr<float>(), acc.Ptr<float>(), outer, n, m, inner, idx);
            return [acc];
        });
    }

    /// <summary>Concatenates along <paramref name="dim"/>; all other dims must match.</summary>
    public static Tensor Cat(IReadOnlyList<Tensor> tensors, int dim = 0)
    {
        if (tensors.Count == 0) throw new ArgumentException("Cat needs at least one tensor");
        var first = tensors[0];
        int d = Shapes.NormalizeDim(dim, first.Rank);
        int total = 0;
        foreach (var t in tensors)
        {
            t.ThrowIfDisposed();
            if (t.Rank != first.Rank || t.DType != first.DType || Enumerable.Range(0, t.Rank).Any(i => i != d && t._shape[i] != first._shape[i]))
                throw new ShapeMismatchException($"Cat along dim {d}: {Shapes.Format(t._shape)} {t.DType} does not fit {Shapes.Format(first._shape)} {first.DType}");
            total += t._shape[d];
        }
        var outShape = (int[])first._shape.Clone();
        outShape[d] = total;
        var r = DeviceKernels("Cat", [.. tensors]) is { } k ? k.Empty(outShape, first.DType, first.Device) : Allocate(outShape, first.DType, zero: false);
        var sizes = tensors.Select(t => t._shape[d]).ToArray();
        using (Autograd.NoGrad())
        {
            int off = 0;
            foreach (var t in tensors)
            {
                using var window = r.Narrow(d, off, t._shape[d]);
                window.CopyFrom(t);
                off += t._shape[d];
            }
        }
        return Autograd.Record(r, "Cat", tensors.ToArray(), (g, need) =>
        {
            var grads = new Tensor?[sizes.Length];
            int off = 0;
            for (int i = 0; i < sizes.Length; i++)
            {
                if (need[i]) grads[i] = g.Narrow(d, off, sizes[i]);
                off += sizes[i];
            }
            return grads;
        });
    }

    /// <summary>Stacks equally shaped tensors along a new dim.</summary>
    public static Tensor Stack(IReadOnlyList<Tensor> tensors, int dim = 0)
    {
        if (tensors.Count == 0) throw new ArgumentException("Stack needs at least one tensor");
        var expanded = tensors.Select(t => t.Unsqueeze(dim)).ToArray();
        try { return Cat(expanded, dim); }
        finally { foreach (var e in expanded) e.Dispose(); }
    }

    /// <summary>Splits into pieces of <paramref name="sizes"/> along <paramref name="dim"/> (views).</summary>
    public Tensor[] Split(int[] sizes, int dim = 0)
    {
        int d = Shapes.NormalizeDim(dim, Rank);
        if (sizes.Sum() != _shape[d]) throw new ShapeMismatchException($"Split sizes [{string.Join(", ", sizes)}] do not add up to {_shape[d]}");
        var r = new Tensor[sizes.Length];
        int off = 0;
        for (int i = 0; i < sizes.Length; i++) { r[i] = Narrow(d, off, sizes[i]); off += sizes[i]; }
        return r;
    }

    /// <summary>Splits into pieces of <paramref name="chunkSize"/> (the last may be smaller).</summary>
    public Tensor[] Split(int chunkSize, int dim = 0)
    {
        int n = Size(dim);
        var sizes = new List<int>();
        for (int off = 0; off < n; off += chunkSize) sizes.Add(Math.Min(chunkSize, n - off));
        return Split(sizes.ToArray(), dim);
    }

    /// <summary>Element-wise <paramref name="condition"/> ? <paramref name="a"/> : <paramref name="b"/> (broadcast; condition is U8).</summary>
    public static unsafe Tensor Where(Tensor condition, Tensor a, Tensor b)
    {
        if (condition.DType != DType.U8) throw new DTypeMismatchException($"Where: condition must be U8 (a mask), got {condition.DType}");
        if (a.DType != b.DType) throw new DTypeMismatchException($"Where: branches have dtypes {a.DType} and {b.DType}");
        var shape = Shapes.Broadcast(Shapes.Broadcast(condition._shape, a._shape), b._shape);
        if (a.Device.Type != DeviceType.Cpu || b.Device.Type != DeviceType.Cpu) return DeviceWhere(condition, a, b, shape);
        using var c = Broadcasted(condition, shape);
        using var ad = Broadcasted(a, shape);
        using var bd = Broadcasted(b, shape);
        var r = Allocate(shape, a.DType, zero: false);
        Indexing.Where(c.Ptr<byte>(), ad.Ptr<byte>(), bd.Ptr<byte>(), r.Ptr<byte>(), r.NumEl, a.DType.SizeOf());
        return RecordWhere(r, a, b, saved => saved.Save(condition));
    }

    /// <summary>Where's node: the gradient flows to a where the condition holds and to b elsewhere, each summed back to
    /// its branch's shape; <paramref name="saveCondition"/> keeps the condition for backward.</summary>
    private static Tensor RecordWhere(Tensor r, Tensor a, Tensor b, Func<SavedTensors, Tensor> saveCondition)
    {
        int[] sa = a._shape, sb = b._shape;
        return Autograd.Record(r, "Where", [a, b], saved =>
        {
        var cond = saveCondition(saved);
        return (g, need) =>
        {
            using var zero = ZerosLike(g);
            Tensor? ga = null, gb = null;
            if (need[0]) { using var w = Where(cond, g, zero); ga = Owned(w.SumToShape(sa), w); }
            if (need[1]) { using var w = Where(cond, zero, g); gb = Owned(w.SumToShape(sb), w); }
            return [ga, gb];
        };
        });
    }

    /// <summary>Where on a device. Masks are built on the host (TriangleMask, padding masks), so a CPU condition and
    /// CPU 0-dim branches (MaskedFill's value) are copied to the device; anything else must already be there.</summary>
    private static Tensor DeviceWhere(Tensor condition, Tensor a, Tensor b, int[] shape)
    {
        var device = a.Device.Type != DeviceType.Cpu ? a.Device : b.Device;
        using var cd = condition.Device == device ? null : condition.To(device);
        using var ad = a.Device == device || a.Rank != 0 ? null : a.To(device);
        using var bd = b.Device == device || b.Rank != 0 ? null : b.To(device);
        var (cc, aa, bb) = (cd ?? condition, ad ?? a, bd ?? b);
        var k = DeviceKernels("Where", cc, aa, bb)!;
        using var c = Broadcasted(cc, shape);
        using var x = Broadcasted(aa, shape);
        using var y = Broadcasted(bb, shape);
        var r = k.Where(c, x, y);
        // The condition as it is on the device (backward broadcasts it again): the caller's, or the copy made here.
        return RecordWhere(r, a, b, saved => cd == null ? saved.Save(condition) : saved.Own(cd.ContiguousCopy().KeepAlive()));
    }

    private static Tensor Broadcasted(Tensor t, int[] shape)
    {
        using var v = t.ViewOf(shape, Shapes.BroadcastStrides(t._shape, t._strides, shape), t.Offset);
        return v.ContiguousCopy();
    }

    /// <summary>Replaces elements where <paramref name="mask"/> (U8, broadcast) is set by <paramref name="value"/>.</summary>
    public Tensor MaskedFill(Tensor mask, double value)
    {
        using var v = ScalarLike(value);
        return Where(mask, v, this);
    }

    /// <summary>Keeps the lower triangle (j ≤ i + diagonal) of the last two dims, zeroing the rest.</summary>
    public Tensor Tril(int diagonal = 0) => Triangle(diagonal, lower: true);

    /// <summary>Keeps the upper triangle (j ≥ i + diagonal) of the last two dims, zeroing the rest.</summary>
    public Tensor Triu(int diagonal = 0) => Triangle(diagonal, lower: false);

    private Tensor Triangle(int diagonal, bool lower)
    {
        if (Rank < 2) throw new ShapeMismatchException($"Tril/Triu need at least 2 dims, got {Shapes.Format(_shape)}");
        using var drop = TriangleMask(_shape[^2], _shape[^1], diagonal, lower);
        return MaskedFill(drop, 0);
    }

    /// <summary>U8 mask [rows, cols] that is 1 where Tril/Triu would drop an element (the causal-attention mask is
    /// TriangleMask(t, t, 0, lower: true): 1 above the diagonal).</summary>
    public static unsafe Tensor TriangleMask(int rows, int cols, int diagonal, bool lower)
    {
        var m = Allocate([rows, cols], DType.U8, zero: false);
        byte* p = m.Ptr<byte>();
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                p[(long)i * cols + j] = (byte)((lower ? j > i + diagonal : j < i + diagonal) ? 1 : 0);
        return m;
    }
}
