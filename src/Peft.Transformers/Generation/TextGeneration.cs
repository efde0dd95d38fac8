using Peft.Core;
using Peft.Core.Random;

namespace Peft.Transformers;

/// <summary>Decoding settings (transformers' GenerationConfig subset).</summary>
public sealed record GenerationOptions
{
    /// <summary>Tokens to add after the prompt.</summary>
    public int MaxNewTokens { get; init; } = 20;

    /// <summary>Sample instead of taking the most likely token.</summary>
    public bool DoSample { get; init; }

    /// <summary>Softmax temperature when sampling (must be &gt; 0).</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Keep only the k most likely tokens when sampling (0 = off).</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of tokens whose probability reaches p when sampling (1 = off).</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Tokens that end a sequence.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary>Filler after a sequence has ended (defaults to the first EOS id, else 0).</summary>
    public int? PadTokenId { get; init; }

    /// <summary>Random stream for sampling (reproducible from its seed).</summary>
    public Generator? Generator { get; init; }
}

/// <summary>Autoregressive decoding for the decoder models with a KV cache: the prompt runs once, then one token per step.</summary>
public static class TextGeneration
{
    /// <summary>
    /// Continues each prompt row of <paramref name="inputIds"/> [B, T] (equal-length prompts) and returns the new tokens
    /// of each row; a row stops at an EOS token (which is included) or after MaxNewTokens.
    /// </summary>
    public static int[][] Generate(PreTrainedModel model, Tensor inputIds, GenerationOptions? options = null) =>
        Generate(model, inputIds, options, (ids, cache) => model.Forward(ids, cache: cache).Logits);

    /// <summary>
    /// <see cref="Generate(PreTrainedModel, Tensor, GenerationOptions?)"/> with the step's forward supplied by the caller
    /// (prompt learning prepends virtual tokens or a prefix on the first step, when the cache is still empty):
    /// <paramref name="logitsOf"/> maps (ids [B, T], cache) to logits [B, T', V] and must append to the cache.
    /// </summary>
    public static int[][] Generate(PreTrainedModel model, Tensor inputIds, GenerationOptions? options, Func<Tensor, KvCache, Tensor> logitsOf)
    {
        var o = options ?? new GenerationOptions();
        if (o.DoSample && o.Temperature <= 0) throw new ArgumentOutOfRangeException(nameof(options), "Temperature must be > 0 when sampling");
        if (o.TopP is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(options), "TopP must be in (0, 1]");
        if (model.Task != ModelTask.CausalLM) throw new InvalidOperationException($"generation needs a causal-LM head, this model is {model.Task}");
        using var cache = new KvCache(model.NumLayers);
        int b = inputIds.Size(0);
        var result = Enumerable.Range(0, b).Select(_ => new List<int>()).ToArray();
        var done = new bool[b];
        int pad = o.PadTokenId ?? (o.EosTokenIds.Count > 0 ? o.EosTokenIds[0] : 0);
        var rng = o.Generator ?? new Generator(0);
        bool wasTraining = model.IsTraining;
        model.Eval();
        using var _ = Autograd.NoGrad();
        try
        {
            Tensor next = inputIds.Contiguous();
            for (int step = 0; step < o.MaxNewTokens && !done.All(d => d); step++)
            {
                using var scope = Tensor.NewScope();
                var logits = logitsOf(next, cache);
                using var last = logits.Select(1, logits.Size(1) - 1); // [B, V]
                var chosen = ChooseNext(last, o, rng, pad, done, result);
                next.Dispose();
                next = Tensor.FromArray(chosen, [b, 1]).KeepAlive();
            }
            next.Dispose();
        }
        finally
        {
            model.Train(wasTraining);
        }
        return result.Select(r => r.ToArray()).ToArray();
    }

    /// <summary>
    /// One decoding step for a batch: picks each row's next token from its logits [B, V] (greedy or sampled), appends
    /// it to the row's result and marks rows that produced EOS as done; finished rows get <paramref name="pad"/>.
    /// </summary>
    internal static long[] ChooseNext(Tensor lastLogits, GenerationOptions o, Generator rng, int pad, bool[] done, List<int>[] result)
    {
        var last = lastLogits.ToFloatArray();
        int b = done.Length, vocab = last.Length / b;
        var chosen = new long[b];
        for (int i = 0; i < b; i++)
        {
            var row = new ReadOnlySpan<float>(last, i * vocab, vocab);
            int token = done[i] ? pad : o.DoSample ? Sample(row, o, rng) : ArgMax(row);
            chosen[i] = token;
            if (done[i]) continue;
            result[i].Add(token);
            if (o.EosTokenIds.Contains(token)) done[i] = true;
        }
        return chosen;
    }

    internal static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int j = 1; j < row.Length; j++) if (row[j] > row[best]) best = j;
        return best;
    }

    /// <summary>Temperature, then top-k, then top-p (nucleus) filtering, then one draw from the renormalised distribution.</summary>
    internal static int Sample(ReadOnlySpan<float> logits, GenerationOptions o, Generator rng)
    {
        int v = logits.Length;
        var order = Enumerable.Range(0, v).ToArray();
        var scaled = new double[v];
        for (int j = 0; j < v; j++) scaled[j] = logits[j] / o.Temperature;
        Array.Sort(order, (x, y) => scaled[y].CompareTo(scaled[x]));
        int keep = o.TopK > 0 ? Math.Min(o.TopK, v) : v;
        double max = scaled[order[0]], z = 0;
        var probs = new double[keep];
        for (int r = 0; r < keep; r++) z += probs[r] = Math.Exp(scaled[order[r]] - max);
        if (o.TopP < 1)
        {
            double cum = 0;
            int cut = keep;
            for (int r = 0; r < keep; r++)
            {
                cum += probs[r] / z;
                if (cum >= o.TopP) { cut = r + 1; break; }
            }
            keep = cut;
            z = probs.Take(keep).Sum();
        }
        using var u = Tensor.Rand([1], rng, DType.F64);
        double target = u.Item() * z, acc = 0;
        for (int r = 0; r < keep; r++)
        {
            acc += probs[r];
            if (target < acc) return order[r];
        }
        return order[keep - 1];
    }
}
