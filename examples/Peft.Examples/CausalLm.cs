using Peft.Core;
using Peft.Transformers;

namespace Peft.Examples;

/// <summary>Complaint detection as text generation (PEFT's twitter_complaints recipe): a GPT-2-shaped model learns to
/// complete "ticket : … label :" with "complaint" or "fine", LoRA on every linear layer, loss on the completion only.</summary>
internal static class CausalLm
{
    private const int SepId = 3;   // ExampleKit's vocabularies start [PAD] [UNK] [CLS] [SEP] [MASK]

    public static bool Run(TextWriter o, int epochs)
    {
        var (train, eval) = ExampleKit.Split(ExampleKit.Tickets());
        var (tok, vocab) = ExampleKit.Tokenizer(train.Concat(eval).Select(t => t.Text), "ticket", "label", "complaint", "fine");
        using var peft = PeftModel.Create(ExampleKit.Model(ExampleKit.Gpt2(vocab), ModelTask.CausalLM),
            new LoraConfig { R = 16, LoraAlpha = 32, TargetModules = ["all-linear"], TaskType = "CAUSAL_LM" });
        // WordPiece wraps a text in [CLS] … [SEP]: the prompt keeps [CLS], the completion is the label word then [SEP].
        long[] Prompt(string text) => tok.Encode("ticket : " + text + " label :").SkipLast(1).Select(i => (long)i).ToArray();
        long[] Answer(int label) => tok.Encode(label == 1 ? "complaint" : "fine", addSpecialTokens: false).Append(SepId).Select(i => (long)i).ToArray();
        var batches = train.Chunk(6).Select(chunk => (Func<Tensor>)(() =>
        {
            var rows = chunk.Select(c => (Prompt(c.Text), Answer(c.Label))).ToList();
            int t = rows.Max(r => r.Item1.Length + r.Item2.Length);
            var ids = new long[rows.Count * t];
            var labels = Enumerable.Repeat(-100L, rows.Count * t).ToArray();
            var mask = new long[rows.Count * t];
            for (int b = 0; b < rows.Count; b++)
            {
                var seq = rows[b].Item1.Concat(rows[b].Item2).ToArray();
                for (int j = 0; j < seq.Length; j++) { ids[b * t + j] = seq[j]; mask[b * t + j] = 1; if (j >= rows[b].Item1.Length) labels[b * t + j] = seq[j]; }
            }
            return peft.Forward(Tensor.FromArray(ids, [rows.Count, t]), Tensor.FromArray(mask, [rows.Count, t]), Tensor.FromArray(labels, [rows.Count, t])).Loss!;
        })).ToList();
        bool ok = ExampleKit.Report(o, "LoRA causal LM", ExampleKit.Train(peft, batches, epochs > 0 ? epochs : 40, lr: 2e-2));
        int correct = 0;
        foreach (var (text, label) in eval)
        {
            var prompt = Prompt(text);
            using var input = Tensor.FromArray(prompt, [1, prompt.Length]);
            var generated = peft.Generate(input, new GenerationOptions { MaxNewTokens = 1 });
            correct += generated[0][0] == Answer(label)[0] ? 1 : 0;
        }
        o.WriteLine($"  {peft.TrainableParametersLine()}; held-out labels generated correctly: {correct}/{eval.Count}");
        return ok;
    }
}
