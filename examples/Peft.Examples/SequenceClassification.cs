using Peft.Core;
using Peft.Transformers;

namespace Peft.Examples;

/// <summary>Complaint detection (sequence classification) with LoRA and (IA)³ on a BERT-shaped model and with prompt
/// tuning on a GPT-2-shaped one: held-out accuracy before and after each.</summary>
internal static class SequenceClassification
{
    public static bool Run(TextWriter o, int epochs)
    {
        var (train, eval) = ExampleKit.Split(ExampleKit.Tickets());
        var (tok, vocab) = ExampleKit.Tokenizer(train.Concat(eval).Select(t => t.Text));
        bool ok = true;
        foreach (var (name, json, config) in new (string, string, PeftConfig)[]
        {
            ("LoRA on BERT", ExampleKit.Bert(vocab, 2), new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["query", "value"], TaskType = "SEQ_CLS" }),
            ("(IA)³ on BERT", ExampleKit.Bert(vocab, 2), new IA3Config { TaskType = "SEQ_CLS" }),
            ("prompt tuning on GPT-2", ExampleKit.Gpt2(vocab), new PromptTuningConfig { NumVirtualTokens = 8, TaskType = "SEQ_CLS" }),
        })
        {
            using var peft = PeftModel.Create(ExampleKit.Model(json, ModelTask.SequenceClassification), config);
            // Decoder classifiers read the last position; with prompt embeddings that must be a real token: pad on the left.
            tok.PaddingSide = peft.Model.ModelType == "gpt2" ? PaddingSide.Left : PaddingSide.Right;
            double Accuracy()
            {
                using var _ = Autograd.NoGrad();
                using var scope = Tensor.NewScope();
                using var batch = tok.EncodeBatch(eval.Select(e => e.Text).ToList());
                var predicted = ExampleKit.ArgMax(peft.Forward(batch.InputIds, batch.AttentionMask).Logits);
                return predicted.Zip(eval).Count(p => p.First == p.Second.Label) / (double)eval.Count;
            }
            double before = Accuracy();
            var batches = train.Chunk(6).Select(chunk => (Func<Tensor>)(() =>
            {
                var enc = tok.EncodeBatch(chunk.Select(c => c.Text).ToList());
                return peft.Forward(enc.InputIds, enc.AttentionMask, Tensor.FromArray(chunk.Select(c => (long)c.Label).ToArray())).Loss!;
            })).ToList();
            ok &= ExampleKit.Report(o, name, ExampleKit.Train(peft, batches, epochs > 0 ? epochs : 25, lr: 5e-3));
            o.WriteLine($"  {peft.TrainableParametersLine()}; held-out accuracy {before:P0} → {Accuracy():P0}");
        }
        return ok;
    }
}
