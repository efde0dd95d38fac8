namespace Peft.Core;

/// <summary>
/// Disposes every tensor created on this thread while it is the innermost scope, except those taken out with
/// <see cref="Tensor.KeepAlive"/> or <see cref="Tensor.MoveToOuterScope"/>. Scopes nest.
/// </summary>
/// <example><code>
/// for (int step = 0; step &lt; steps; step++)
/// {
///     using var scope = Tensor.NewScope();
///     var loss = model.Forward(batch).CrossEntropy(labels);
///     loss.Backward();
///     optimizer.Step();
/// }   // every activation and intermediate gradient is freed here
/// </code></example>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] private static TensorScope? _current;
    private readonly HashSet<Tensor> _tensors = new(ReferenceEqualityComparer.Instance);
    private bool _disposed;

    /// <summary>The scope that was innermost when this one was opened.</summary>
    public TensorScope? Parent { get; }

    internal TensorScope()
    {
        Parent = _current;
        _current = this;
    }

    /// <summary>Tensors this scope will dispose.</summary>
    public int Count => _tensors.Count;

    internal static void Register(Tensor t)
    {
        var s = _current;
        if (s != null) s.Adopt(t);
    }

    internal void Adopt(Tensor t)
    {
        _tensors.Add(t);
        t.Scope = this;
    }

    internal void Forget(Tensor t)
    {
        _tensors.Remove(t);
        t.Scope = null;
    }

    /// <summary>Disposes the tensors and makes the parent scope current again.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_current != this)
            throw new InvalidOperationException("tensor scopes must be disposed in the reverse order they were opened");
        _current = Parent;
        foreach (var t in _tensors.ToArray())
        {
            t.Scope = null;
            t.Dispose();
        }
        _tensors.Clear();
    }
}

public sealed partial class Tensor
{
    /// <summary>Opens a scope that disposes the tensors created on this thread until it is disposed.</summary>
    public static TensorScope NewScope() => new();
}
