namespace Peft.Core;

/// <summary>The scopes' common shape: an action run once, on the first Dispose (later ones do nothing), so a scope
/// disposed twice cannot restore its state twice.</summary>
internal sealed class OnDispose(Action action) : IDisposable
{
    private bool _done;

    public void Dispose()
    {
        if (_done) return;
        _done = true;
        action();
    }
}
