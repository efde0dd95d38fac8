namespace Peft.Core.Quantization;

/// <summary>
/// bitsandbytes' blockwise 8-bit quantization with its signed "dynamic" code book: each block of
/// <see cref="BlockSize"/> values is divided by its absmax and every value is replaced by the index of the nearest of
/// 256 levels. QLoRA's double quantization stores NF4's per-64 absmax values this way (blocks of 256, after
/// subtracting their mean), which takes the statistics from 32 to ≈ 8 bits each.
/// </summary>
public static class Blockwise8
{
    /// <summary>Values per absmax block in double quantization (bitsandbytes' <c>blocksize=256</c>).</summary>
    public const int BlockSize = 256;

    /// <summary>
    /// The signed dynamic map (<c>create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)</c>), sorted:
    /// for exponents 10⁻⁶…10⁰ the midpoints of linspace(0.1, 1, 2^i + 1), both signs, then 0 and 1. Built in float32
    /// arithmetic as torch builds it (its linspace fills from both ends), so the levels are bitsandbytes' bit for bit.
    /// The largest negative level is −0.99297…: the map is not symmetric at its ends.
    /// </summary>
    public static readonly float[] Code = BuildDynamicMap();

    private static float[] BuildDynamicMap()
    {
        const int maxExponentBits = 7;
        var data = new List<float>(256);
        for (int i = 0; i < maxExponentBits; i++)
        {
            int items = (1 << i) + 1;
            var bounds = Linspace(0.1f, 1f, items);
            float scale = (float)Math.Pow(10, -(maxExponentBits - 1) + i);
            for (int k = 0; k + 1 < items; k++)
            {
                float mean = (bounds[k] + bounds[k + 1]) / 2f;
                data.Add(scale * mean);
                data.Add(-(scale * mean));
            }
        }
        data.Add(0f);
        data.Add(1f);
        data.Sort();
        return data.ToArray();
    }

    /// <summary>torch.linspace in float32: the first half counts up from start, the second half down from end.</summary>
    private static float[] Linspace(float start, float end, int steps)
    {
        var v = new float[steps];
        float step = (end - start) / (steps - 1);
        int half = steps / 2;
        for (int i = 0; i < steps; i++) v[i] = i < half ? start + step * i : end - step * (steps - i - 1);
        return v;
    }

    /// <summary>The index of the level nearest to <paramref name="x"/> ∈ [−1, 1]; a tie goes to the lower index
    /// (torch.argmin's first minimum, as bitsandbytes' reference backend picks).</summary>
    public static byte Nearest(float x)
    {
        var code = Code;
        int lo = 0, hi = code.Length - 1;
        while (hi - lo > 1)
        {
            int mid = (lo + hi) / 2;
            if (code[mid] <= x) lo = mid; else hi = mid;
        }
        return Math.Abs(x - code[lo]) <= Math.Abs(x - code[hi]) ? (byte)lo : (byte)hi;
    }

    /// <summary>Quantizes <paramref name="values"/> (any length; the last block may be partial) to codes and one
    /// absmax per block.</summary>
    public static (byte[] Codes, float[] Absmax) Quantize(ReadOnlySpan<float> values)
    {
        int blocks = (values.Length + BlockSize - 1) / BlockSize;
        var codes = new byte[values.Length];
        var absmax = new float[blocks];
        for (int b = 0; b < blocks; b++)
        {
            int start = b * BlockSize, end = Math.Min(values.Length, start + BlockSize);
            float max = 0;
            for (int i = start; i < end; i++) max = Math.Max(max, Math.Abs(values[i]));
            absmax[b] = max;
            float inv = max == 0 ? 0 : 1f / max;
            for (int i = start; i < end; i++) codes[i] = Nearest(Math.Clamp(values[i] * inv, -1f, 1f));
        }
        return (codes, absmax);
    }

    /// <summary>values[i] = Code[codes[i]]·absmax[i / 256].</summary>
    public static float[] Dequantize(ReadOnlySpan<byte> codes, ReadOnlySpan<float> absmax)
    {
        var v = new float[codes.Length];
        for (int i = 0; i < v.Length; i++) v[i] = Code[codes[i]] * absmax[i / BlockSize];
        return v;
    }
}

/// <summary>NF4 block statistics after QLoRA's double quantization: the per-64 absmax values minus their mean,
/// quantized by <see cref="Blockwise8"/> (<c>quant_state.absmax</c>, <c>state2.absmax</c> and <c>offset</c> in
/// bitsandbytes).</summary>
/// <param name="Codes">One 8-bit code per NF4 block.</param>
/// <param name="NestedAbsmax">One float per 256 NF4 blocks.</param>
/// <param name="Offset">The mean absmax, added back on dequantization.</param>
public sealed record DoubleQuantizedAbsmax(byte[] Codes, float[] NestedAbsmax, float Offset)
{
    /// <summary>Quantizes NF4's absmax values as bitsandbytes' <c>compress_statistics=True</c> does.</summary>
    public static DoubleQuantizedAbsmax From(ReadOnlySpan<float> absmax)
    {
        double sum = 0;
        foreach (var a in absmax) sum += a;
        float offset = absmax.Length == 0 ? 0 : (float)(sum / absmax.Length);
        var centred = new float[absmax.Length];
        for (int i = 0; i < centred.Length; i++) centred[i] = absmax[i] - offset;
        var (codes, nested) = Blockwise8.Quantize(centred);
        return new DoubleQuantizedAbsmax(codes, nested, offset);
    }

    /// <summary>The absmax values NF4 dequantization uses: Code[c]·nested + offset.</summary>
    public float[] Dequantize()
    {
        var a = Blockwise8.Dequantize(Codes, NestedAbsmax);
        for (int i = 0; i < a.Length; i++) a[i] += Offset;
        return a;
    }
}
