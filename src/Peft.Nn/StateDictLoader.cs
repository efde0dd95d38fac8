using Peft.Core;
using Peft.Core.SafeTensors;

namespace Peft.Nn;

/// <summary>Where weights come from: an in-memory dictionary or a (sharded) safetensors checkpoint.</summary>
public interface IStateSource
{
    /// <summary>All keys the source holds.</summary>
    IReadOnlyCollection<string> Keys { get; }

    /// <summary>Shape of <paramref name="key"/> without loading its data.</summary>
    int[] ShapeOf(string key);

    /// <summary>Loads <paramref name="key"/>; the caller owns (and disposes) the result.</summary>
    Tensor Load(string key);
}

/// <summary>A state source over tensors in memory (they are copied or aliased, never disposed by the loader).</summary>
public sealed class DictionaryStateSource(IReadOnlyDictionary<string, Tensor> tensors) : IStateSource
{
    /// <inheritdoc/>
    public IReadOnlyCollection<string> Keys => tensors.Keys.ToList();

    /// <inheritdoc/>
    public int[] ShapeOf(string key) => tensors[key].Shape;

    /// <inheritdoc/>
    public Tensor Load(string key) => tensors[key].Detach();
}

/// <summary>A state source over a safetensors checkpoint (tensors load zero-copy where aligned).</summary>
public sealed class CheckpointStateSource(SafeTensorsCheckpoint checkpoint) : IStateSource
{
    /// <inheritdoc/>
    public IReadOnlyCollection<string> Keys => checkpoint.Names;

    /// <inheritdoc/>
    public int[] ShapeOf(string key) => checkpoint.Info(key).Shape;

    /// <inheritdoc/>
    public Tensor Load(string key) => checkpoint.Load(key);
}

/// <summary>Keys that did not line up when loading a state dict.</summary>
public sealed record LoadResult(IReadOnlyList<string> MissingKeys, IReadOnlyList<string> UnexpectedKeys);

/// <summary>A state dict does not fit the module: lists the missing, unexpected and mis-shaped keys.</summary>
public sealed class StateDictException(string message, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<string> mismatched)
    : Exception(message)
{
    /// <summary>Keys the module has and the source lacks.</summary>
    public IReadOnlyList<string> MissingKeys { get; } = missing;

    /// <summary>Keys the source has and the module lacks.</summary>
    public IReadOnlyList<string> UnexpectedKeys { get; } = unexpected;

    /// <summary>"key: expected [..], got [..]" for each shape mismatch.</summary>
    public IReadOnlyList<string> Mismatched { get; } = mismatched;
}

/// <summary>Loads weights into a module by dotted path.</summary>
public static class StateDictLoader
{
    /// <summary>
    /// Copies (or, with <paramref name="assign"/>, adopts without copying when dtypes match — zero-copy from a
    /// memory-mapped checkpoint) every tensor of <paramref name="source"/> into <paramref name="module"/>.
    /// Shapes must match. With <paramref name="strict"/>, missing and unexpected keys are errors too; keys matching
    /// <paramref name="ignoreUnexpected"/> (suffixes) never count as unexpected. Tied tensors (one object under two
    /// paths) are loaded once and stay tied.
    /// </summary>
    public static LoadResult Load(Module module, IStateSource source, bool strict = true, bool assign = false, IEnumerable<string>? ignoreUnexpected = null)
    {
        var available = source.Keys.ToHashSet();
        var ignore = ignoreUnexpected?.ToArray() ?? [];
        var slots = new List<(Module Owner, string Name, string Path, Tensor Tensor, bool IsParameter)>();
        foreach (var (path, m) in module.NamedModules())
            foreach (var (n, t, isParam) in m.OwnTensors())
                slots.Add((m, n, Module.Join(path, n), t, isParam));

        // A tied tensor counts as present when any of its paths is in the source.
        var presentTensors = new HashSet<Tensor>(slots.Where(s => available.Contains(s.Path)).Select(s => s.Tensor), ReferenceEqualityComparer.Instance);
        var missing = slots.Where(s => !presentTensors.Contains(s.Tensor)).Select(s => s.Path).ToList();
        var known = slots.Select(s => s.Path).ToHashSet();
        var unexpected = available.Where(k => !known.Contains(k) && !ignore.Any(k.EndsWith)).Order(StringComparer.Ordinal).ToList();
        var mismatched = slots.Where(s => available.Contains(s.Path) && !source.ShapeOf(s.Path).AsSpan().SequenceEqual(s.Tensor.Shape))
            .Select(s => $"{s.Path}: model has {Shapes.Format(s.Tensor.Shape)}, checkpoint has {Shapes.Format(source.ShapeOf(s.Path))}").ToList();
        if (mismatched.Count > 0 || (strict && (missing.Count > 0 || unexpected.Count > 0)))
            throw new StateDictException(Describe(module, missing, unexpected, mismatched), missing, unexpected, mismatched);

        var replaced = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        using var _ = Autograd.NoGrad();
        foreach (var s in slots)
        {
            if (replaced.TryGetValue(s.Tensor, out var already)) { s.Owner.Replace(s.Name, s.IsParameter, already); continue; }
            if (!available.Contains(s.Path)) continue;
            var loaded = source.Load(s.Path);
            if (assign && loaded.DType == s.Tensor.DType)
            {
                loaded.RequiresGrad = s.Tensor.RequiresGrad;
                s.Owner.Replace(s.Name, s.IsParameter, loaded);
                replaced[s.Tensor] = loaded;
                s.Tensor.Dispose();
            }
            else
            {
                s.Tensor.CopyFrom(loaded);
                loaded.Dispose();
                replaced[s.Tensor] = s.Tensor;
            }
        }
        return new LoadResult(missing, unexpected);
    }

    private static string Describe(Module module, List<string> missing, List<string> unexpected, List<string> mismatched)
    {
        var parts = new List<string> { $"state dict does not fit {module.GetType().Name}:" };
        if (mismatched.Count > 0) parts.Add($"{mismatched.Count} shape mismatch(es): {string.Join("; ", mismatched.Take(5))}");
        if (missing.Count > 0) parts.Add($"{missing.Count} missing key(s): {string.Join(", ", missing.Take(8))}{(missing.Count > 8 ? ", ..." : "")}");
        if (unexpected.Count > 0) parts.Add($"{unexpected.Count} unexpected key(s): {string.Join(", ", unexpected.Take(8))}{(unexpected.Count > 8 ? ", ..." : "")}");
        return string.Join("\n  ", parts);
    }
}


/// <summary>State-dict conveniences on <see cref="Module"/>.</summary>
public static class ModuleStateDictExtensions
{
    /// <summary>Loads tensors from a dictionary (copying them).</summary>
    public static LoadResult LoadStateDict(this Module module, IReadOnlyDictionary<string, Tensor> state, bool strict = true) =>
        StateDictLoader.Load(module, new DictionaryStateSource(state), strict);
}
