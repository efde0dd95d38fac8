namespace Peft.Core;

/// <summary>
/// Computes the gradients of an op's inputs from the gradient of its output. <paramref name="needsGrad"/>[i] says
/// whether input i wants one; entries for inputs that do not are left null (a LoRA layer never builds dW of a frozen
/// base weight this way).
/// </summary>
public delegate Tensor?[] BackwardFn(Tensor gradOutput, bool[] needsGrad);

/// <summary>One recorded op in the autograd graph: its inputs and how to push a gradient back through it.</summary>
public sealed class GradNode
{
    private static long _created;

    internal GradNode(string opName, Tensor[] inputs, BackwardFn backward, SavedTensors? saved)
    {
        Id = Interlocked.Increment(ref _created);
        OpName = opName;
        Inputs = inputs;
        Backward = backward;
        Saved = saved;
    }

    /// <summary>Creation order (process-wide): a recomputed checkpoint region's nodes all come after <see cref="LastId"/>
    /// read before the recomputation.</summary>
    internal long Id { get; }

    /// <summary>The id of the most recently created node.</summary>
    internal static long LastId => Interlocked.Read(ref _created);

    /// <summary>Tensors kept for this node's backward; released once it has run.</summary>
    internal SavedTensors? Saved { get; }

    /// <summary>Name of the op that produced the output (shown in errors and graph dumps).</summary>
    public string OpName { get; }

    /// <summary>The op's tensor inputs, in order.</summary>
    internal Tensor[] Inputs { get; }

    internal BackwardFn Backward { get; }

    /// <inheritdoc/>
    public override string ToString() => OpName + "Backward";
}

/// <summary>
/// The tensors a node's backward reads (inputs, outputs, statistics). Each is held through its own reference, so the
/// forward code may dispose its handles freely; the node releases them right after its backward runs.
/// </summary>
public sealed class SavedTensors
{
    private readonly List<Tensor> _held = new();

    /// <summary>Keeps <paramref name="t"/>'s data alive for backward and returns the handle to use there.</summary>
    public Tensor Save(Tensor t)
    {
        var alias = t.ViewOf(t._shape, t._strides, t.Offset);
        alias.KeepAlive();
        _held.Add(alias);
        return alias;
    }

    /// <summary>Takes ownership of a tensor made for backward alone (e.g. per-row statistics).</summary>
    public Tensor Own(Tensor t)
    {
        t.KeepAlive();
        _held.Add(t);
        return t;
    }

    internal bool WasReleased { get; private set; }

    internal void Release()
    {
        WasReleased = true;
        foreach (var t in _held) t.Dispose();
        _held.Clear();
    }
}
