using System.Text;
using System.Text.Json;

namespace Peft.Core.SafeTensors;

/// <summary>
/// Parses and validates a safetensors header: an 8-byte little-endian length, then that many bytes of UTF-8 JSON
/// mapping names to {dtype, shape, data_offsets} plus an optional "__metadata__" map of strings. Every check turns
/// into a <see cref="SafeTensorsFormatException"/>; nothing in a hostile header can index out of range or allocate
/// more than the file's own size.
/// </summary>
internal static class SafeTensorsHeader
{
    /// <summary>The reference implementation refuses headers above 100 MB; so do we.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>Element sizes of dtypes that can be listed though not loaded (FP8 and friends).</summary>
    private static readonly Dictionary<string, int> ForeignDTypeSizes = new()
    {
        ["F8_E4M3"] = 1, ["F8_E5M2"] = 1, ["U16"] = 2, ["I16"] = 2, ["U32"] = 4, ["U64"] = 8, ["C64"] = 8,
    };

    public static (List<SafeTensorInfo> Tensors, Dictionary<string, string> Metadata, long DataStart) Parse(string path, ReadOnlySpan<byte> prefix8, Func<long, byte[]> readHeader, long fileLength)
    {
        if (fileLength < 8) throw new SafeTensorsFormatException(path, $"file is {fileLength} bytes, shorter than the 8-byte header length");
        ulong n = BitConverter.ToUInt64(prefix8);
        if (n > (ulong)(fileLength - 8))
            throw new SafeTensorsFormatException(path, $"header length {n} runs past the end of the {fileLength}-byte file (truncated or not a safetensors file)");
        if ((long)n > MaxHeaderBytes) throw new SafeTensorsFormatException(path, $"header length {n} exceeds the {MaxHeaderBytes}-byte limit");
        if (n < 2) throw new SafeTensorsFormatException(path, $"header length {n} is too small to hold a JSON object");
        var bytes = readHeader((long)n);
        long dataStart = 8 + (long)n;
        long dataLength = fileLength - dataStart;

        JsonDocument doc;
        try
        {
            var text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            doc = JsonDocument.Parse(text.TrimEnd(' '), new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (Exception e) when (e is JsonException or DecoderFallbackException or ArgumentException)
        {
            throw new SafeTensorsFormatException(path, $"header is not valid UTF-8 JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new SafeTensorsFormatException(path, "header JSON is not an object");
            var tensors = new List<SafeTensorInfo>();
            var metadata = new Dictionary<string, string>();
            var seen = new HashSet<string>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name)) throw new SafeTensorsFormatException(path, $"header names '{prop.Name}' twice");
                if (prop.Name == "__metadata__") { ReadMetadata(path, prop.Value, metadata); continue; }
                tensors.Add(ReadTensor(path, prop.Name, prop.Value, dataLength));
            }
            CheckNoOverlap(path, tensors);
            return (tensors, metadata, dataStart);
        }
    }

    private static void ReadMetadata(string path, JsonElement e, Dictionary<string, string> into)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new SafeTensorsFormatException(path, "__metadata__ is not an object of strings");
        foreach (var p in e.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String) throw new SafeTensorsFormatException(path, $"__metadata__ value for '{p.Name}' is not a string");
            into[p.Name] = p.Value.GetString()!;
        }
    }

    private static SafeTensorInfo ReadTensor(string path, string name, JsonElement e, long dataLength)
    {
        string where = $"tensor '{name}'";
        if (e.ValueKind != JsonValueKind.Object) throw new SafeTensorsFormatException(path, $"{where}: entry is not an object");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new SafeTensorsFormatException(path, $"{where}: missing or non-string 'dtype'");
        string dtype = dt.GetString()!;
        int elem = DTypeInfo.TryParseSafeTensorsName(dtype, out var known) ? known.SizeOf()
            : ForeignDTypeSizes.TryGetValue(dtype, out var fs) ? fs
            : throw new SafeTensorsFormatException(path, $"{where}: unknown dtype '{dtype}'");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new SafeTensorsFormatException(path, $"{where}: missing or non-array 'shape'");
        var shape = new int[sh.GetArrayLength()];
        if (shape.Length > 16) throw new SafeTensorsFormatException(path, $"{where}: shape has {shape.Length} dims (at most 16 supported)");
        long numel = 1;
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out int v) || v < 0)
                throw new SafeTensorsFormatException(path, $"{where}: shape entry {d} is not a non-negative 32-bit integer");
            shape[i++] = v;
            // Saturate just past the data length instead of overflowing: a hostile shape must not wrap to a small count.
            numel = v == 0 || numel == 0 ? 0 : numel > dataLength / v ? dataLength + 1 : numel * v;
        }
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new SafeTensorsFormatException(path, $"{where}: 'data_offsets' must be an array of two integers");
        long begin = ReadOffset(path, where, off[0]), end = ReadOffset(path, where, off[1]);
        if (end < begin) throw new SafeTensorsFormatException(path, $"{where}: data_offsets [{begin}, {end}] end before they begin");
        if (end > dataLength) throw new SafeTensorsFormatException(path, $"{where}: data_offsets [{begin}, {end}] run past the {dataLength} data bytes in the file (truncated?)");
        if (numel > dataLength || numel * elem != end - begin)
            throw new SafeTensorsFormatException(path, $"{where}: shape {Shapes.Format(shape)} of {dtype} needs {(numel > dataLength ? "more than " + dataLength : (numel * elem).ToString())} bytes but data_offsets hold {end - begin}");
        foreach (var p in e.EnumerateObject())
            if (p.Name is not ("dtype" or "shape" or "data_offsets"))
                throw new SafeTensorsFormatException(path, $"{where}: unexpected field '{p.Name}'");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    private static long ReadOffset(string path, string where, JsonElement v)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x) || x < 0)
            throw new SafeTensorsFormatException(path, $"{where}: data offset {v} is not a non-negative integer");
        return x;
    }

    private static void CheckNoOverlap(string path, List<SafeTensorInfo> tensors)
    {
        var sorted = tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.Begin).ToList();
        for (int i = 1; i < sorted.Count; i++)
            if (sorted[i].Begin < sorted[i - 1].End)
                throw new SafeTensorsFormatException(path, $"tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap in the data section");
    }
}
