namespace Peft.Examples;

/// <summary>
/// Runs one of the example scenarios (or all): each builds a small model deterministically, fine-tunes it with a PEFT
/// method on data that ships with the examples, and prints what changed. No network, no GPU, seconds each.
/// </summary>
public static class Program
{
    /// <summary>The scenarios by name.</summary>
    public static readonly IReadOnlyDictionary<string, Func<TextWriter, int, bool>> Scenarios = new Dictionary<string, Func<TextWriter, int, bool>>
    {
        ["seq-cls"] = SequenceClassification.Run,
        ["causal-lm"] = CausalLm.Run,
        ["token-cls"] = TokenClassification.Run,
        ["seq2seq"] = Seq2Seq.Run,
        ["image-cls"] = ImageClassification.Run,
        ["multi-adapter"] = MultiAdapter.Run,
    };

    /// <summary>Usage: <c>&lt;scenario&gt;|all [--epochs N]</c>; exit 1 when a scenario does not reach its goal.</summary>
    public static int Main(string[] args)
    {
        var name = args.FirstOrDefault() ?? "all";
        int epochs = args.Length >= 3 && args[1] == "--epochs" ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 0;
        var chosen = name == "all" ? Scenarios.Keys.ToList() : [name];
        foreach (var n in chosen)
        {
            if (!Scenarios.TryGetValue(n, out var run))
            {
                Console.Error.WriteLine($"unknown scenario '{n}' (one of: {string.Join(", ", Scenarios.Keys)}, all)");
                return 2;
            }
            Console.WriteLine($"== {n} ==");
            if (!run(Console.Out, epochs)) return 1;
        }
        return 0;
    }
}
