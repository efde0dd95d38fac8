using Peft.Core;

namespace Peft.Transformers;

/// <summary>
/// Keys and values of past positions for each decoder layer ([B, heads, T_past, head_dim]), so generation feeds only
/// the new token. Owns the tensors it caches: dispose it when generation ends. A cache may also start with a
/// <em>prefix</em> per layer (prefix tuning's learned past key/values, transformers' past_key_values): those keep their
/// autograd graph, are placed before every cached position and stay owned by the caller.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly (Tensor K, Tensor V)?[] _layers;
    private readonly (Tensor K, Tensor V)?[] _prefix;

    /// <summary>An empty cache for <paramref name="layers"/> layers.</summary>
    public KvCache(int layers)
    {
        _layers = new (Tensor, Tensor)?[layers];
        _prefix = new (Tensor, Tensor)?[layers];
    }

    /// <summary>Sets layer <paramref name="layer"/>'s prefix keys/values [B, kv_heads, P, head_dim] (not copied, not
    /// disposed by the cache: the caller keeps them alive while the cache is used; gradients flow into them).</summary>
    public void SetPrefix(int layer, Tensor k, Tensor v)
    {
        if (_layers[layer] != null) throw new InvalidOperationException("set the prefix before any position is cached");
        _prefix[layer] = (k, v);
    }

    /// <summary>Positions of the prefix (0 without one).</summary>
    public int PrefixLength => _prefix[0] is { } p ? p.K.Size(2) : 0;

    /// <summary>Positions already cached, the prefix included (0 when empty).</summary>
    public int Length => PrefixLength + (_layers[0] is { } l ? l.K.Size(2) : 0);

    /// <summary>Appends this step's keys/values for <paramref name="layer"/> and returns the full keys/values.</summary>
    public (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        Tensor fullK, fullV;
        if (_layers[layer] is { } past)
        {
            fullK = Tensor.Cat([past.K, k], 2);
            fullV = Tensor.Cat([past.V, v], 2);
            past.K.Dispose();
            past.V.Dispose();
        }
        else
        {
            fullK = k.Contiguous();
            fullV = v.Contiguous();
        }
        // The cache keeps its own detached copies alive across steps (generation runs without grad).
        _layers[layer] = (fullK.Detach().KeepAlive(), fullV.Detach().KeepAlive());
        if (_prefix[layer] is not { } prefix) return (fullK, fullV);
        using (fullK)
        using (fullV)
        {
            var pk = prefix.K.Size(0) == k.Size(0) ? prefix.K : prefix.K.Expand(k.Size(0), -1, -1, -1);
            var pv = prefix.V.Size(0) == v.Size(0) ? prefix.V : prefix.V.Expand(v.Size(0), -1, -1, -1);
            return (Tensor.Cat([pk, fullK], 2), Tensor.Cat([pv, fullV], 2));
        }
    }

    /// <summary>The keys/values cached for <paramref name="layer"/> (without the prefix), or null; owned by the cache.</summary>
    public (Tensor K, Tensor V)? Cached(int layer) => _layers[layer];

    /// <summary>Frees every cached tensor.</summary>
    public void Dispose()
    {
        for (int i = 0; i < _layers.Length; i++)
        {
            if (_layers[i] is { } l) { l.K.Dispose(); l.V.Dispose(); }
            _layers[i] = null;
        }
    }
}
