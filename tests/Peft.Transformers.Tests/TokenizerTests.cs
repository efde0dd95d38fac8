using Peft.Transformers;

namespace Peft.Transformers.Tests;

[TestFixture]
public class TokenizerTests
{
    private static string Gpt2Folder() => Peft.TestSupport.Gpt2Vocabulary.Folder();

    [Test]
    public void Gpt2BpeEncodesKnownStringsToTheirPublishedIds()
    {
        var tok = AutoTokenizer.FromPretrained(Gpt2Folder());
        Assert.That(tok.Kind, Is.EqualTo("bpe"));
        // Checked by hand against the vocabulary: "Hello" = 15496, "Ġworld" = 995, "Ġthe" = 262, "," = 11, "!" = 0.
        Assert.That(tok.Encode("Hello world"), Is.EqualTo(new[] { 15496, 995 }));
        Assert.That(tok.Encode("Hello, world!"), Is.EqualTo(new[] { 15496, 11, 995, 0 }));
        Assert.That(tok.Encode(" the"), Is.EqualTo(new[] { 262 }));
        Assert.That(tok.EosTokenId, Is.EqualTo(50256));
        Assert.That(tok.Decode(tok.Encode("Fine-tuning in .NET, naïvely: ok?")), Is.EqualTo("Fine-tuning in .NET, naïvely: ok?"));
    }

    [Test]
    public void BatchesArePaddedWithMasksOnEitherSide()
    {
        var tok = AutoTokenizer.FromPretrained(Gpt2Folder());
        Assert.Throws<InvalidOperationException>(() => tok.EncodeBatch(["Hello world", "Hello"]), "GPT-2 has no pad token by default");
        tok.PadTokenId = tok.EosTokenId;
        using (var right = tok.EncodeBatch(["Hello world", "Hello"]))
        {
            Assert.That(right.InputIds.ToArray<long>(), Is.EqualTo(new long[] { 15496, 995, 15496, 50256 }));
            Assert.That(right.AttentionMask.ToArray<long>(), Is.EqualTo(new long[] { 1, 1, 1, 0 }));
        }
        tok.PaddingSide = PaddingSide.Left;
        using (var left = tok.EncodeBatch(["Hello world", "Hello"]))
        {
            Assert.That(left.InputIds.ToArray<long>(), Is.EqualTo(new long[] { 15496, 995, 50256, 15496 }));
            Assert.That(left.AttentionMask.ToArray<long>(), Is.EqualTo(new long[] { 1, 1, 0, 1 }));
        }
        using var truncated = tok.EncodeBatch(["Hello, world!"], maxLength: 2);
        Assert.That(truncated.InputIds.Shape, Is.EqualTo(new[] { 1, 2 }));
    }

    [Test]
    public void WordPieceAddsClsAndSepAndSplitsSubwords()
    {
        var dir = Directory.CreateTempSubdirectory("peft-wp-").FullName;
        try
        {
            File.WriteAllLines(Path.Combine(dir, "vocab.txt"), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "fine", "##tun", "##ing", "!"]);
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{\"do_lower_case\": true}");
            var tok = AutoTokenizer.FromPretrained(dir);
            Assert.That(tok.Kind, Is.EqualTo("wordpiece"));
            Assert.That(tok.Encode("Hello finetuning world!"), Is.EqualTo(new[] { 2, 5, 7, 8, 9, 6, 10, 3 }));
            Assert.That(tok.Encode("hello zzz", addSpecialTokens: false), Is.EqualTo(new[] { 5, 1 }));
            Assert.That(tok.PadTokenId, Is.EqualTo(0));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void AFolderWithoutTokenizerFilesIsAClearError()
    {
        var dir = Directory.CreateTempSubdirectory("peft-none-").FullName;
        try { Assert.That(Assert.Throws<FileNotFoundException>(() => AutoTokenizer.FromPretrained(dir))!.Message, Does.Contain("vocab.json")); }
        finally { Directory.Delete(dir, true); }
    }
}
