using Peft.Core.Random;

namespace Peft.Core;

/// <summary>
/// Gradient checkpointing (torch.utils.checkpoint): a function runs without recording its graph, keeping only its
/// inputs; backward runs it again with the graph on — the same random numbers, the same autocast dtype — and
/// back-propagates through that copy. Activation memory drops from every intermediate of the region to its inputs, for
/// one more forward pass of compute.
/// </summary>
/// <example><code>
/// // each transformer block keeps only its input for backward
/// h = Checkpoint.Run(x => block.Forward(x, mask), h, block.Parameters().Where(p => p.RequiresGrad).ToList());
/// </code></example>
public static class Checkpoint
{
    /// <summary>
    /// Runs <paramref name="fn"/> on <paramref name="input"/> checkpointed. <paramref name="parameters"/> are the
    /// trainable leaves <paramref name="fn"/> reads (a block's parameters): they make the region differentiable even
    /// when its input is not (a frozen embedding's output, PEFT's usual case), and receive their gradients in backward.
    /// Any other tensor the region reads that requires grad must be passed through
    /// <see cref="Run(Func{Tensor, IReadOnlyList{Tensor}, Tensor}, Tensor, IReadOnlyList{Tensor}, IReadOnlyList{Tensor})"/>.
    /// Without grad mode, or with nothing to differentiate, <paramref name="fn"/> simply runs.
    /// </summary>
    public static Tensor Run(Func<Tensor, Tensor> fn, Tensor input, IReadOnlyList<Tensor> parameters) =>
        Run((x, _) => fn(x), input, [], parameters);

    /// <summary>
    /// Like <see cref="Run(Func{Tensor, Tensor}, Tensor, IReadOnlyList{Tensor})"/> with the other tensors the region
    /// reads (masks, rotary tables, a decoder block's encoder output; null entries allowed): they are kept alive for the
    /// recomputation, <paramref name="fn"/> receives them (detached copies when it recomputes) and the gradients of
    /// those that require one flow back to the outer graph.
    /// </summary>
    public static Tensor Run(Func<Tensor, IReadOnlyList<Tensor?>, Tensor> fn, Tensor input, IReadOnlyList<Tensor?> sideInputs, IReadOnlyList<Tensor> parameters)
    {
        // The graph node's inputs: the main input, the side inputs that exist, then the parameters.
        var present = Enumerable.Range(0, sideInputs.Count).Where(i => sideInputs[i] != null).ToArray();
        Tensor[] inputs = [input, .. present.Select(i => sideInputs[i]!), .. parameters];
        if (!Autograd.IsGradEnabled || !inputs.Any(t => t.RequiresGrad)) return fn(input, sideInputs);
        var low = Autocast.Current;
        var rng = RngReplay.Record();
        Tensor output;
        try
        {
            using (Autograd.NoGrad()) output = fn(input, sideInputs);
        }
        finally { rng.Dispose(); }
        int routed = 1 + present.Length;   // the inputs whose gradients go back through the outer pass
        return Autograd.Record(output, "Checkpoint", inputs, saved =>
        {
            var kept = inputs.Take(routed).Select(saved.Save).ToArray();
            return (g, need) =>
            {
                var grads = new Tensor?[inputs.Length];
                var found = new Tensor?[routed];
                using (var scope = Tensor.NewScope())
                using (Autograd.EnableGrad())
                using (Autocast.Use(low))
                {
                    var replay = kept.Select((t, i) =>
                    {
                        var d = t.Detach();
                        d.RequiresGrad = need[i];
                        return d;
                    }).ToArray();
                    var side = new Tensor?[sideInputs.Count];
                    for (int j = 0; j < present.Length; j++) side[present[j]] = replay[1 + j];
                    long firstId = GradNode.LastId;
                    Tensor y;
                    using (rng.Replay()) y = fn(replay[0], side);
                    // Parameters (and any other leaf the region reads) accumulate their gradients here; the inputs'
                    // gradients are handed back to the outer pass.
                    if (y.RequiresGrad) Autograd.Backward(y, g, (firstId, "gradient checkpointing"));
                    for (int i = 0; i < routed; i++)
                    {
                        found[i] = replay[i].Grad;
                        replay[i].Grad = null;
                    }
                }
                for (int i = 0; i < routed; i++)
                {
                    if (!need[i]) { found[i]?.Dispose(); continue; }
                    // Copied here, outside the recomputation's scope, so the outer pass owns (and frees) the gradient.
                    grads[i] = found[i] is { } f ? f.Clone() : Tensor.ZerosLike(kept[i]);
                    found[i]?.Dispose();
                }
                return grads;
            };
        });
    }
}
