using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;
using Peft.Core;

namespace Peft.Transformers;

/// <summary>Token ids and attention mask of a padded batch ([B, T] I64 each). Dispose to free them.</summary>
public sealed record BatchEncoding(Tensor InputIds, Tensor AttentionMask) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose()
    {
        InputIds.Dispose();
        AttentionMask.Dispose();
    }
}

/// <summary>Which side padding goes on (transformers' padding_side).</summary>
public enum PaddingSide
{
    /// <summary>Pad after the text (the default for most tokenizers).</summary>
    Right,
    /// <summary>Pad before the text (decoder-only generation).</summary>
    Left,
}

/// <summary>
/// A Hugging Face tokenizer folder served by Microsoft.ML.Tokenizers: GPT-2 byte-level BPE (vocab.json + merges.txt),
/// SentencePiece (tokenizer.model: LLaMA, T5) or WordPiece (vocab.txt: BERT). Special tokens and options come from
/// tokenizer_config.json / special_tokens_map.json; the special tokens a model expects (BOS for LLaMA, [CLS]/[SEP]
/// for BERT, none for GPT-2) are added by <see cref="Encode(string, bool)"/>.
/// </summary>
public sealed class HfTokenizer
{
    private readonly Func<string, int[]> _encodeWithSpecials;
    private readonly Func<string, int[]> _encodePlain;
    private readonly HashSet<int> _specialIds;

    private HfTokenizer(Tokenizer inner, string kind, Func<string, int[]> encodeWithSpecials, Func<string, int[]> encodePlain, IEnumerable<int?> specialIds)
    {
        Inner = inner;
        Kind = kind;
        _encodeWithSpecials = encodeWithSpecials;
        _encodePlain = encodePlain;
        _specialIds = specialIds.OfType<int>().ToHashSet();
    }

    /// <summary>The Microsoft.ML.Tokenizers tokenizer doing the work.</summary>
    public Tokenizer Inner { get; }

    /// <summary>"bpe", "sentencepiece" or "wordpiece".</summary>
    public string Kind { get; }

    /// <summary>Beginning-of-sequence id, if the tokenizer has one.</summary>
    public int? BosTokenId { get; private init; }

    /// <summary>End-of-sequence id, if any.</summary>
    public int? EosTokenId { get; private init; }

    /// <summary>Padding id; set it (often to <see cref="EosTokenId"/>) for tokenizers that have none, as with GPT-2.</summary>
    public int? PadTokenId { get; set; }

    /// <summary>Side padding goes on.</summary>
    public PaddingSide PaddingSide { get; set; } = PaddingSide.Right;

    /// <summary>Longest input the model accepts (tokenizer_config's model_max_length), if known.</summary>
    public int? ModelMaxLength { get; private init; }

    /// <summary>Loads the tokenizer files of a Hugging Face folder.</summary>
    public static HfTokenizer FromPretrained(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"no tokenizer folder at '{folder}'");
        var cfg = ReadJson(Path.Combine(folder, "tokenizer_config.json"));
        var map = ReadJson(Path.Combine(folder, "special_tokens_map.json"));
        string? Special(string key) => TokenString(cfg?[key]) ?? TokenString(map?[key]);
        bool Flag(string key, bool fallback) => cfg?[key] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : fallback;
        var padSide = cfg?["padding_side"]?.GetValue<string>() == "left" ? PaddingSide.Left : PaddingSide.Right;
        int? maxLen = cfg?["model_max_length"] is JsonValue ml && ml.TryGetValue<double>(out var m) && m < 1e9 ? (int)m : null;

        string vocabJson = Path.Combine(folder, "vocab.json"), merges = Path.Combine(folder, "merges.txt");
        string spModel = Path.Combine(folder, "tokenizer.model"), vocabTxt = Path.Combine(folder, "vocab.txt");
        if (File.Exists(vocabJson) && File.Exists(merges))
        {
            using var v = File.OpenRead(vocabJson);
            using var mg = File.OpenRead(merges);
            var bpe = CodeGenTokenizer.Create(v, mg, addPrefixSpace: Flag("add_prefix_space", false), addBeginOfSentence: false, addEndOfSentence: false);
            int? Id(string? token) => token != null && bpe.Vocabulary.TryGetValue(token, out int id) ? id : null;
            var eos = Id(Special("eos_token") ?? "<|endoftext|>");
            var bos = Id(Special("bos_token") ?? "<|endoftext|>");
            bool addBos = Flag("add_bos_token", false);
            return new HfTokenizer(bpe, "bpe", t => [.. addBos && bos != null ? [bos.Value] : Array.Empty<int>(), .. bpe.EncodeToIds(t)], t => bpe.EncodeToIds(t).ToArray(), [eos, bos, Id(Special("pad_token"))])
            {
                BosTokenId = bos, EosTokenId = eos, PadTokenId = Id(Special("pad_token")), PaddingSide = padSide, ModelMaxLength = maxLen,
            };
        }
        if (File.Exists(spModel))
        {
            using var s = File.OpenRead(spModel);
            bool addBos = Flag("add_bos_token", true), addEos = Flag("add_eos_token", false);
            var sp = LlamaTokenizer.Create(s, addBeginOfSentence: addBos, addEndOfSentence: addEos);
            int? Id(string? token) => token != null && sp.Vocabulary.TryGetValue(token, out int id) ? id : null;
            return new HfTokenizer(sp, "sentencepiece", t => sp.EncodeToIds(t, addBos, addEos).ToArray(), t => sp.EncodeToIds(t, false, false).ToArray(),
                [sp.BeginningOfSentenceId, sp.EndOfSentenceId, Id(Special("pad_token"))])
            {
                BosTokenId = sp.BeginningOfSentenceId, EosTokenId = sp.EndOfSentenceId, PadTokenId = Id(Special("pad_token")),
                PaddingSide = padSide, ModelMaxLength = maxLen,
            };
        }
        if (File.Exists(vocabTxt))
        {
            var bert = BertTokenizer.Create(vocabTxt, new BertOptions { LowerCaseBeforeTokenization = Flag("do_lower_case", true) });
            return new HfTokenizer(bert, "wordpiece", t => bert.EncodeToIds(t, addSpecialTokens: true).ToArray(), t => bert.EncodeToIds(t, addSpecialTokens: false).ToArray(),
                [bert.ClassificationTokenId, bert.SeparatorTokenId, bert.PaddingTokenId, bert.MaskingTokenId])
            {
                BosTokenId = bert.ClassificationTokenId, EosTokenId = bert.SeparatorTokenId, PadTokenId = bert.PaddingTokenId,
                PaddingSide = padSide, ModelMaxLength = maxLen,
            };
        }
        throw new FileNotFoundException($"'{folder}' has no tokenizer files this library reads (vocab.json + merges.txt, tokenizer.model, or vocab.txt)");
    }

    /// <summary>Token ids of <paramref name="text"/>, with the model's special tokens unless told not to.</summary>
    public int[] Encode(string text, bool addSpecialTokens = true) => addSpecialTokens ? _encodeWithSpecials(text) : _encodePlain(text);

    /// <summary>Text of <paramref name="ids"/>; special tokens dropped when <paramref name="skipSpecialTokens"/>.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false) =>
        Inner.Decode(skipSpecialTokens ? ids.Where(i => !_specialIds.Contains(i)) : ids);

    /// <summary>
    /// Encodes a batch padded to its longest member (or truncated to <paramref name="maxLength"/>) with an attention
    /// mask that is 1 on real tokens, as transformers' tokenizer(..., padding=True) returns.
    /// </summary>
    public BatchEncoding EncodeBatch(IReadOnlyList<string> texts, int? maxLength = null, bool addSpecialTokens = true)
    {
        if (texts.Count == 0) throw new ArgumentException("EncodeBatch needs at least one text");
        var encoded = texts.Select(t => Encode(t, addSpecialTokens)).Select(ids => maxLength is int m && ids.Length > m ? ids[..m] : ids).ToList();
        int t = encoded.Max(e => e.Length);
        if (encoded.Any(e => e.Length != t) && PadTokenId == null)
            throw new InvalidOperationException("padding a batch needs a pad token: this tokenizer has none (set PadTokenId, e.g. to EosTokenId, as GPT-2 users do)");
        var ids = new long[texts.Count * t];
        var mask = new long[texts.Count * t];
        for (int b = 0; b < encoded.Count; b++)
        {
            int pad = t - encoded[b].Length, start = PaddingSide == PaddingSide.Left ? pad : 0;
            for (int j = 0; j < t; j++) { ids[b * t + j] = PadTokenId ?? 0; }
            for (int j = 0; j < encoded[b].Length; j++) { ids[b * t + start + j] = encoded[b][j]; mask[b * t + start + j] = 1; }
        }
        return new BatchEncoding(Tensor.FromArray(ids, [texts.Count, t]), Tensor.FromArray(mask, [texts.Count, t]));
    }

    private static JsonObject? ReadJson(string path)
    {
        if (!File.Exists(path)) return null;
        try { return JsonNode.Parse(File.ReadAllText(path)) as JsonObject; }
        catch (System.Text.Json.JsonException e) { throw new ConfigException(path, $"not valid JSON: {e.Message}", e); }
    }

    /// <summary>A special token is written either as a string or as {"content": "..."} (AddedToken).</summary>
    private static string? TokenString(JsonNode? node) => node switch
    {
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        JsonObject o => o["content"]?.GetValue<string>(),
        _ => null,
    };
}

/// <summary>transformers' AutoTokenizer: <c>AutoTokenizer.FromPretrained(folder)</c>.</summary>
public static class AutoTokenizer
{
    /// <summary>Loads the tokenizer of a Hugging Face folder.</summary>
    public static HfTokenizer FromPretrained(string folder) => HfTokenizer.FromPretrained(folder);
}
