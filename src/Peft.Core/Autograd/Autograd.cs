namespace Peft.Core;

/// <summary>Grad mode and the backward pass.</summary>
public static partial class Autograd
{
    [ThreadStatic] private static int _noGradDepth;

    /// <summary>False inside a <see cref="NoGrad"/> scope: ops then record nothing.</summary>
    public static bool IsGradEnabled => _noGradDepth == 0;

    /// <summary>Disables graph recording on this thread until disposed (inference, optimizer updates).</summary>
    /// <example><code>using (Autograd.NoGrad()) { var logits = model.Forward(ids); }</code></example>
    public static IDisposable NoGrad()
    {
        _noGradDepth++;
        return new OnDispose(() => _noGradDepth--);
    }

    /// <summary>Turns grad mode back on inside a <see cref="NoGrad"/> region until disposed (gradient checkpointing
    /// records its recomputation from within backward this way).</summary>
    public static IDisposable EnableGrad()
    {
        int saved = _noGradDepth;
        _noGradDepth = 0;
        return new OnDispose(() => _noGradDepth = saved);
    }

    /// <summary>
    /// Attaches a node to <paramref name="output"/> when grad mode is on and any input requires grad; otherwise
    /// records nothing. Returns <paramref name="output"/>.
    /// </summary>
    public static Tensor Record(Tensor output, string opName, Tensor[] inputs, BackwardFn backward)
    {
        CheckForward(output, opName, inputs);
        if (!ShouldRecord(inputs)) return output;
        output.GradFn = new GradNode(opName, inputs, backward, null);
        output.RequiresGrad = true;
        return output;
    }

    /// <summary>
    /// Like <see cref="Record(Tensor, string, Tensor[], BackwardFn)"/> for ops whose backward reads tensor data:
    /// <paramref name="build"/> runs only when a node is recorded, saves what it needs through the
    /// <see cref="SavedTensors"/> it is given, and returns the backward function.
    /// </summary>
    public static Tensor Record(Tensor output, string opName, Tensor[] inputs, Func<SavedTensors, BackwardFn> build)
    {
        CheckForward(output, opName, inputs);
        if (!ShouldRecord(inputs)) return output;
        var saved = new SavedTensors();
        output.GradFn = new GradNode(opName, inputs, build(saved), saved);
        output.RequiresGrad = true;
        return output;
    }

    private static bool ShouldRecord(Tensor[] inputs)
    {
        if (!IsGradEnabled) return false;
        foreach (var t in inputs) if (t.RequiresGrad) return true;
        return false;
    }

    /// <summary>
    /// Back-propagates from <paramref name="root"/>. Nodes run in reverse topological order (found iteratively:
    /// graphs of deep models overflow a recursive walk); leaf gradients are accumulated into <see cref="Tensor.Grad"/>.
    /// </summary>
    internal static void Backward(Tensor root, Tensor? gradient) => Backward(root, gradient, region: null);

    /// <summary>Back-propagates; with <paramref name="region"/> (a checkpoint's recomputation) every node reached must
    /// have been created after <see cref="GradNode.LastId"/> was read as <c>region.FirstId</c> — a node from outside
    /// would run twice (here and in the outer pass), so it is an error naming the op instead.</summary>
    internal static void Backward(Tensor root, Tensor? gradient, (long FirstId, string Name)? region)
    {
        if (!root.RequiresGrad)
            throw new InvalidOperationException("Backward() called on a tensor that does not require grad: no input of the computation requires grad (or it ran under NoGrad).");
        if (gradient == null)
        {
            if (root.NumEl != 1)
                throw new InvalidOperationException($"Backward() without a gradient needs a scalar output, got shape {Shapes.Format(root._shape)}");
            gradient = Tensor.OnesLike(root);
        }
        else if (!gradient._shape.AsSpan().SequenceEqual(root._shape))
            throw new ShapeMismatchException($"Backward() gradient has shape {Shapes.Format(gradient._shape)} but the output has {Shapes.Format(root._shape)}");

        if (root.GradFn == null) { AccumulateLeaf(root, gradient); return; }

        var order = TopologicalOrder(root.GradFn);
        if (region is { } r && order.FirstOrDefault(n => n.Id <= r.FirstId) is { } outside)
            throw new InvalidOperationException(
                $"{r.Name}: the recomputed region reads a tensor that requires grad from outside it (made by {outside.OpName}); pass it as an input of the region so its gradient reaches the outer graph");
        var grads = new Dictionary<GradNode, Tensor>(ReferenceEqualityComparer.Instance) { [root.GradFn] = gradient };
        using var _ = NoGrad();
        // Backward formulas run in F32: an autocast matmul's node rounds its own gradient products, nothing else may.
        using var __ = Autocast.Disable();
        for (int n = order.Count - 1; n >= 0; n--)
        {
            var node = order[n];
            if (!grads.Remove(node, out var g)) continue; // no gradient reached this node
            var needs = new bool[node.Inputs.Length];
            for (int i = 0; i < needs.Length; i++) needs[i] = node.Inputs[i].RequiresGrad;
            if (node.Saved is { } held && held.WasReleased)
                throw new InvalidOperationException($"{node} already ran: a graph can be back-propagated once (build it again for a second Backward)");
            var outer = _runningBackward;
            _runningBackward = node;
            Tensor?[] inGrads;
            try { inGrads = node.Backward(g, needs); }
            finally { _runningBackward = outer; }
            node.Saved?.Release();
            for (int i = 0; i < node.Inputs.Length; i++)
            {
                var gi = inGrads[i];
                if (gi == null || !needs[i]) continue;
                CheckBackward(node, i, gi, g);
                var input = node.Inputs[i];
                if (!gi._shape.AsSpan().SequenceEqual(input._shape))
                    throw new InvalidOperationException($"internal: {node} produced a gradient of shape {Shapes.Format(gi._shape)} for an input of shape {Shapes.Format(input._shape)}");
                if (gi.Device != input.Device)
                    throw new InvalidOperationException($"internal: {node} produced a gradient on {gi.Device} for an input on {input.Device}");
                if (input.GradFn != null)
                    grads[input.GradFn] = grads.TryGetValue(input.GradFn, out var prev) ? prev.Add(gi) : gi;
                else
                    AccumulateLeaf(input, gi);
            }
        }
    }

    private static void AccumulateLeaf(Tensor leaf, Tensor g)
    {
        if (leaf.Grad == null)
        {
            // The leaf owns its gradient: a private copy, taken out of any scope so it survives the step.
            var own = g.DType == leaf.DType ? g.Clone() : g.To(leaf.DType);
            leaf.Grad = own.KeepAlive();
        }
        else
        {
            using var cast = g.DType == leaf.Grad.DType ? null : g.To(leaf.Grad.DType);
            leaf.Grad.AddInPlace(cast ?? g);
        }
    }

    /// <summary>Post-order DFS with an explicit stack; returns nodes so that every node comes after its inputs.</summary>
    private static List<GradNode> TopologicalOrder(GradNode root)
    {
        var order = new List<GradNode>();
        var visited = new HashSet<GradNode>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<(GradNode Node, int NextInput)>();
        stack.Push((root, 0));
        visited.Add(root);
        while (stack.Count > 0)
        {
            var (node, next) = stack.Pop();
            if (next < node.Inputs.Length)
            {
                stack.Push((node, next + 1));
                var child = node.Inputs[next].GradFn;
                if (child != null && visited.Add(child)) stack.Push((child, 0));
            }
            else order.Add(node);
        }
        return order;
    }
}

