namespace Peft.Core.Random;

/// <summary>
/// Remembers where every generator stood when a region first drew from it, so the region can be run again with the
/// same random numbers — gradient checkpointing recomputes a block in backward and its dropout masks must be the ones
/// of the forward pass (torch's preserve_rng_state, for every generator, not only the default one). Replaying leaves
/// each generator where it was before the replay, so the rest of the run draws what it would have drawn. The trainer
/// uses it too, to re-run a diverged batch exactly under anomaly detection.
/// </summary>
public sealed class RngReplay : IDisposable
{
    [ThreadStatic] private static List<RngReplay>? _recording;
    private readonly Dictionary<Generator, long> _starts = new(ReferenceEqualityComparer.Instance);
    private bool _stopped;

    private RngReplay() { }

    /// <summary>Starts noting the generators this thread draws from until the returned recording is disposed.</summary>
    public static RngReplay Record()
    {
        var r = new RngReplay();
        (_recording ??= new()).Add(r);
        return r;
    }

    /// <summary>Called by <see cref="Generator.Reserve"/>: the first reservation in each open recording counts.</summary>
    internal static void Note(Generator generator, long first)
    {
        var open = _recording;
        if (open == null) return;
        foreach (var r in open) r._starts.TryAdd(generator, first);
    }

    /// <summary>Rewinds the recorded generators to their starts; disposing the result puts them back where they were.</summary>
    public IDisposable Replay()
    {
        var current = new Dictionary<Generator, long>(ReferenceEqualityComparer.Instance);
        foreach (var g in _starts.Keys) current[g] = g.Offset;
        foreach (var (g, start) in _starts) g.Offset = start;
        return new OnDispose(() =>
        {
            foreach (var (g, offset) in current) g.Offset = offset;
        });
    }

    /// <summary>Stops recording.</summary>
    public void Dispose()
    {
        if (_stopped) return;
        _stopped = true;
        _recording?.Remove(this);
    }
}
