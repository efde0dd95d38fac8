using Peft.Core;

namespace Peft.Transformers;

/// <summary>
/// Keys and values of past positions for each decoder layer ([B, heads, T_past, head_dim]), so generation feeds only
/// the new token. Owns its tensors: dispose it when generation ends.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly (Tensor K, Tensor V)?[] _layers;

    /// <summary>An empty cache for <paramref name="layers"/> layers.</summary>
    public KvCache(int layers) => _layers = new (Tensor, Tensor)?[layers];

    /// <summary>Positions already cached (0 when empty).</summary>
    public int Length => _layers[0] is { } l ? l.K.Size(2) : 0;

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
        return (fullK, fullV);
    }

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
