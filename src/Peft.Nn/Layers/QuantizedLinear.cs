using Peft.Core;
using Peft.Core.Quantization;

namespace Peft.Nn;

/// <summary>A linear layer whose frozen weight is stored quantized and dequantized for each forward pass.
/// Subclasses register their quantized buffers and say how to dequantize them; shape, bias and forward live here.</summary>
public abstract class QuantizedLinear : Module, IUnaryModule
{
    /// <summary>Takes the shape of <paramref name="source"/>; the subclass registers its buffers, then calls
    /// <see cref="RegisterFrozenBias"/> (so the state dict keeps the order weight, quantization state, bias).</summary>
    protected QuantizedLinear(Linear source)
    {
        InFeatures = source.InFeatures;
        OutFeatures = source.OutFeatures;
    }

    /// <summary>Input features.</summary>
    public int InFeatures { get; }

    /// <summary>Output features.</summary>
    public int OutFeatures { get; }

    /// <summary>The bias, if any (a float parameter, frozen like the weight).</summary>
    public Tensor? Bias => HasParameter("bias") ? Parameter("bias") : null;

    /// <summary>The weight as F32 [out, in] (a new tensor the caller disposes).</summary>
    public abstract Tensor DequantizedWeight();

    /// <summary>Stores <paramref name="weight"/> (F32 [out, in]) quantized in place of the current weight — how merging an
    /// adapter into a quantized base ends (dequantize → add ΔW → requantize, with the rounding that implies).</summary>
    public abstract void Requantize(Tensor weight);

    /// <summary>Checks a replacement weight's shape.</summary>
    protected float[] CheckedValues(Tensor weight)
    {
        if (!weight.Shape.AsSpan().SequenceEqual([OutFeatures, InFeatures]))
            throw new ArgumentException($"a {OutFeatures}×{InFeatures} quantized linear cannot take a weight of shape {Shapes.Format(weight.Shape)}");
        return weight.ToFloatArray();
    }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input)
    {
        using var w = DequantizedWeight();
        return input.Linear(w, Bias);
    }

    /// <summary>Copies <paramref name="source"/>'s bias, if any, as a frozen parameter.</summary>
    protected void RegisterFrozenBias(Linear source)
    {
        if (source.Bias is { } b) using (Autograd.NoGrad()) RegisterParameter("bias", b.Clone(), requiresGrad: false);
    }
}

/// <summary>
/// LLM.int8-style weights: int8 <c>weight</c> [out, in] and float <c>SCB</c> [out] buffers (row-wise absmax); W = q·SCB/127.
/// The weight is frozen; a bias stays a float parameter. Memory per weight: 1 byte + 4/in bytes.
/// </summary>
public sealed class Int8Linear : QuantizedLinear
{
    /// <summary>Quantizes <paramref name="source"/> (its weight must be F32).</summary>
    public Int8Linear(Linear source) : base(source)
    {
        var (q, scb) = Int8RowWise.Quantize(source.Weight.ToFloatArray(), OutFeatures, InFeatures);
        RegisterBuffer("weight", Tensor.FromArray(q, [OutFeatures, InFeatures]));
        RegisterBuffer("SCB", Tensor.FromArray(scb));
        RegisterFrozenBias(source);
    }

    /// <inheritdoc/>
    public override void Requantize(Tensor weight)
    {
        var (q, scb) = Int8RowWise.Quantize(CheckedValues(weight), OutFeatures, InFeatures);
        using (var qt = Tensor.FromArray(q, [OutFeatures, InFeatures])) Buffer("weight").CopyFrom(qt);
        using (var st = Tensor.FromArray(scb)) Buffer("SCB").CopyFrom(st);
    }

    /// <inheritdoc/>
    public override Tensor DequantizedWeight() =>
        Tensor.FromArray(Int8RowWise.Dequantize(Buffer("weight").ToArray<sbyte>(), Buffer("SCB").ToArray<float>(), OutFeatures, InFeatures), [OutFeatures, InFeatures]);
}

/// <summary>
/// QLoRA's NF4 weights: packed 4-bit codes (<c>weight</c>, U8, two per byte) and float <c>absmax</c> per 64 values.
/// The weight is frozen; a bias stays a float parameter. Memory per weight: 0.5 byte + 4/64 bytes.
/// </summary>
public sealed class Nf4Linear : QuantizedLinear
{
    /// <summary>Quantizes <paramref name="source"/> (its weight must be F32).</summary>
    public Nf4Linear(Linear source) : base(source)
    {
        var (packed, absmax) = Nf4.Quantize(source.Weight.ToFloatArray());
        RegisterBuffer("weight", Tensor.FromArray(packed));
        RegisterBuffer("absmax", Tensor.FromArray(absmax));
        RegisterFrozenBias(source);
    }

    /// <inheritdoc/>
    public override void Requantize(Tensor weight)
    {
        var (packed, absmax) = Nf4.Quantize(CheckedValues(weight));
        using (var pt = Tensor.FromArray(packed)) Buffer("weight").CopyFrom(pt);
        using (var at = Tensor.FromArray(absmax)) Buffer("absmax").CopyFrom(at);
    }

    /// <inheritdoc/>
    public override Tensor DequantizedWeight() =>
        Tensor.FromArray(Nf4.Dequantize(Buffer("weight").ToArray<byte>(), Buffer("absmax").ToArray<float>(), OutFeatures * InFeatures), [OutFeatures, InFeatures]);
}

/// <summary>Replaces Linear layers of a model by quantized ones (the frozen base of QLoRA-style training).</summary>
public static class Quantize
{
    /// <summary>Quantizes every Linear whose dotted path satisfies <paramref name="include"/> (default: all but heads
    /// named lm_head/score/classifier) to int8 or NF4; returns the paths replaced.</summary>
    public static List<string> Linears(Module model, string method, Func<string, bool>? include = null)
    {
        include ??= path => !(path.EndsWith("lm_head", StringComparison.Ordinal) || path.EndsWith("score", StringComparison.Ordinal) || path.EndsWith("classifier", StringComparison.Ordinal));
        var targets = model.NamedModules().Where(m => m.Module is Linear && m.Name.Length > 0 && include(m.Name)).Select(m => m.Name).ToList();
        foreach (var path in targets)
        {
            var linear = (Linear)model.GetSubmodule(path);
            Module q = method switch
            {
                "int8" => new Int8Linear(linear),
                "nf4" => new Nf4Linear(linear),
                _ => throw new ArgumentException($"quantization method must be 'int8' or 'nf4', got '{method}'"),
            };
            model.SetSubmodule(path, q);
            linear.Dispose();
        }
        return targets;
    }
}
