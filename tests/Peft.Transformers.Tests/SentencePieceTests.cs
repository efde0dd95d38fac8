using Google.Protobuf;
using Peft.Transformers;

namespace Peft.Transformers.Tests;

/// <summary>
/// SentencePiece tokenizers (LLaMA's tokenizer.model) through AutoTokenizer. No such file can be fetched here, so the
/// test writes a small BPE ModelProto itself (sentencepiece_model.proto: pieces = 1 {piece = 1, score = 2, type = 3},
/// trainer_spec = 2 {model_type = 3, unk/bos/eos/pad_id = 40–43}, normalizer_spec = 3 {name = 1,
/// add_dummy_prefix = 3, remove_extra_whitespaces = 4, escape_whitespaces = 5}).
/// </summary>
[TestFixture]
public class SentencePieceTests
{
    private const int Normal = 1, Unknown = 2, Control = 3;

    private static readonly (string Piece, float Score, int Type)[] Pieces =
    [
        ("<unk>", 0, Unknown), ("<s>", 0, Control), ("</s>", 0, Control),
        ("▁hello", -1, Normal), ("▁world", -2, Normal),
        ("▁h", -3, Normal), ("▁he", -4, Normal), ("▁hel", -5, Normal), ("▁hell", -6, Normal),
        ("▁w", -7, Normal), ("▁wo", -8, Normal), ("▁wor", -9, Normal), ("▁worl", -10, Normal),
        ("▁", -11, Normal), ("h", -12, Normal), ("e", -13, Normal), ("l", -14, Normal), ("o", -15, Normal),
        ("w", -16, Normal), ("r", -17, Normal), ("d", -18, Normal),
    ];

    private static byte[] Message(Action<CodedOutputStream> write)
    {
        using var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        write(o);
        o.Flush();
        return ms.ToArray();
    }

    private static byte[] Model() => Message(o =>
    {
        foreach (var (piece, score, type) in Pieces)
        {
            o.WriteTag(1, WireFormat.WireType.LengthDelimited);
            o.WriteBytes(ByteString.CopyFrom(Message(p =>
            {
                p.WriteTag(1, WireFormat.WireType.LengthDelimited); p.WriteString(piece);
                p.WriteTag(2, WireFormat.WireType.Fixed32); p.WriteFloat(score);
                p.WriteTag(3, WireFormat.WireType.Varint); p.WriteEnum(type);
            })));
        }
        o.WriteTag(2, WireFormat.WireType.LengthDelimited);
        o.WriteBytes(ByteString.CopyFrom(Message(t =>
        {
            t.WriteTag(3, WireFormat.WireType.Varint); t.WriteEnum(2); // BPE
            t.WriteTag(40, WireFormat.WireType.Varint); t.WriteInt32(0);
            t.WriteTag(41, WireFormat.WireType.Varint); t.WriteInt32(1);
            t.WriteTag(42, WireFormat.WireType.Varint); t.WriteInt32(2);
            t.WriteTag(43, WireFormat.WireType.Varint); t.WriteInt32(-1);
        })));
        o.WriteTag(3, WireFormat.WireType.LengthDelimited);
        o.WriteBytes(ByteString.CopyFrom(Message(n =>
        {
            n.WriteTag(1, WireFormat.WireType.LengthDelimited); n.WriteString("identity");
            n.WriteTag(3, WireFormat.WireType.Varint); n.WriteBool(true);
            n.WriteTag(4, WireFormat.WireType.Varint); n.WriteBool(true);
            n.WriteTag(5, WireFormat.WireType.Varint); n.WriteBool(true);
        })));
    });

    [Test]
    public void ALlamaStyleTokenizerAddsBosMergesPiecesAndDecodes()
    {
        var dir = Directory.CreateTempSubdirectory("peft-sp-").FullName;
        try
        {
            File.WriteAllBytes(Path.Combine(dir, "tokenizer.model"), Model());
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{\"add_bos_token\": true, \"add_eos_token\": false, \"padding_side\": \"left\"}");
            var tok = AutoTokenizer.FromPretrained(dir);
            Assert.That(tok.Kind, Is.EqualTo("sentencepiece"));
            Assert.That(tok.BosTokenId, Is.EqualTo(1));
            Assert.That(tok.EosTokenId, Is.EqualTo(2));
            Assert.That(tok.Encode("hello world"), Is.EqualTo(new[] { 1, 3, 4 }));
            Assert.That(tok.Encode("hello world", addSpecialTokens: false), Is.EqualTo(new[] { 3, 4 }));
            Assert.That(tok.Encode("hell", addSpecialTokens: false), Is.EqualTo(new[] { 8 }));
            Assert.That(tok.Decode(tok.Encode("hello world"), skipSpecialTokens: true), Is.EqualTo("hello world"));
            Assert.That(tok.PaddingSide, Is.EqualTo(PaddingSide.Left));
            Assert.That(tok.Encode("hello z", addSpecialTokens: false), Does.Contain(0), "unknown characters map to <unk>");
        }
        finally { Directory.Delete(dir, true); }
    }
}
