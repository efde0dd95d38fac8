using Peft.Core;
using Peft.Transformers;

namespace Peft.Cli.Training;

/// <summary>One training batch: token ids, attention mask and labels (−100 where no loss is wanted).</summary>
internal sealed record Batch(Tensor InputIds, Tensor AttentionMask, Tensor Labels) : IDisposable
{
    /// <summary>This batch on <paramref name="device"/> (itself on the CPU); made inside a step's scope, the host
    /// tensors and the copies both end with it.</summary>
    public Batch On(Device device) => device.Type == DeviceType.Cpu ? this : new Batch(InputIds.To(device), AttentionMask.To(device), Labels.To(device));

    /// <summary>Non-padding positions (the tokens of tokens/s), counted on the host.</summary>
    public long Tokens() => (long)AttentionMask.ToDoubleArray().Sum();

    public void Dispose()
    {
        InputIds.Dispose();
        AttentionMask.Dispose();
        Labels.Dispose();
    }
}

/// <summary>
/// Turns examples into batches for a task, as the usual transformers collators do: sequence labels as class ids;
/// causal-LM labels equal to the ids (−100 on padding and on the prompt of prompt/completion pairs); seq2seq labels
/// from the target text (−100 on padding); token labels on the first sub-token of each word (−100 elsewhere).
/// </summary>
internal sealed class TaskBatcher
{
    public const long Ignore = -100;
    private readonly HfTokenizer _tok;
    private readonly int _maxLength;
    private readonly long _pad;

    public TaskBatcher(string task, HfTokenizer tokenizer, int maxLength, IReadOnlyList<string> labelNames)
    {
        Task = task;
        _tok = tokenizer;
        _maxLength = maxLength;
        LabelNames = labelNames;
        _pad = tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;
    }

    public string Task { get; }

    /// <summary>Class names by id (classification tasks).</summary>
    public IReadOnlyList<string> LabelNames { get; }

    private long LabelId(string name)
    {
        for (int i = 0; i < LabelNames.Count; i++) if (LabelNames[i] == name) return i;
        throw new ArgumentException($"label '{name}' is not one of the model's labels ({string.Join(", ", LabelNames)})");
    }

    public Batch Make(IReadOnlyList<Example> examples) => Task switch
    {
        "seq-cls" => Classification(examples),
        "causal-lm" => CausalLm(examples),
        "seq2seq" => Seq2Seq(examples),
        "token-cls" => TokenClassification(examples),
        _ => throw new ArgumentException($"unknown task '{Task}'"),
    };

    private Batch Classification(IReadOnlyList<Example> examples)
    {
        var enc = _tok.EncodeBatch(examples.Select(e => e.Text!).ToList(), _maxLength);
        return new Batch(enc.InputIds, enc.AttentionMask, Tensor.FromArray(examples.Select(e => LabelId(e.Label!)).ToArray()));
    }

    private Batch CausalLm(IReadOnlyList<Example> examples)
    {
        var rows = new List<(long[] Ids, long[] Labels)>();
        foreach (var e in examples)
        {
            long[] ids, labels;
            if (e.Prompt != null)
            {
                var prompt = _tok.Encode(e.Prompt).Select(i => (long)i).ToArray();
                var completion = _tok.Encode(e.Completion!, addSpecialTokens: false).Select(i => (long)i).Concat(Eos()).ToArray();
                ids = [.. prompt, .. completion];
                labels = [.. prompt.Select(_ => Ignore), .. completion];
            }
            else
            {
                ids = _tok.Encode(e.Text!).Select(i => (long)i).Concat(Eos()).ToArray();
                labels = ids;
            }
            rows.Add((ids.Take(_maxLength).ToArray(), labels.Take(_maxLength).ToArray()));
        }
        return Pad(rows);
    }

    private IEnumerable<long> Eos() => _tok.EosTokenId is { } eos ? [eos] : [];

    private Batch Seq2Seq(IReadOnlyList<Example> examples)
    {
        var enc = _tok.EncodeBatch(examples.Select(e => e.Source!).ToList(), _maxLength);
        var targets = examples.Select(e => _tok.Encode(e.Target!).Select(i => (long)i).Take(_maxLength).ToArray()).ToList();
        int t = targets.Max(x => x.Length);
        var labels = new long[examples.Count * t];
        for (int i = 0; i < targets.Count; i++)
            for (int j = 0; j < t; j++) labels[i * t + j] = j < targets[i].Length ? targets[i][j] : Ignore;
        return new Batch(enc.InputIds, enc.AttentionMask, Tensor.FromArray(labels, [examples.Count, t]));
    }

    private Batch TokenClassification(IReadOnlyList<Example> examples)
    {
        // The special tokens the tokenizer wraps a text in ([CLS] … [SEP], <s> …): found by encoding one word both ways.
        var bare = _tok.Encode("a", addSpecialTokens: false);
        var full = _tok.Encode("a");
        int prefix = Enumerable.Range(0, full.Length - bare.Length + 1).FirstOrDefault(i => full.Skip(i).Take(bare.Length).SequenceEqual(bare));
        var head = full.Take(prefix).Select(i => (long)i).ToArray();
        var tail = full.Skip(prefix + bare.Length).Select(i => (long)i).ToArray();
        var rows = new List<(long[] Ids, long[] Labels)>();
        foreach (var e in examples)
        {
            var ids = new List<long>(head);
            var labels = new List<long>(head.Select(_ => Ignore));
            for (int w = 0; w < e.Tokens!.Length; w++)
            {
                var pieces = _tok.Encode((w == 0 ? "" : " ") + e.Tokens[w], addSpecialTokens: false);
                for (int p = 0; p < pieces.Length; p++)
                {
                    ids.Add(pieces[p]);
                    labels.Add(p == 0 ? LabelId(e.Tags![w]) : Ignore);
                }
            }
            int room = Math.Max(0, _maxLength - tail.Length);
            rows.Add(([.. ids.Take(room), .. tail], [.. labels.Take(room), .. tail.Select(_ => Ignore)]));
        }
        return Pad(rows);
    }

    /// <summary>Right-pads rows to the longest: pad id, mask 0, label −100.</summary>
    private Batch Pad(List<(long[] Ids, long[] Labels)> rows)
    {
        int t = rows.Max(r => r.Ids.Length), b = rows.Count;
        var ids = new long[b * t];
        var mask = new long[b * t];
        var labels = new long[b * t];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < t; j++)
            {
                bool real = j < rows[i].Ids.Length;
                ids[i * t + j] = real ? rows[i].Ids[j] : _pad;
                mask[i * t + j] = real ? 1 : 0;
                labels[i * t + j] = real ? rows[i].Labels[j] : Ignore;
            }
        return new Batch(Tensor.FromArray(ids, [b, t]), Tensor.FromArray(mask, [b, t]), Tensor.FromArray(labels, [b, t]));
    }
}
