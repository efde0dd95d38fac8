using Peft.Core;
using Peft.Core.Quantization;

namespace Peft.Nn;

/// <summary>A linear layer whose frozen weight is stored quantized and dequantized for each forward pass.
/// Subclasses register their quantized buffers and say how to dequantize them; shape, bias and forward live here.</summary>
public abstract class QuantizedLinear : Module, IUnaryModule
{
    /// <summary>Takes the shape of <paramref name="source"/>; the subclass registers its buffers, then calls
    /// <see cref="RegisterFrozenBias"/> (so the state dict keeps the order weight, quantization state, bias).</summary>
    protected QuantizedLinear(FloatLinear source)
    {
        InFeatures = source.InFeatures;
        OutFeatures = source.OutFeatures;
    }

    /// <summary>The float layer being quantized, in Linear's terms: a Linear, or a GPT-2 Conv1D whose [in, out] weight
    /// is read transposed (as transformers' bitsandbytes integration quantizes Conv1D layers).</summary>
    public readonly struct FloatLinear
    {
        private FloatLinear(int inFeatures, int outFeatures, Func<float[]> weight, Tensor? bias) =>
            (InFeatures, OutFeatures, _weight, Bias) = (inFeatures, outFeatures, weight, bias);

        private readonly Func<float[]> _weight;

        /// <summary>Input features.</summary>
        public int InFeatures { get; }

        /// <summary>Output features.</summary>
        public int OutFeatures { get; }

        /// <summary>The bias, if any.</summary>
        public Tensor? Bias { get; }

        /// <summary>The weight as row-major [out, in] floats.</summary>
        public float[] WeightOutIn() => _weight();

        /// <summary>A Linear layer.</summary>
        public static implicit operator FloatLinear(Linear l) => new(l.InFeatures, l.OutFeatures, () => l.Weight.ToFloatArray(), l.Bias);

        /// <summary>A GPT-2 Conv1D layer.</summary>
        public static implicit operator FloatLinear(Conv1D c) => new(c.InFeatures, c.OutFeatures, () =>
        {
            using var t = c.Weight.Transpose(0, 1);
            return t.ToFloatArray();
        }, c.Bias);
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

    /// <summary>x·Wᵀ + b with the weight dequantized for this call.</summary>
    public virtual Tensor Forward(Tensor input)
    {
        using var w = DequantizedWeight();
        return input.Linear(w, Bias);
    }

    /// <summary>Copies <paramref name="source"/>'s bias, if any, as a frozen F32 parameter.</summary>
    protected void RegisterFrozenBias(FloatLinear source)
    {
        if (source.Bias is { } b) using (Autograd.NoGrad()) RegisterParameter("bias", b.To(DType.F32), requiresGrad: false);
    }
}

/// <summary>
/// LLM.int8 weights: int8 <c>weight</c> [out, in] and float <c>SCB</c> [out] buffers (row-wise absmax); W = q·SCB/127.
/// With a <see cref="Threshold"/> the forward is bitsandbytes' <c>Linear8bitLt</c>: activations are quantized row-wise
/// to int8 too, except the feature columns holding an |x| ≥ threshold, which go through a float matmul with the
/// dequantized weight columns (the mixed-precision decomposition); without one (null) the weight is dequantized and
/// the matmul runs in float. The backward is dY·W (dequantized) either way, as bitsandbytes'; the weight is frozen and a
/// bias stays a float parameter. Memory per weight: 1 byte + 4/in bytes.
/// </summary>
public sealed class Int8Linear : QuantizedLinear
{
    /// <summary>Quantizes <paramref name="source"/> (a Linear or a Conv1D); <paramref name="threshold"/> is
    /// <c>llm_int8_threshold</c> (transformers' default 6.0; 0: every activation column in int8; null: weight-only).</summary>
    public Int8Linear(FloatLinear source, double? threshold = 6.0) : base(source)
    {
        if (threshold is < 0 or double.NaN) throw new ArgumentOutOfRangeException(nameof(threshold), threshold, "llm_int8_threshold must be ≥ 0 (or null for weight-only int8)");
        Threshold = threshold;
        var (q, scb) = Int8RowWise.Quantize(source.WeightOutIn(), OutFeatures, InFeatures);
        RegisterBuffer("weight", Tensor.FromArray(q, [OutFeatures, InFeatures]));
        RegisterBuffer("SCB", Tensor.FromArray(scb));
        RegisterFrozenBias(source);
    }

    /// <summary>The outlier threshold of the int8 activation path, or null for weight-only int8.</summary>
    public double? Threshold { get; }

    /// <inheritdoc/>
    public override void Requantize(Tensor weight)
    {
        var (q, scb) = Int8RowWise.Quantize(CheckedValues(weight), OutFeatures, InFeatures);
        using (var qt = Tensor.FromArray(q, [OutFeatures, InFeatures])) Buffer("weight").CopyFrom(qt);
        using (var st = Tensor.FromArray(scb)) Buffer("SCB").CopyFrom(st);
    }

    /// <inheritdoc/>
    public override Tensor DequantizedWeight() => Dequant.Int8(Buffer("weight"), Buffer("SCB"));

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input)
    {
        if (Threshold is not { } threshold) return base.Forward(input);
        if (input.Size(-1) != InFeatures)
            throw new ShapeMismatchException($"Int8Linear: input features {input.Size(-1)} do not match the layer's {InFeatures}");
        int k = InFeatures;
        var outShape = input.Shape.ToArray();
        outShape[^1] = OutFeatures;
        Tensor output;
        // Tensor ops throughout, so the layer runs where its buffers are (CPU or a device) with the same numbers.
        using (Autograd.NoGrad())
        using (var scope = Tensor.NewScope())
        {
            var rows = input.Reshape(-1, k);
            var x = rows.DType == DType.F32 ? rows : rows.To(DType.F32);
            var (codes, rowStats, outliers) = LlmInt8.QuantizeActivations(x, threshold);
            var qw = Buffer("weight").To(DType.F32);
            // The int8 product: every term is an exact integer; bitsandbytes' reference backend also sums in f32. Kept
            // out of autocast: bitsandbytes accumulates in int32, a bf16-rounded sum would not be its result.
            Tensor acc;
            using (Autocast.Disable()) acc = codes.MatMul(qw.Transpose(0, 1));
            // acc · (rowStat · SCB · 1/127²), the rescale of bitsandbytes' int8_mm_dequant.
            var scale = rowStats.Unsqueeze(1).Mul(Buffer("SCB")).Mul(LlmInt8.ProductScale);
            var y = acc.Mul(scale);
            if (outliers.Length > 0)
            {
                var cols = Tensor.FromArray(outliers.Select(c => (long)c).ToArray());
                var xo = x.IndexSelect(1, cols);
                var wo = DequantizedWeight().IndexSelect(1, cols);
                y = y.Add(xo.MatMul(wo.Transpose(0, 1)));
            }
            if (Bias is { } b) y = y.Add(b);
            output = y.Reshape(outShape).Contiguous().MoveToOuterScope();
        }
        return Autograd.Record(output, "llm_int8_linear", [input], (g, needs) =>
        {
            using var w = DequantizedWeight();
            return [needs[0] ? g.MatMul(w) : null];
        });
    }
}

/// <summary>
/// QLoRA's NF4 weights: packed 4-bit codes (<c>weight</c>, U8, two per byte) and one absmax per 64 values — float
/// (<c>absmax</c>), or with double quantization (bitsandbytes' <c>compress_statistics</c>, transformers'
/// <c>bnb_4bit_use_double_quant</c>) 8-bit codes (<c>absmax</c>, U8) over blocks of 256 with a float
/// <c>nested_absmax</c> per block and their mean in <c>nested_offset</c>. The weight is frozen; a bias stays a float
/// parameter. Memory per weight: 0.5 + 4/64 bytes (4.5 bits), or 0.5 + 1/64 + 4/(64·256) bytes (≈ 4.13 bits) doubly
/// quantized.
/// </summary>
public sealed class Nf4Linear : QuantizedLinear
{
    /// <summary>Quantizes <paramref name="source"/> (a Linear or a Conv1D).</summary>
    public Nf4Linear(FloatLinear source, bool doubleQuant = false) : base(source)
    {
        DoubleQuant = doubleQuant;
        var (packed, absmax) = Nf4.Quantize(source.WeightOutIn());
        RegisterBuffer("weight", Tensor.FromArray(packed));
        if (!doubleQuant) RegisterBuffer("absmax", Tensor.FromArray(absmax));
        else
        {
            var dq = DoubleQuantizedAbsmax.From(absmax);
            RegisterBuffer("absmax", Tensor.FromArray(dq.Codes));
            RegisterBuffer("nested_absmax", Tensor.FromArray(dq.NestedAbsmax));
            RegisterBuffer("nested_offset", Tensor.FromArray(new[] { dq.Offset }));
        }
        RegisterFrozenBias(source);
    }

    /// <summary>Whether the block absmax values are themselves 8-bit quantized.</summary>
    public bool DoubleQuant { get; }

    /// <inheritdoc/>
    public override void Requantize(Tensor weight)
    {
        var (packed, absmax) = Nf4.Quantize(CheckedValues(weight));
        using (var pt = Tensor.FromArray(packed)) Buffer("weight").CopyFrom(pt);
        if (!DoubleQuant)
        {
            using var at = Tensor.FromArray(absmax);
            Buffer("absmax").CopyFrom(at);
            return;
        }
        var dq = DoubleQuantizedAbsmax.From(absmax);
        using (var ct = Tensor.FromArray(dq.Codes)) Buffer("absmax").CopyFrom(ct);
        using (var nt = Tensor.FromArray(dq.NestedAbsmax)) Buffer("nested_absmax").CopyFrom(nt);
        using (var ot = Tensor.FromArray(new[] { dq.Offset })) Buffer("nested_offset").CopyFrom(ot);
    }

    /// <summary>The per-64 absmax values the dequantization uses (decoded from their 8-bit codes when doubly quantized).</summary>
    public float[] BlockAbsmax() => !DoubleQuant ? Buffer("absmax").ToArray<float>()
        : new DoubleQuantizedAbsmax(Buffer("absmax").ToArray<byte>(), Buffer("nested_absmax").ToArray<float>(), Buffer("nested_offset").ToArray<float>()[0]).Dequantize();

    /// <inheritdoc/>
    public override Tensor DequantizedWeight()
    {
        if (!DoubleQuant) return Dequant.Nf4(Buffer("weight"), Buffer("absmax"), [OutFeatures, InFeatures]);
        // The offset is added as a tensor (its one-element buffer stays where it is: no host read per forward);
        // code·nested + 0 + offset rounds as code·nested + offset.
        using var centred = Dequant.Nf4Absmax(Buffer("absmax"), Buffer("nested_absmax"), 0f);
        using var absmax = centred.Add(Buffer("nested_offset"));
        return Dequant.Nf4(Buffer("weight"), absmax, [OutFeatures, InFeatures]);
    }
}

/// <summary>How <see cref="Quantize.Linears(Module, QuantizationConfig, Func{string, bool}?)"/> stores frozen
/// weights (the part of transformers' BitsAndBytesConfig that applies here).</summary>
public sealed record QuantizationConfig
{
    /// <summary>"int8" (LLM.int8, <c>load_in_8bit</c>) or "nf4" (QLoRA, <c>load_in_4bit</c> with nf4).</summary>
    public string Method { get; init; } = "nf4";

    /// <summary><c>llm_int8_threshold</c>: activation columns holding an |x| at or above it stay in float (6.0 as
    /// transformers); 0 sends every column through int8; null dequantizes the weight instead (weight-only int8).</summary>
    public double? Int8Threshold { get; init; } = 6.0;

    /// <summary><c>bnb_4bit_use_double_quant</c>: quantize NF4's block absmax values too (off, as transformers).</summary>
    public bool DoubleQuant { get; init; }
}

/// <summary>Replaces Linear layers of a model by quantized ones (the frozen base of QLoRA-style training).</summary>
public static class Quantize
{
    /// <summary>Quantizes with transformers' defaults for <paramref name="method"/> ("int8": threshold 6.0; "nf4": no
    /// double quantization); see <see cref="Linears(Module, QuantizationConfig, Func{string, bool}?)"/>.</summary>
    public static List<string> Linears(Module model, string method, Func<string, bool>? include = null) =>
        Linears(model, new QuantizationConfig { Method = method }, include);

    /// <summary>Quantizes every Linear and GPT-2 Conv1D whose dotted path satisfies <paramref name="include"/> (default:
    /// all but heads named lm_head/score/classifier) as <paramref name="config"/> says; returns the paths replaced.</summary>
    public static List<string> Linears(Module model, QuantizationConfig config, Func<string, bool>? include = null)
    {
        if (config.Method is not ("int8" or "nf4")) throw new ArgumentException($"quantization method must be 'int8' or 'nf4', got '{config.Method}'");
        include ??= path => !(path.EndsWith("lm_head", StringComparison.Ordinal) || path.EndsWith("score", StringComparison.Ordinal) || path.EndsWith("classifier", StringComparison.Ordinal));
        var targets = model.NamedModules().Where(m => m.Module is Linear or Conv1D && m.Name.Length > 0 && include(m.Name)).Select(m => m.Name).ToList();
        foreach (var path in targets)
        {
            var layer = model.GetSubmodule(path);
            QuantizedLinear.FloatLinear source = layer is Linear l ? l : (Conv1D)layer;
            Module q = config.Method == "int8" ? new Int8Linear(source, config.Int8Threshold) : new Nf4Linear(source, config.DoubleQuant);
            model.SetSubmodule(path, q);
            layer.Dispose();
        }
        return targets;
    }
}
