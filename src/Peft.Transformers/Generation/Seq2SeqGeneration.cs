using Peft.Core;
using Peft.Transformers.T5;

namespace Peft.Transformers;

/// <summary>Encoder-decoder generation: the encoder runs once; the decoder runs one token per step with cached
/// self-attention keys/values and cross-attention keys/values computed once from the encoder output.</summary>
public static class Seq2SeqGeneration
{
    /// <summary>Generates a target for each input row; rows stop at EOS (included) or MaxNewTokens. The decoder
    /// starts from the config's decoder_start_token_id. <paramref name="prepareDecoderCache"/> runs once on the empty
    /// decoder self-attention cache (prefix tuning puts its keys/values there).</summary>
    public static int[][] Generate(T5ForConditionalGeneration model, Tensor inputIds, Tensor? attentionMask = null, GenerationOptions? options = null,
        Action<KvCache>? prepareDecoderCache = null)
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
        prepareDecoderCache?.Invoke(cache);
        using var cross = new T5CrossCache();
        using var encoded = model.Encode(inputIds, attentionMask).KeepAlive();
        var next = Tensor.Full([b, 1], model.Config.DecoderStartTokenId, DType.I64).KeepAlive();
        try
        {
            for (int step = 0; step < o.MaxNewTokens && !done.All(d => d); step++)
            {
                using var scope = Tensor.NewScope();
                var logits = model.Decode(next, encoded, attentionMask, cache, cross);
                using var last = logits.Select(1, 0);
                var chosen = TextGeneration.ChooseNext(last, o, rng, pad, done, result);
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
