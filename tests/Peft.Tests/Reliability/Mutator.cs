using System.Text;

namespace Peft.Tests.Reliability;

/// <summary>
/// A seeded mutation fuzzer's mutations: bit flips, byte overwrites, truncation, extension, header-length edits and
/// JSON-aware edits (numbers made negative / huge / overlapping, dtypes swapped, nesting deepened). Reproducible from
/// its seed: a failing case is reported with the seed and iteration that produced it.
/// </summary>
internal sealed class Mutator(int seed)
{
    private readonly System.Random _rng = new(seed);

    public byte[] Mutate(byte[] input)
    {
        var b = (byte[])input.Clone();
        int rounds = 1 + _rng.Next(3);
        for (int i = 0; i < rounds; i++) b = Once(b);
        return b;
    }

    private byte[] Once(byte[] b)
    {
        switch (_rng.Next(9))
        {
            case 0 when b.Length > 0: // flip one bit
                b[_rng.Next(b.Length)] ^= (byte)(1 << _rng.Next(8));
                return b;
            case 1 when b.Length > 0: // overwrite a byte with an interesting value
                b[_rng.Next(b.Length)] = new byte[] { 0, 0xFF, 0x7F, 0x80, (byte)'"', (byte)'{', (byte)'-', (byte)'9' }[_rng.Next(8)];
                return b;
            case 2: // truncate
                return b[..(b.Length == 0 ? 0 : _rng.Next(b.Length))];
            case 3: // extend with junk
                return [.. b, .. Enumerable.Range(0, 1 + _rng.Next(64)).Select(_ => (byte)_rng.Next(256))];
            case 4 when b.Length >= 8: // rewrite the 8-byte header length
                BitConverter.TryWriteBytes(b.AsSpan(0, 8), new ulong[] { 0, 1, 7, ulong.MaxValue, (ulong)long.MaxValue, (ulong)b.Length, (ulong)b.Length - 7, 100_000_001 }[_rng.Next(8)]);
                return b;
            default:
                return JsonEdit(b);
        }
    }

    /// <summary>Edits a number or string in the JSON part to a hostile value.</summary>
    private byte[] JsonEdit(byte[] b)
    {
        var text = Encoding.Latin1.GetString(b);
        var digits = System.Text.RegularExpressions.Regex.Matches(text, @"\d+");
        var choice = _rng.Next(5);
        if (choice < 3 && digits.Count > 0)
        {
            var m = digits[_rng.Next(digits.Count)];
            string[] replacements = ["-1", "0", "99999999999999999999", "18446744073709551615", "2147483648", "3", "1e308", "-0"];
            text = text[..m.Index] + replacements[_rng.Next(replacements.Length)] + text[(m.Index + m.Length)..];
        }
        else if (choice == 3)
        {
            string[] dtypes = ["\"F32\"", "\"BF16\"", "\"I64\"", "\"U8\"", "\"F8_E4M3\"", "\"Q4\"", "null", "7"];
            text = System.Text.RegularExpressions.Regex.Replace(text, "\"(F32|F64|BF16|F16|I64|I32|I8|U8)\"", _ => dtypes[_rng.Next(dtypes.Length)], System.Text.RegularExpressions.RegexOptions.None);
        }
        else
        {
            int at = text.IndexOf('{');
            if (at >= 0) text = text[..(at + 1)] + "\"deep\":" + new string('[', 200 + _rng.Next(2000)) + new string(']', _rng.Next(50)) + "," + text[(at + 1)..];
        }
        return Encoding.Latin1.GetBytes(text);
    }
}
