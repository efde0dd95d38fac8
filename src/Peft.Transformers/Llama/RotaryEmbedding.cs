using System.Text.Json.Nodes;
using Peft.Core;

namespace Peft.Transformers.Llama;

/// <summary>
/// Rotary position embedding with transformers' conventions: inverse frequencies base^(−2i/d) computed in float32
/// as transformers does (so cos/sin match bit for bit in practice), optional rope_scaling ("linear" divides the
/// frequencies by the factor; "llama3" rescales low frequencies and blends the middle band), and the rotate_half
/// layout (the first half of each head pairs with the second half).
/// </summary>
public sealed class RotaryEmbedding
{
    private readonly float[] _invFreq;

    /// <summary>Builds the frequency table for heads of size <paramref name="headDim"/>.</summary>
    public RotaryEmbedding(int headDim, double theta, JsonObject? scaling, string configPath)
    {
        HeadDim = headDim;
        _invFreq = new float[headDim / 2];
        for (int i = 0; i < _invFreq.Length; i++)
            _invFreq[i] = 1f / MathF.Pow((float)theta, (float)(2 * i) / headDim);
        var type = scaling?["rope_type"]?.GetValue<string>() ?? scaling?["type"]?.GetValue<string>() ?? "default";
        switch (type)
        {
            case "default":
                break;
            case "linear":
                float factor = (float)Number(scaling!, "factor", configPath);
                for (int i = 0; i < _invFreq.Length; i++) _invFreq[i] /= factor;
                break;
            case "llama3":
                ApplyLlama3(scaling!, configPath);
                break;
            default:
                throw new ConfigException(configPath, $"rope_scaling type '{type}' is not supported (default, linear, llama3)");
        }
    }

    /// <summary>Per-head size.</summary>
    public int HeadDim { get; }

    private void ApplyLlama3(JsonObject s, string path)
    {
        double factor = Number(s, "factor", path), low = Number(s, "low_freq_factor", path), high = Number(s, "high_freq_factor", path);
        double oldContext = Number(s, "original_max_position_embeddings", path);
        double lowWavelen = oldContext / low, highWavelen = oldContext / high;
        for (int i = 0; i < _invFreq.Length; i++)
        {
            double f = _invFreq[i], wavelen = 2 * Math.PI / f;
            if (wavelen > lowWavelen) f /= factor;
            else if (wavelen >= highWavelen)
            {
                double smooth = (oldContext / wavelen - low) / (high - low);
                f = (1 - smooth) * f / factor + smooth * f;
            }
            _invFreq[i] = (float)f;
        }
    }

    private static double Number(JsonObject s, string key, string path) =>
        s[key] is JsonValue v ? v.GetValue<double>() : throw new ConfigException(path, $"rope_scaling needs '{key}'");

    /// <summary>cos and sin tables [T, head_dim] for positions start..start+T−1 (F32), on <paramref name="device"/>
    /// (the CPU by default; computed on the host and copied).</summary>
    public (Tensor Cos, Tensor Sin) Tables(int start, int length, Device? device = null)
    {
        int d = HeadDim, half = d / 2;
        var cos = new float[length * d];
        var sin = new float[length * d];
        for (int t = 0; t < length; t++)
            for (int i = 0; i < half; i++)
            {
                float angle = (start + t) * _invFreq[i]; // float32 product, as transformers' float32 matmul
                cos[t * d + i] = cos[t * d + i + half] = MathF.Cos(angle);
                sin[t * d + i] = sin[t * d + i + half] = MathF.Sin(angle);
            }
        var (c, s) = (Tensor.FromArray(cos, [length, d]), Tensor.FromArray(sin, [length, d]));
        if (device is not { Type: not DeviceType.Cpu } target) return (c, s);
        using (c)
        using (s)
            return (c.To(target), s.To(target));
    }

    /// <summary>x·cos + rotate_half(x)·sin for x [B, H, T, D], rotate_half(x) = [−x₂, x₁].</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        int half = x.Size(-1) / 2;
        using var x1 = x.Narrow(-1, 0, half);
        using var x2 = x.Narrow(-1, half, half);
        using var negX2 = x2.Neg();
        using var rotated = Tensor.Cat([negX2, x1], -1);
        using var c = cos.DType == x.DType ? cos.Contiguous() : cos.To(x.DType);
        using var s = sin.DType == x.DType ? sin.Contiguous() : sin.To(x.DType);
        using var a = x.Mul(c);
        using var b = rotated.Mul(s);
        return a.Add(b);
    }
}
