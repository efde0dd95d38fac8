using System.Text.Json;

namespace Peft.Core.SafeTensors;

/// <summary>
/// A model's weights as Hugging Face stores them: one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c> ({"metadata": {...}, "weight_map": {name: shard file}}). Shards open on
/// first use.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    /// <summary>Name of the shard index file.</summary>
    public const string IndexFileName = "model.safetensors.index.json";
    private readonly Dictionary<string, string> _weightMap;
    private readonly Dictionary<string, SafeTensorsFile> _open = new();
    private readonly string _folder;

    private SafeTensorsCheckpoint(string folder, Dictionary<string, string> weightMap)
    {
        _folder = folder;
        _weightMap = weightMap;
    }

    /// <summary>Tensor names, sorted.</summary>
    public IReadOnlyList<string> Names => _weightMap.Keys.Order(StringComparer.Ordinal).ToList();

    /// <summary>The distinct files holding the weights.</summary>
    public IReadOnlyList<string> Files => _weightMap.Values.Distinct().Order(StringComparer.Ordinal).Select(f => Path.Combine(_folder, f)).ToList();

    /// <summary>
    /// Opens a checkpoint from a folder (index file, else <paramref name="singleFileName"/>), an index file, or a single
    /// .safetensors file.
    /// </summary>
    public static SafeTensorsCheckpoint Open(string path, string singleFileName = "model.safetensors")
    {
        if (Directory.Exists(path))
        {
            var index = Path.Combine(path, IndexFileName);
            if (File.Exists(index)) return OpenIndex(index);
            var single = Path.Combine(path, singleFileName);
            if (!File.Exists(single)) throw new FileNotFoundException($"'{path}' holds neither {IndexFileName} nor {singleFileName}", single);
            return OpenSingle(single);
        }
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return OpenIndex(path);
        return OpenSingle(path);
    }

    private static SafeTensorsCheckpoint OpenSingle(string file)
    {
        var f = SafeTensorsFile.Open(file);
        var ckpt = new SafeTensorsCheckpoint(Path.GetDirectoryName(Path.GetFullPath(file))!, f.Tensors.ToDictionary(t => t.Name, _ => Path.GetFileName(file)));
        ckpt._open[Path.GetFileName(file)] = f;
        return ckpt;
    }

    private static SafeTensorsCheckpoint OpenIndex(string indexPath)
    {
        if (!File.Exists(indexPath)) throw new FileNotFoundException($"no shard index at '{indexPath}'", indexPath);
        var folder = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        var map = new Dictionary<string, string>();
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath), new JsonDocumentOptions { MaxDepth = 16 });
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsFormatException(indexPath, "index has no 'weight_map' object");
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String) throw new SafeTensorsFormatException(indexPath, $"weight_map entry '{p.Name}' is not a file name");
                var file = p.Value.GetString()!;
                if (file.Contains('/') || file.Contains('\\') || file == "..")
                    throw new SafeTensorsFormatException(indexPath, $"weight_map entry '{p.Name}' points outside the folder ('{file}')");
                map[p.Name] = file;
            }
        }
        catch (JsonException e)
        {
            throw new SafeTensorsFormatException(indexPath, $"index is not valid JSON: {e.Message}", e);
        }
        foreach (var file in map.Values.Distinct())
            if (!File.Exists(Path.Combine(folder, file)))
                throw new SafeTensorsFormatException(indexPath, $"shard '{file}' listed in weight_map does not exist");
        return new SafeTensorsCheckpoint(folder, map);
    }

    /// <summary>True when the checkpoint has <paramref name="name"/>.</summary>
    public bool Contains(string name) => _weightMap.ContainsKey(name);

    /// <summary>The header entry for <paramref name="name"/>.</summary>
    public SafeTensorInfo Info(string name) => Shard(name).Info(name);

    /// <summary>Loads one tensor (zero-copy where aligned).</summary>
    public Tensor Load(string name) => Shard(name).Load(name);

    private SafeTensorsFile Shard(string name)
    {
        if (!_weightMap.TryGetValue(name, out var file)) throw new KeyNotFoundException($"checkpoint in '{_folder}' has no tensor '{name}'");
        if (!_open.TryGetValue(file, out var f))
        {
            f = SafeTensorsFile.Open(Path.Combine(_folder, file));
            _open[file] = f;
        }
        if (!f.Contains(name)) throw new SafeTensorsFormatException(f.Path, $"the index says this shard holds '{name}', but it does not");
        return f;
    }

    /// <summary>Closes the shards that were opened.</summary>
    public void Dispose()
    {
        foreach (var f in _open.Values) f.Dispose();
        _open.Clear();
    }
}
