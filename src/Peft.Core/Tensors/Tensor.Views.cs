
namespace Peft.Core;

// Views share storage with their source; each records a node so gradients flow back through the reshaping.
public sealed partial class Tensor
{
    /// <summary>A new tensor object over the same memory with another shape/stride/offset (no graph node).</summary>
    internal Tensor ViewOf(int[] shape, long[] strides, long offset)
    {
        ThrowIfDisposed();
        Storage.AddRef();
        return new Tensor(Storage, shape, strides, offset, DType);
    }

    /// <summary>Same elements, new shape; a view when the layout allows, else a copy. One entry may be -1.</summary>
    public Tensor Reshape(params int[] shape)
    {
        var target = Shapes.InferReshape(shape, NumEl);
        var src = this;
        Tensor result;
        if (IsContiguous) result = ViewOf(target, Shapes.ContiguousStrides(target), Offset);
        else
        {
            using var c = ContiguousCopy();
            result = c.ViewOf(target, Shapes.ContiguousStrides(target), c.Offset);
        }
        var inShape = _shape;
        return Autograd.Record(result, "Reshape", [src], (g, _) => [g.Reshape(inShape)]);
    }

    /// <summary>Like <see cref="Reshape"/> but never copies: throws when the layout is not contiguous.</summary>
    public Tensor View(params int[] shape)
    {
        if (!IsContiguous)
            throw new InvalidOperationException($"View({Shapes.Format(shape)}) needs a contiguous tensor (this one has strides [{string.Join(", ", _strides)}]); use Reshape() or Contiguous()");
        return Reshape(shape);
    }

    /// <summary>Flattens dims <paramref name="startDim"/>..<paramref name="endDim"/> into one.</summary>
    public Tensor Flatten(int startDim = 0, int endDim = -1)
    {
        if (Rank == 0) return Reshape(1);
        int s = Shapes.NormalizeDim(startDim, Rank), e = Shapes.NormalizeDim(endDim, Rank);
        var dims = new List<int>();
        for (int i = 0; i < s; i++) dims.Add(_shape[i]);
        long merged = 1;
        for (int i = s; i <= e; i++) merged *= _shape[i];
        dims.Add((int)merged);
        for (int i = e + 1; i < Rank; i++) dims.Add(_shape[i]);
        return Reshape(dims.ToArray());
    }

    /// <summary>Swaps two dimensions (a view).</summary>
    public Tensor Transpose(int dim0, int dim1)
    {
        int a = Shapes.NormalizeDim(dim0, Rank), b = Shapes.NormalizeDim(dim1, Rank);
        var shape = (int[])_shape.Clone();
        var strides = (long[])_strides.Clone();
        (shape[a], shape[b]) = (shape[b], shape[a]);
        (strides[a], strides[b]) = (strides[b], strides[a]);
        var result = ViewOf(shape, strides, Offset);
        return Autograd.Record(result, "Transpose", [this], (g, _) => [g.Transpose(a, b)]);
    }

    /// <summary>Reorders dimensions (a view): result dim i is source dim <paramref name="dims"/>[i].</summary>
    public Tensor Permute(params int[] dims)
    {
        if (dims.Length != Rank) throw new ShapeMismatchException($"Permute got {dims.Length} dims for a tensor of rank {Rank}");
        var shape = new int[Rank];
        var strides = new long[Rank];
        var inverse = new int[Rank];
        var seen = new bool[Rank];
        for (int i = 0; i < Rank; i++)
        {
            int d = Shapes.NormalizeDim(dims[i], Rank);
            if (seen[d]) throw new ArgumentException($"Permute dims [{string.Join(", ", dims)}] repeat dimension {d}");
            seen[d] = true;
            shape[i] = _shape[d];
            strides[i] = _strides[d];
            inverse[d] = i;
        }
        var result = ViewOf(shape, strides, Offset);
        return Autograd.Record(result, "Permute", [this], (g, _) => [g.Permute(inverse)]);
    }

    /// <summary>Elements <paramref name="start"/> .. start+length-1 of dimension <paramref name="dim"/> (a view).</summary>
    public Tensor Narrow(int dim, int start, int length)
    {
        int d = Shapes.NormalizeDim(dim, Rank);
        if (start < 0) start += _shape[d];
        if (start < 0 || length < 0 || start + length > _shape[d])
            throw new ArgumentOutOfRangeException(nameof(start), $"Narrow(dim {d}, start {start}, length {length}) is outside a dimension of size {_shape[d]}");
        var shape = (int[])_shape.Clone();
        shape[d] = length;
        var result = ViewOf(shape, (long[])_strides.Clone(), Offset + start * _strides[d]);
        var inShape = _shape;
        var (dt, device) = (DType, Device);
        return Autograd.Record(result, "Narrow", [this], (g, _) =>
        {
            var full = Zeros(inShape, dt, device);
            using (var window = full.Narrow(d, start, length)) window.CopyFrom(g);
            return [full];
        });
    }

    /// <summary>Python-style slice [start, end) of one dimension (negative indices count from the end).</summary>
    public Tensor Slice(int dim, int start, int end)
    {
        int d = Shapes.NormalizeDim(dim, Rank);
        int n = _shape[d];
        if (start < 0) start += n;
        if (end < 0) end += n;
        start = Math.Clamp(start, 0, n);
        end = Math.Clamp(end, start, n);
        return Narrow(d, start, end - start);
    }

    /// <summary>Index <paramref name="index"/> of dimension <paramref name="dim"/>, which is removed (a view).</summary>
    public Tensor Select(int dim, int index)
    {
        int d = Shapes.NormalizeDim(dim, Rank);
        if (index < 0) index += _shape[d];
        using var n = Narrow(d, index, 1);
        return n.Squeeze(d);
    }

    /// <summary>Broadcasts size-1 dims to <paramref name="shape"/> without copying (-1 keeps a size).</summary>
    public Tensor Expand(params int[] shape)
    {
        if (shape.Length < Rank) throw new ShapeMismatchException($"Expand to {Shapes.Format(shape)} has fewer dims than {Shapes.Format(_shape)}");
        var target = (int[])shape.Clone();
        int off = target.Length - Rank;
        for (int i = 0; i < target.Length; i++)
        {
            if (target[i] == -1)
            {
                if (i < off) throw new ShapeMismatchException("Expand: -1 is not allowed for new leading dims");
                target[i] = _shape[i - off];
            }
            if (i >= off && _shape[i - off] != 1 && _shape[i - off] != target[i])
                throw new ShapeMismatchException($"cannot expand {Shapes.Format(_shape)} to {Shapes.Format(shape)}");
        }
        var result = ViewOf(target, Shapes.BroadcastStrides(_shape, _strides, target), Offset);
        var inShape = _shape;
        return Autograd.Record(result, "Expand", [this], (g, _) => [g.SumToShape(inShape)]);
    }

    /// <summary>Removes dimension <paramref name="dim"/>, which must have size 1.</summary>
    public Tensor Squeeze(int dim)
    {
        int d = Shapes.NormalizeDim(dim, Rank);
        if (_shape[d] != 1) throw new ShapeMismatchException($"Squeeze({dim}): dimension has size {_shape[d]}, not 1");
        var shape = _shape.Where((_, i) => i != d).ToArray();
        var strides = _strides.Where((_, i) => i != d).ToArray();
        var result = ViewOf(shape, strides, Offset);
        var inShape = _shape;
        return Autograd.Record(result, "Squeeze", [this], (g, _) => [g.Reshape(inShape)]);
    }

    /// <summary>Inserts a size-1 dimension at <paramref name="dim"/> (which may equal the rank).</summary>
    public Tensor Unsqueeze(int dim)
    {
        int d = dim < 0 ? dim + Rank + 1 : dim;
        if (d < 0 || d > Rank) throw new ArgumentOutOfRangeException(nameof(dim), $"Unsqueeze({dim}) on a tensor of rank {Rank}");
        var shape = _shape.ToList();
        var strides = _strides.ToList();
        shape.Insert(d, 1);
        strides.Insert(d, d < Rank ? _strides[d] * _shape[d] : 1);
        var result = ViewOf(shape.ToArray(), strides.ToArray(), Offset);
        var inShape = _shape;
        return Autograd.Record(result, "Unsqueeze", [this], (g, _) => [g.Reshape(inShape)]);
    }

    /// <summary>A row-major copy, or a new view of the same memory when already contiguous. Always a new object,
    /// so disposing the result never disposes this tensor.</summary>
    public Tensor Contiguous()
    {
        var result = IsContiguous ? ViewOf((int[])_shape.Clone(), (long[])_strides.Clone(), Offset) : ContiguousCopy();
        return Autograd.Record(result, "Contiguous", [this], (g, _) => [g]);
    }

    /// <summary>A new contiguous copy of the data (no graph node).</summary>
    internal unsafe Tensor ContiguousCopy()
    {
        ThrowIfDisposed();
        if (DeviceKernels("Contiguous", this) is { } k)
        {
            var copy = k.Empty(_shape, DType, Device);
            k.Copy(copy, this);
            return copy;
        }
        var dst = Allocate(_shape, DType, zero: false);
        Cpu.StridedCopy.Gather((byte*)Ptr<byte>(), _shape, _strides, (byte*)dst.Ptr<byte>(), DType.SizeOf());
        return dst;
    }

    /// <summary>Contiguous data for a kernel to read: a view when possible, else a copy (no graph node).</summary>
    internal Tensor ContiguousData() => IsContiguous ? ViewOf(_shape, _strides, Offset) : ContiguousCopy();

    /// <summary>A copy with its own memory (gradients flow through it).</summary>
    public Tensor Clone()
    {
        var result = ContiguousCopy();
        return Autograd.Record(result, "Clone", [this], (g, _) => [g]);
    }

    /// <summary>Copies <paramref name="src"/> into this tensor's elements in place (shapes broadcast; no graph).</summary>
    public unsafe Tensor CopyFrom(Tensor src)
    {
        ThrowIfDisposed();
        if (RequiresGrad && Autograd.IsGradEnabled)
            throw new InvalidOperationException("in-place CopyFrom on a tensor that requires grad; wrap it in Autograd.NoGrad()");
        if (!Shapes.Broadcast(src._shape, _shape).AsSpan().SequenceEqual(_shape))
            throw new ShapeMismatchException($"cannot copy a tensor of shape {Shapes.Format(src._shape)} into one of shape {Shapes.Format(_shape)}");
        if (Device.Type != DeviceType.Cpu)
        {
            var k = DeviceKernels("CopyFrom", this)!;
            using var moved = src.Device == Device ? null : src.To(Device);
            var s = moved ?? src;
            using var cast = s.DType == DType ? null : s.ToDTypeNoGrad(DType);
            var same = cast ?? s;
            using var broadcast = same.ViewOf((int[])_shape.Clone(), Shapes.BroadcastStrides(same._shape, same._strides, _shape), same.Offset);
            k.Copy(this, broadcast);
            return this;
        }
        if (src.Device.Type != DeviceType.Cpu)
        {
            using var host = src.To(Device.Cpu);
            return CopyFrom(host);
        }
        using var expanded = src.ViewOf((int[])_shape.Clone(), Shapes.BroadcastStrides(src._shape, src._strides, _shape), src.Offset);
        using var dense = src.DType == DType ? null : expanded.ContiguousCopy();
        using var typed = dense?.ToDTypeNoGrad(DType);
        using var data = (typed ?? expanded).ContiguousData();
        Cpu.StridedCopy.Scatter((byte*)data.Ptr<byte>(), _shape, (byte*)Ptr<byte>(), _strides, DType.SizeOf());
        return this;
    }
}
