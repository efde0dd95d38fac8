using System.Runtime.CompilerServices;

namespace Peft.Core;

/// <summary>
/// An n-dimensional array: shared <see cref="Storage"/> + shape + strides (in elements) + offset + dtype.
/// Views (reshape, transpose, narrow, expand...) share storage. Tensors own native memory, so dispose them, or
/// create them inside a <see cref="TensorScope"/> that disposes everything it saw.
/// </summary>
/// <example><code>
/// using var scope = Tensor.NewScope();
/// var w = Tensor.Randn([4, 3], seed: 1).RequiresGradient();
/// var x = Tensor.Randn([2, 3], seed: 2);
/// var loss = x.MatMul(w.Transpose(0, 1)).Pow(2).Mean();
/// loss.Backward();            // w.Grad now holds d loss / d w
/// </code></example>
public sealed partial class Tensor : IDisposable
{
    internal readonly int[] _shape;
    internal readonly long[] _strides;
    private bool _disposed;
    private bool _requiresGrad;

    /// <summary>Memory this tensor views.</summary>
    public Storage Storage { get; }

    /// <summary>Offset of element [0,...,0] in the storage, in elements.</summary>
    public long Offset { get; }

    /// <summary>Element type.</summary>
    public DType DType { get; }

    /// <summary>The scope that will dispose this tensor, if any.</summary>
    internal TensorScope? Scope { get; set; }

    /// <summary>Node that produced this tensor in the autograd graph; null for leaves and constants.</summary>
    public GradNode? GradFn { get; internal set; }

    /// <summary>Accumulated gradient of a leaf after <see cref="Backward"/>. Owned by this tensor.</summary>
    public Tensor? Grad { get; set; }

    /// <summary>Takes ownership of one reference to <paramref name="storage"/>.</summary>
    internal Tensor(Storage storage, int[] shape, long[] strides, long offset, DType dtype)
    {
        Storage = storage;
        _shape = shape;
        _strides = strides;
        Offset = offset;
        DType = dtype;
        TensorScope.Register(this);
    }

    /// <summary>Allocates a new contiguous tensor (zero-filled unless <paramref name="zero"/> is false).</summary>
    internal static Tensor Allocate(ReadOnlySpan<int> shape, DType dtype, bool zero = true)
    {
        var dims = shape.ToArray();
        long n = Shapes.NumEl(dims);
        return new Tensor(new CpuStorage(n * dtype.SizeOf(), zero), dims, Shapes.ContiguousStrides(dims), 0, dtype);
    }

    /// <summary>The shape (a copy).</summary>
    public int[] Shape => (int[])_shape.Clone();

    /// <summary>Strides in elements (a copy).</summary>
    public long[] Strides => (long[])_strides.Clone();

    /// <summary>Number of dimensions.</summary>
    public int Rank => _shape.Length;

    /// <summary>Number of elements.</summary>
    public long NumEl => Shapes.NumEl(_shape);

    /// <summary>Size of dimension <paramref name="dim"/> (negative counts from the end).</summary>
    public int Size(int dim) => _shape[Shapes.NormalizeDim(dim, Rank)];

    /// <summary>The device holding the memory.</summary>
    public Device Device => Storage.Device;

    /// <summary>True when elements are laid out row-major with no gaps.</summary>
    public bool IsContiguous => Shapes.IsContiguous(_shape, _strides);

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>
    /// Whether gradients flow to this tensor. Settable on leaves only (tensors no op produced); ops set it on their
    /// outputs when any input requires grad and grad mode is on.
    /// </summary>
    public bool RequiresGrad
    {
        get => _requiresGrad;
        set
        {
            if (GradFn != null && !value)
                throw new InvalidOperationException("RequiresGrad can only be cleared on a leaf tensor; use Detach() to cut a tensor out of the graph.");
            if (value && !DType.IsFloatingPoint())
                throw new InvalidOperationException($"only floating-point tensors can require gradients (this one is {DType}).");
            _requiresGrad = value;
        }
    }

    /// <summary>Sets <see cref="RequiresGrad"/> and returns this tensor (for chaining).</summary>
    public Tensor RequiresGradient(bool requires = true)
    {
        RequiresGrad = requires;
        return this;
    }

    /// <summary>Element pointer of [0,...,0]; throws if disposed.</summary>
    internal unsafe T* Ptr<T>() where T : unmanaged
    {
        ThrowIfDisposed();
        return (T*)(Storage.Pointer + Offset * DType.SizeOf());
    }

    /// <summary>The elements of a contiguous CPU tensor as a span.</summary>
    internal unsafe Span<T> Span<T>() where T : unmanaged
    {
        if (!IsContiguous) throw new InvalidOperationException("internal: Span() needs a contiguous tensor");
        CheckElementType<T>();
        return new Span<T>(Ptr<T>(), checked((int)NumEl));
    }

    internal void CheckElementType<T>() where T : unmanaged
    {
        if (Unsafe.SizeOf<T>() != DType.SizeOf())
            throw new InvalidOperationException($"element type {typeof(T).Name} does not match tensor dtype {DType}");
    }

    internal void ThrowIfDisposed()
    {
        if (_disposed) throw new ObjectDisposedException(nameof(Tensor), $"tensor of shape {Shapes.Format(_shape)} was already disposed (by Dispose() or its scope)");
    }

    /// <summary>Drops this tensor's reference to its storage (memory is freed with the last view) and its gradient.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Storage.Release();
        Grad?.Dispose();
        Grad = null;
        // GradFn stays: the graph may still pass through this tensor (its node needs no data from it).
        Scope?.Forget(this);
    }

    /// <summary>
    /// Removes this tensor from the scope that would dispose it, so it outlives the scope (parameters, results
    /// returned to a caller). The caller becomes responsible for disposing it.
    /// </summary>
    public Tensor KeepAlive()
    {
        Scope?.Forget(this);
        return this;
    }

    /// <summary>Moves this tensor into the enclosing scope (or none) so it outlives the current one.</summary>
    public Tensor MoveToOuterScope()
    {
        var outer = Scope?.Parent;
        Scope?.Forget(this);
        outer?.Adopt(this);
        return this;
    }
}
