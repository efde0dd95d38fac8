using Peft.Core;
using Peft.Transformers.T5;

namespace Peft.Transformers;

/// <summary>Encoder-decoder generation: the encoder runs once; the decoder runs one token per step with cached
/// self-attention keys/values and cross-attention keys/values computed once from the encoder output.</summary>
public static class Seq2SeqGeneration
{
    /// <summary>Generates a target for each input row; rows stop at EOS (included) or MaxNewTokens. The decoder
    /// starts from the config's decoder_start_token_id.</summary>
    public static int[][] Generate(T5ForConditionalGeneration model, Tensor inputIds, Tensor? attentionMask = null, GenerationOptions? options = null)
    {
        var o = options ?? new GenerationOptions { EosTokenIds = [model.Config.EosTokenId] };
        int b = inputIds.Size(0);
        var result = Enumerable.Range(0, b).Select(_ => new List<int>()).ToArray();
        var done = new bool[b];
        int pad = o.PadTokenId ?? model.Config.PadTokenId;
        var rng = o.Generator ?? new Peft.Core.Random.Generator(0);
        bool wasTraining = model.IsTraining;
        model.Eval();
        using var _ = Autograd.NoGrad();
        using var cache = new KvCache(model.NumLayers);
        using var cross = new T5CrossCache();
        using var encoded = model.Encode(inputIds, attentionMask).KeepAlive();
        var next = Tensor.Full([b, 1], model.Config.DecoderStartTokenId, DType.I64).KeepAlive();
        try
        {
            for (int step = 0; step < o.MaxNewTokens && !done.All(d => d); step++)
            {
                using var scope = Tensor.NewScope();
                var logits = model.Decode(next, encoded, attentionMask, cache, cross);
                var last = logits.Select(1, 0).ToFloatArray();
                int vocab = logits.Size(-1);
                var chosen = new long[b];
                for (int i = 0; i < b; i++)
                {
                    var row = new ReadOnlySpan<float>(last, i * vocab, vocab);
                    int token = done[i] ? pad : o.DoSample ? TextGeneration.Sample(row, o, rng) : TextGeneration.ArgMax(row);
                    chosen[i] = token;
                    if (done[i]) continue;
                    result[i].Add(token);
                    if (o.EosTokenIds.Contains(token)) done[i] = true;
                }
                next.Dispose();
                next = Tensor.FromArray(chosen, [b, 1]).KeepAlive();
            }
        }
        finally
        {
            next.Dispose();
            model.Train(wasTraining);
        }
        return result.Select(r => r.ToArray()).ToArray();
    }
}
