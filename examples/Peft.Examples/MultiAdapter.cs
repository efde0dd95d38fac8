using Peft.Core;
using Peft.Transformers;

namespace Peft.Examples;

/// <summary>Several adapters on one model: a "complaint" adapter and a "long" adapter (more than five words) trained
/// on one BERT, combined into a third by weighted merging (cat), and served together in one mixed batch where each
/// sample names its adapter. No task type, so no classification head is copied per adapter (weighted merging cannot
/// combine trained heads): the LoRA layers alone learn each task against the shared, frozen head.</summary>
internal static class MultiAdapter
{
    public static bool Run(TextWriter o, int epochs)
    {
        var tickets = ExampleKit.Tickets();
        var (tok, vocab) = ExampleKit.Tokenizer(tickets.Select(t => t.Text));
        var tasks = new Dictionary<string, Func<string, int, int>> { ["complaint"] = (_, label) => label, ["long"] = (text, _) => text.Split(' ').Length > 5 ? 1 : 0 };
        using var peft = PeftModel.Create(ExampleKit.Model(ExampleKit.Bert(vocab, 2), ModelTask.SequenceClassification),
            new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["all-linear"] }, "complaint");
        peft.AddAdapter("long", new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["all-linear"] });
        bool ok = true;
        foreach (var (name, labelOf) in tasks)
        {
            peft.SetAdapter(name);
            var batches = tickets.Chunk(8).Select(chunk => (Func<Tensor>)(() =>
            {
                var enc = tok.EncodeBatch(chunk.Select(c => c.Text).ToList());
                return peft.Forward(enc.InputIds, enc.AttentionMask, Tensor.FromArray(chunk.Select(c => (long)labelOf(c.Text, c.Label)).ToArray())).Loss!;
            })).ToList();
            ok &= ExampleKit.Report(o, $"adapter '{name}'", ExampleKit.Train(peft, batches, epochs > 0 ? epochs : 20, lr: 5e-3));
        }
        peft.AddWeightedAdapter(["complaint", "long"], [1.0, 1.0], "both", combinationType: "cat");
        o.WriteLine($"  adapters: {string.Join(", ", peft.PeftConfigs.Keys)} ('both' = complaint ⊕ long, rank {((LoraConfig)peft.PeftConfigs["both"]).R})");

        // One batch, three adapters: each row gets the prediction its own adapter gives alone.
        var texts = tickets.Take(3).Select(t => t.Text).ToList();
        string[] perRow = ["complaint", "long", PeftModel.BaseAdapterName];
        using var _ = Autograd.NoGrad();
        using var enc = tok.EncodeBatch(texts);
        var mixed = peft.Forward(enc.InputIds, enc.AttentionMask, adapterNames: perRow).Logits.ToFloatArray();
        for (int i = 0; i < 3; i++)
        {
            float[] alone;
            if (perRow[i] == PeftModel.BaseAdapterName) using (peft.DisableAdapter()) alone = peft.Forward(enc.InputIds, enc.AttentionMask).Logits.ToFloatArray();
            else
            {
                peft.SetAdapter(perRow[i]);
                alone = peft.Forward(enc.InputIds, enc.AttentionMask).Logits.ToFloatArray();
            }
            bool same = Enumerable.Range(0, 2).All(c => Math.Abs(mixed[i * 2 + c] - alone[i * 2 + c]) < 1e-4);
            o.WriteLine($"  row {i} with '{perRow[i]}': mixed batch {(same ? "matches" : "DIFFERS FROM")} the adapter alone");
            ok &= same;
        }
        return ok;
    }
}
