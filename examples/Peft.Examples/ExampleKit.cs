using System.Globalization;
using System.Text.Json.Nodes;
using Peft.Core;
using Peft.Core.Random;
using Peft.Nn;
using Peft.Transformers;

namespace Peft.Examples;

/// <summary>What the scenarios share: the ticket data, a WordPiece tokenizer built from it, seeded tiny models and a
/// plain AdamW loop that reports the loss before and after.</summary>
internal static class ExampleKit
{
    /// <summary>The support tickets that ship with the examples: (text, 1 = complaint / 0 = not).</summary>
    public static List<(string Text, int Label)> Tickets() =>
        File.ReadLines(Path.Combine(AppContext.BaseDirectory, "data", "tickets.jsonl"))
            .Select(l => JsonNode.Parse(l)!.AsObject())
            .Select(o => (o["text"]!.GetValue<string>(), o["label"]!.GetValue<string>() == "complaint" ? 1 : 0)).ToList();

    /// <summary>Positions 3 and 6 of every eight held out for evaluation: one odd, one even, so alternating classes
    /// appear in both splits.</summary>
    public static (List<T> Train, List<T> Eval) Split<T>(List<T> all) =>
        (all.Where((_, i) => i % 8 is not (3 or 6)).ToList(), all.Where((_, i) => i % 8 is 3 or 6).ToList());

    /// <summary>A WordPiece vocabulary of every word in <paramref name="texts"/> (plus <paramref name="extra"/>), written
    /// as a BERT tokenizer folder so AutoTokenizer reads it.</summary>
    public static (HfTokenizer Tokenizer, int VocabSize) Tokenizer(IEnumerable<string> texts, params string[] extra)
    {
        var dir = Directory.CreateTempSubdirectory("peft-example-vocab-").FullName;
        var words = texts.Concat(extra).SelectMany(t => t.ToLowerInvariant().Split([' ', ',', '.', ':'], StringSplitOptions.RemoveEmptyEntries))
            .Concat([":"]).Distinct().Order(StringComparer.Ordinal);
        string[] vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", .. words];
        File.WriteAllLines(Path.Combine(dir, "vocab.txt"), vocab);
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{\"do_lower_case\": true}");
        var tok = AutoTokenizer.FromPretrained(dir);
        Directory.Delete(dir, true);
        return (tok, vocab.Length);
    }

    /// <summary>A randomly initialised model for a config (seeded, so every run is the same).</summary>
    public static PreTrainedModel Model(string json, ModelTask task, ulong seed = 42)
    {
        Generator.Default.ManualSeed(seed);
        return AutoModel.Create(HfConfig.FromJson(json), task);
    }

    /// <summary>A tiny BERT of <paramref name="vocab"/> words.</summary>
    public static string Bert(int vocab, int labels) => $$"""
        {"model_type": "bert", "vocab_size": {{vocab}}, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "num_labels": {{labels}}}
        """;

    /// <summary>A tiny GPT-2 of <paramref name="vocab"/> words (pad id 0).</summary>
    public static string Gpt2(int vocab, int labels = 2) => $$"""
        {"model_type": "gpt2", "vocab_size": {{vocab}}, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4,
         "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "pad_token_id": 0, "num_labels": {{labels}}}
        """;

    /// <summary>AdamW over the trainable parameters for <paramref name="epochs"/> passes over <paramref name="batches"/>
    /// in order, with the library's <see cref="Trainer{TBatch}"/>; returns the mean loss of the first and the last epoch.</summary>
    public static (double First, double Last) Train(PeftModel peft, IReadOnlyList<Func<Tensor>> batches, int epochs, double lr)
    {
        using var optimizer = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: lr, weightDecay: 0);
        var epochLosses = new List<double>();
        var trainer = new Trainer<Func<Tensor>>(peft, optimizer, batch => batch(), new TrainerOptions { Epochs = epochs, Shuffle = false });
        trainer.EpochEnded += (_, meanLoss) => epochLosses.Add(meanLoss);
        trainer.Train(batches);
        peft.Eval();
        return (epochLosses[0], epochLosses[^1]);
    }

    /// <summary>Prints the loss change and whether it fell; the scenario's goal.</summary>
    public static bool Report(TextWriter o, string what, (double First, double Last) loss)
    {
        o.WriteLine(string.Format(CultureInfo.InvariantCulture, "{0}: training loss {1:F4} → {2:F4}", what, loss.First, loss.Last));
        return loss.Last < loss.First;
    }

    /// <summary>Arg-max of each row of logits [N, C].</summary>
    public static int[] ArgMax(Tensor logits)
    {
        var v = logits.ToFloatArray();
        int c = logits.Size(-1);
        return Enumerable.Range(0, v.Length / c).Select(i => Enumerable.Range(0, c).MaxBy(j => v[i * c + j])).ToArray();
    }
}
