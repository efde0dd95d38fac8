using Peft.Core;
using Peft.Transformers;

namespace Peft.Examples;

/// <summary>Token classification: a BERT-shaped model learns to tag the product words of a ticket (PRODUCT / O), LoRA
/// on query and value with the classifier trained as a modules_to_save copy.</summary>
internal static class TokenClassification
{
    private static readonly HashSet<string> Products = ["charger", "blender", "jacket", "phone", "headphones", "shoes", "lamp", "backpack"];

    public static bool Run(TextWriter o, int epochs)
    {
        var (train, eval) = ExampleKit.Split(ExampleKit.Tickets());
        var (tok, vocab) = ExampleKit.Tokenizer(train.Concat(eval).Select(t => t.Text));
        using var peft = PeftModel.Create(ExampleKit.Model(ExampleKit.Bert(vocab, 2), ModelTask.TokenClassification),
            new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["query", "value"], ModulesToSave = ["classifier"], TaskType = "TOKEN_CLS" });
        // Every word of this vocabulary is one WordPiece token, so word tags line up with tokens between [CLS] and [SEP].
        (Tensor Ids, Tensor Mask, Tensor Labels) Batch(IReadOnlyList<(string Text, int Label)> rows)
        {
            var enc = tok.EncodeBatch(rows.Select(r => r.Text).ToList());
            var ids = enc.InputIds.ToArray<long>();
            int t = enc.InputIds.Size(1);
            var labels = Enumerable.Repeat(-100L, ids.Length).ToArray();
            for (int b = 0; b < rows.Count; b++)
            {
                var words = rows[b].Text.Split(' ');
                for (int w = 0; w < words.Length && w + 1 < t; w++) labels[b * t + w + 1] = Products.Contains(words[w]) ? 1 : 0;
            }
            return (enc.InputIds, enc.AttentionMask, Tensor.FromArray(labels, [rows.Count, t]));
        }
        var batches = train.Chunk(6).Select(chunk => (Func<Tensor>)(() =>
        {
            var (ids, mask, labels) = Batch(chunk);
            return peft.Forward(ids, mask, labels).Loss!;
        })).ToList();
        bool ok = ExampleKit.Report(o, "LoRA token classification", ExampleKit.Train(peft, batches, epochs > 0 ? epochs : 30, lr: 5e-3));
        using (Autograd.NoGrad())
        {
            var (ids, mask, labels) = Batch(eval);
            var predicted = ExampleKit.ArgMax(peft.Forward(ids, mask).Logits);
            var gold = labels.ToArray<long>();
            int counted = gold.Count(g => g >= 0), right = gold.Select((g, i) => g >= 0 && predicted[i] == g).Count(b => b);
            o.WriteLine($"  {peft.TrainableParametersLine()}; held-out token accuracy {right}/{counted}");
        }
        return ok;
    }
}
