using System.IO.MemoryMappedFiles;

namespace Peft.Core.SafeTensors;

/// <summary>
/// A safetensors file opened for reading. The file is memory-mapped copy-on-write: <see cref="Load"/> returns a
/// zero-copy tensor over the mapping when the data is aligned for its dtype (writes to it never reach the file),
/// or an aligned copy otherwise. The mapping lives until this object and every zero-copy tensor are disposed.
/// </summary>
/// <example><code>
/// using var file = SafeTensorsFile.Open("adapter_model.safetensors");
/// foreach (var t in file.Tensors) Console.WriteLine($"{t.Name} {t.DTypeName} {Shapes.Format(t.Shape)}");
/// using var a = file.Load("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
/// </code></example>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    private readonly Dictionary<string, SafeTensorInfo> _byName;
    private readonly MappedRegion? _region;
    private bool _disposed;

    private SafeTensorsFile(string path, List<SafeTensorInfo> tensors, Dictionary<string, string> metadata, long dataStart, MappedRegion? region)
    {
        Path = path;
        Tensors = tensors;
        Metadata = metadata;
        DataStart = dataStart;
        _region = region;
        _byName = tensors.ToDictionary(t => t.Name);
    }

    /// <summary>The file path.</summary>
    public string Path { get; }

    /// <summary>Tensor entries in header order.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors { get; }

    /// <summary>The "__metadata__" map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>File offset where the data section starts (8 + header length).</summary>
    public long DataStart { get; }

    /// <summary>Opens and validates <paramref name="path"/>.</summary>
    /// <exception cref="FileNotFoundException">no such file.</exception>
    /// <exception cref="SafeTensorsFormatException">the file does not follow the format.</exception>
    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"no safetensors file at '{path}'", path);
        long length = new FileInfo(path).Length;
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            Span<byte> prefix = stackalloc byte[8];
            int got = fs.ReadAtLeast(prefix, 8, throwOnEndOfStream: false);
            var (tensors, metadata, dataStart) = SafeTensorsHeader.Parse(path, prefix[..got], n =>
            {
                var buf = new byte[n];
                fs.ReadExactly(buf);
                return buf;
            }, length);
            var region = length > 0 ? new MappedRegion(path, length) : null;
            return new SafeTensorsFile(path, tensors, metadata, dataStart, region);
        }
    }

    /// <summary>True when the file holds a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The header entry for <paramref name="name"/>.</summary>
    public SafeTensorInfo Info(string name) => _byName.TryGetValue(name, out var i) ? i
        : throw new KeyNotFoundException($"{Path}: no tensor named '{name}' (the file has {Tensors.Count} tensors)");

    /// <summary>Loads one tensor (zero-copy when aligned). Dispose it when done.</summary>
    public Tensor Load(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = Info(name);
        if (info.DType is not { } dtype)
            throw new SafeTensorsFormatException(Path, $"tensor '{name}' has dtype {info.DTypeName}, which Peft.Native cannot hold");
        byte* src = _region!.Pointer + DataStart + info.Begin;
        if ((nint)src % dtype.SizeOf() == 0)
        {
            _region.AddRef();
            var storage = new ExternalStorage(src, info.ByteLength, _region);
            return new Tensor(storage, (int[])info.Shape.Clone(), Shapes.ContiguousStrides(info.Shape), 0, dtype);
        }
        var t = Tensor.Allocate(info.Shape, dtype, zero: false);
        Buffer.MemoryCopy(src, t.Ptr<byte>(), info.ByteLength, info.ByteLength);
        return t;
    }

    /// <summary>Loads every tensor into a dictionary (zero-copy where aligned).</summary>
    public Dictionary<string, Tensor> LoadAll() => Tensors.ToDictionary(t => t.Name, t => Load(t.Name));

    /// <summary>Releases this file's hold on the mapping (zero-copy tensors keep it alive until disposed).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _region?.Dispose();
    }

    /// <summary>A reference-counted read-only (copy-on-write) mapping of a whole file.</summary>
    private sealed class MappedRegion : IDisposable
    {
        private readonly MemoryMappedFile _file;
        private readonly MemoryMappedViewAccessor _view;
        private int _refs = 1;

        public MappedRegion(string path, long length)
        {
            _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.CopyOnWrite);
            _view = _file.CreateViewAccessor(0, length, MemoryMappedFileAccess.CopyOnWrite);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            Pointer = p + _view.PointerOffset;
        }

        public byte* Pointer { get; }

        public void AddRef() => Interlocked.Increment(ref _refs);

        public void Dispose()
        {
            if (Interlocked.Decrement(ref _refs) != 0) return;
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _file.Dispose();
        }
    }
}
