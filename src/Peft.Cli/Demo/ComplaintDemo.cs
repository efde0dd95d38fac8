using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Peft.Core;
using Peft.Core.Random;
using Peft.Nn;
using Peft.Transformers;

namespace Peft.Cli.Demo;

/// <summary>
/// The main job's built-in demonstration: builds a small BERT-shaped model and its WordPiece vocabulary
/// deterministically, LoRA-fine-tunes it to tell complaints from other messages, and proves the adapter round trip:
/// saved in the Hugging Face PEFT format, reloaded, merged, with the same predictions each time.
/// </summary>
internal static class ComplaintDemo
{
    public static int Run(string outputDir, int epochs, TextWriter o)
    {
        var sw = Stopwatch.StartNew();
        var inv = CultureInfo.InvariantCulture;
        var baseDir = Path.Combine(outputDir, "base-model");
        var adapterDir = Path.Combine(outputDir, "adapter");
        o.WriteLine($"peft train — built-in demo (no --model given): LoRA sequence classification, complaint / no complaint");
        BuildBaseModel(baseDir);
        o.WriteLine($"base model: {baseDir} (BERT-shaped, 2 layers × 64, made deterministically from seed 42)");

        var tokenizer = AutoTokenizer.FromPretrained(baseDir);
        var train = ComplaintData.Train.ToList();
        var eval = ComplaintData.Eval.ToList();
        o.WriteLine($"data: {train.Count} training and {eval.Count} evaluation messages");

        Generator.Default.ManualSeed(7);
        var config = new Peft.LoraConfig { R = 8, LoraAlpha = 16, LoraDropout = 0.0, TargetModules = ["all-linear"], TaskType = "SEQ_CLS" };
        using var peft = Peft.PeftModel.Create(AutoModel.FromPretrained(baseDir, ModelTask.SequenceClassification), config);
        o.WriteLine(peft.TrainableParametersLine());
        o.WriteLine($"accuracy before training: {Accuracy(peft, tokenizer, eval):P0}");

        using var optimizer = new AdamW(peft.Parameters().Where(p => p.RequiresGrad), lr: 3e-3, weightDecay: 0.0);
        var order = Enumerable.Range(0, train.Count).ToArray();
        var shuffle = new System.Random(3);
        for (int epoch = 1; epoch <= epochs; epoch++)
        {
            shuffle.Shuffle(order);
            peft.Train();
            double total = 0;
            int batches = 0;
            foreach (var chunk in order.Chunk(8))
            {
                using var scope = Tensor.NewScope();
                using var batch = tokenizer.EncodeBatch(chunk.Select(i => train[i].Text).ToList());
                var labels = Tensor.FromArray(chunk.Select(i => (long)train[i].Label).ToArray());
                optimizer.ZeroGrad();
                var loss = peft.Forward(batch.InputIds, batch.AttentionMask, labels).Loss!;
                loss.Backward();
                optimizer.Step();
                total += loss.Item();
                batches++;
            }
            if (epoch == 1 || epoch % 5 == 0 || epoch == epochs)
                o.WriteLine($"epoch {epoch,3}/{epochs}  {Bar(epoch, epochs)}  loss {(total / batches).ToString("F4", inv)}");
        }
        peft.Eval();
        var predictions = Predict((x, m, l, c) => peft.Forward(x, m, l, c), tokenizer, eval);
        o.WriteLine($"accuracy after training: {Accuracy(predictions, eval):P0}");

        peft.SavePretrained(adapterDir);
        long bytes = new FileInfo(Path.Combine(adapterDir, Peft.PeftModel.WeightsFileName)).Length;
        o.WriteLine($"adapter saved: {adapterDir} (adapter_model.safetensors {bytes / 1024.0:F1} KiB + adapter_config.json, Hugging Face PEFT format)");

        using var reloaded = Peft.PeftModel.FromPretrained(AutoModel.FromPretrained(baseDir, ModelTask.SequenceClassification), adapterDir);
        reloaded.Eval();
        bool sameAfterReload = Predict((x, m, l, c) => reloaded.Forward(x, m, l, c), tokenizer, eval).SequenceEqual(predictions);
        o.WriteLine($"reloaded adapter gives the same predictions: {(sameAfterReload ? "yes" : "NO")}");
        using var merged = reloaded.MergeAndUnload();
        bool sameAfterMerge = Predict(merged.Forward, tokenizer, eval).SequenceEqual(predictions);
        o.WriteLine($"merged model gives the same predictions: {(sameAfterMerge ? "yes" : "NO")}");
        o.WriteLine($"done in {sw.Elapsed.TotalSeconds:F1} s");
        return sameAfterReload && sameAfterMerge ? 0 : 1;
    }

    private static string Bar(int done, int total)
    {
        int width = 20, filled = done * width / total;
        return "[" + new string('#', filled) + new string('.', width - filled) + "]";
    }

    /// <summary>Writes config.json, model.safetensors, vocab.txt and tokenizer_config.json of the demo model.</summary>
    private static void BuildBaseModel(string dir)
    {
        var words = ComplaintData.All.SelectMany(d => Words(d.Text)).Distinct().Order(StringComparer.Ordinal).ToList();
        var vocab = new List<string> { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
        vocab.AddRange(words);
        var json = new JsonObject
        {
            ["model_type"] = "bert", ["architectures"] = new JsonArray("BertForSequenceClassification"), ["vocab_size"] = vocab.Count,
            ["hidden_size"] = 64, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 4, ["intermediate_size"] = 128,
            ["max_position_embeddings"] = 64, ["hidden_dropout_prob"] = 0.0, ["attention_probs_dropout_prob"] = 0.0,
            ["num_labels"] = 2, ["id2label"] = new JsonObject { ["0"] = "no complaint", ["1"] = "complaint" },
        };
        Generator.Default.ManualSeed(42);
        using var model = AutoModel.Create(HfConfig.FromJson(json.ToJsonString()));
        model.SavePretrained(dir);
        File.WriteAllLines(Path.Combine(dir, "vocab.txt"), vocab);
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{\"do_lower_case\": true, \"model_max_length\": 64}");
    }

    private static IEnumerable<string> Words(string text) =>
        text.ToLowerInvariant().Split([' ', ',', '.', '!', '?'], StringSplitOptions.RemoveEmptyEntries);

    private static int[] Predict(Func<Tensor, Tensor?, Tensor?, KvCache?, ModelOutput> forward, HfTokenizer tok, List<(string Text, int Label)> data)
    {
        using var _ = Autograd.NoGrad();
        using var scope = Tensor.NewScope();
        using var batch = tok.EncodeBatch(data.Select(d => d.Text).ToList());
        var logits = forward(batch.InputIds, batch.AttentionMask, null, null).Logits.ToFloatArray();
        return Enumerable.Range(0, data.Count).Select(i => logits[2 * i + 1] > logits[2 * i] ? 1 : 0).ToArray();
    }

    private static double Accuracy(int[] predictions, List<(string Text, int Label)> data) =>
        predictions.Zip(data).Count(p => p.First == p.Second.Label) / (double)data.Count;

    private static double Accuracy(Peft.PeftModel peft, HfTokenizer tok, List<(string Text, int Label)> data)
    {
        peft.Eval();
        return Accuracy(Predict((x, m, l, c) => peft.Forward(x, m, l, c), tok, data), data);
    }
}
