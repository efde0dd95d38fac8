using System.Text;
using System.Text.Json;

namespace Peft.Core.SafeTensors;

/// <summary>
/// Writes safetensors files the way the reference implementation lays them out (tensors ordered by the reference's dtype
/// enum, descending, then name; compact JSON header padded with spaces to 8 bytes so every tensor is aligned), atomically: data goes
/// to a temporary file in the same folder, is flushed to disk, then renamed over the target. A crash leaves either
/// the old file or the new one, never a torn one.
/// </summary>
public static class SafeTensorsWriter
{
    /// <summary>Saves <paramref name="tensors"/> (any layout, CPU) with optional string <paramref name="metadata"/>.</summary>
    /// <example><code>SafeTensorsWriter.Save("adapter_model.safetensors", state, new Dictionary&lt;string, string&gt; { ["format"] = "pt" });</code></example>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var ordered = tensors.OrderByDescending(kv => ReferenceRank(kv.Value.DType)).ThenBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        var header = BuildHeader(ordered, metadata);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> len = stackalloc byte[8];
            BitConverter.TryWriteBytes(len, (ulong)header.Length);
            stream.Write(len);
            stream.Write(header);
            foreach (var (_, t) in ordered) WriteData(stream, t);
        });
    }

    /// <summary>Position in the reference implementation's Dtype enum (BOOL, U8, I8, ..., F16, BF16, I32, U32, F32,
    /// F64, I64, U64), whose descending order lays out the file: matching it makes re-saved files byte-identical.</summary>
    private static int ReferenceRank(DType d) => d switch
    {
        DType.U8 => 0, DType.I8 => 1, DType.F16 => 2, DType.BF16 => 3, DType.I32 => 4,
        DType.F32 => 5, DType.F64 => 6, DType.I64 => 7, _ => throw new ArgumentOutOfRangeException(nameof(d)),
    };

    private static byte[] BuildHeader(List<KeyValuePair<string, Tensor>> ordered, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, t) in ordered)
            {
                t.ThrowIfDisposed();
                if (name == "__metadata__") throw new ArgumentException("'__metadata__' is reserved and cannot name a tensor");
                long bytes = t.NumEl * t.DType.SizeOf();
                w.WriteStartObject(name);
                w.WriteString("dtype", t.DType.SafeTensorsName());
                w.WriteStartArray("shape");
                foreach (var d in t._shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            w.WriteEndObject();
        }
        int pad = (int)((8 - ms.Length % 8) % 8);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }

    private static unsafe void WriteData(Stream stream, Tensor t)
    {
        using var c = t.HostData(); // a device tensor is copied to the host first
        long total = c.NumEl * c.DType.SizeOf();
        byte* p = c.Ptr<byte>();
        for (long done = 0; done < total;)
        {
            int chunk = (int)Math.Min(total - done, 1 << 30);
            stream.Write(new ReadOnlySpan<byte>(p + done, chunk));
            done += chunk;
        }
    }
}

/// <summary>Write-to-temp, flush, rename: the only way this library replaces a file.</summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="path"/> through <paramref name="write"/> atomically; on failure the old file is untouched and the temp file removed.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        var full = System.IO.Path.GetFullPath(path);
        var dir = System.IO.Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        RemoveStaleTemps(dir, System.IO.Path.GetFileName(full));
        var tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { /* best effort: the target is intact either way */ }
            throw;
        }
    }

    /// <summary>
    /// Deletes temp files of <paramref name="name"/> left by writers that died mid-save (killed, power loss): their
    /// name carries the writer's process id, and a file whose process no longer exists can belong to no live save.
    /// Temp files of live processes (another writer right now) are left alone.
    /// </summary>
    private static void RemoveStaleTemps(string dir, string name)
    {
        foreach (var file in Directory.EnumerateFiles(dir, $".{name}.*.tmp"))
        {
            var parts = System.IO.Path.GetFileName(file)[(name.Length + 2)..].Split('.');
            if (parts.Length != 3 || !int.TryParse(parts[0], out int pid) || pid == Environment.ProcessId || ProcessAlive(pid)) continue;
            try { File.Delete(file); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static bool ProcessAlive(int pid)
    {
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }          // no such process
        catch (InvalidOperationException) { return false; }
    }

    /// <summary>Writes UTF-8 text atomically.</summary>
    public static void WriteAllText(string path, string text) => Write(path, s => s.Write(Encoding.UTF8.GetBytes(text)));
}
