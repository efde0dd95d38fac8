using Peft.Core;
using Peft.Core.Random;
using Peft.Transformers;
using Peft.Transformers.T5;

namespace Peft.Examples;

/// <summary>Sequence-to-sequence with LoRA on a T5-shaped model: learn to copy short token sequences through the
/// encoder–decoder (ids 3..20, EOS = 1), then decode held-out inputs with the generation loop.</summary>
internal static class Seq2Seq
{
    private const string Config = """
        {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "vocab_size": 24, "d_model": 32, "d_kv": 8, "d_ff": 64,
         "num_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8, "dropout_rate": 0.0, "decoder_start_token_id": 0,
         "pad_token_id": 0, "eos_token_id": 1, "feed_forward_proj": "relu", "tie_word_embeddings": false}
        """;

    public static bool Run(TextWriter o, int epochs)
    {
        var rng = new Generator(5);
        var data = Enumerable.Range(0, 160).Select(_ =>
        {
            using var r = Tensor.Rand([4], rng);
            return r.ToFloatArray().Select(u => 3 + (long)(u * 17)).ToArray();
        }).ToList();
        var (train, eval) = ExampleKit.Split(data);
        using var peft = PeftModel.Create(ExampleKit.Model(Config, ModelTask.Seq2SeqLM),
            new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["q", "k", "v", "o", "wi", "wo"], TaskType = "SEQ_2_SEQ_LM" });
        Tensor Inputs(IReadOnlyList<long[]> rows) => Tensor.FromArray(rows.SelectMany(r => r.Append(1L)).ToArray(), [rows.Count, 5]);
        Tensor Targets(IReadOnlyList<long[]> rows) => Tensor.FromArray(rows.SelectMany(r => r.Append(1L)).ToArray(), [rows.Count, 5]);
        var batches = train.Chunk(8).Select(chunk => (Func<Tensor>)(() => peft.Forward(Inputs(chunk), labels: Targets(chunk)).Loss!)).ToList();
        bool ok = ExampleKit.Report(o, "LoRA seq2seq (T5)", ExampleKit.Train(peft, batches, epochs > 0 ? epochs : 80, lr: 3e-3));
        using var input = Inputs(eval);
        var decoded = Seq2SeqGeneration.Generate((T5ForConditionalGeneration)peft.Model, input, options: new GenerationOptions { MaxNewTokens = 5, EosTokenIds = [1] });
        // Token by token: a copy is learned position by position before whole sequences come out right.
        int tokens = eval.Select((row, i) => row.Zip(decoded[i]).Count(p => p.First == p.Second)).Sum();
        o.WriteLine($"  {peft.TrainableParametersLine()}; held-out tokens copied: {tokens}/{eval.Count * 4}");
        return ok;
    }
}
