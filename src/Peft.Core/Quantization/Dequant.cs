namespace Peft.Core.Quantization;

/// <summary>
/// Dequantization of quantized tensors where they live: CPU tensors through the array references
/// (<see cref="Int8RowWise"/>, <see cref="Nf4"/>, <see cref="DoubleQuantizedAbsmax"/>), device tensors through their
/// device's kernels (kernels/dequant.cu on CUDA), so a quantized layer's F32 scratch weight is made on the device that
/// holds its codes and never crosses the bus. Results are new F32 tensors the caller disposes.
/// </summary>
public static class Dequant
{
    /// <summary>LLM.int8: q [rows, cols] I8 and SCB [rows] F32 → q·(SCB/127), F32 [rows, cols].</summary>
    public static Tensor Int8(Tensor q, Tensor scb)
    {
        if (q.DType != DType.I8 || q.Rank != 2) throw new ArgumentException($"Dequant.Int8: the weight codes must be a 2-D I8 tensor, got {q.DType} {Shapes.Format(q.Shape)}");
        if (scb.DType != DType.F32 || scb.NumEl != q.Size(0)) throw new ArgumentException($"Dequant.Int8: SCB must be F32 with one scale per row ({q.Size(0)}), got {scb.DType} {Shapes.Format(scb.Shape)}");
        int rows = q.Size(0), cols = q.Size(1);
        if (Tensor.DeviceKernels("Dequant.Int8", q, scb) is { } k)
        {
            using var dq = q.IsContiguous ? null : q.Contiguous();
            using var ds = scb.IsContiguous ? null : scb.Contiguous();
            return k.DequantizeInt8(dq ?? q, ds ?? scb);
        }
        return Tensor.FromArray(Int8RowWise.Dequantize(q.ToArray<sbyte>(), scb.ToArray<float>(), rows, cols), [rows, cols]);
    }

    /// <summary>NF4: packed U8 codes ((n + 1) / 2 bytes) and F32 absmax per 64 values → F32 [<paramref name="shape"/>].</summary>
    public static Tensor Nf4(Tensor packed, Tensor absmax, int[] shape)
    {
        long n = Shapes.NumEl(shape);
        if (packed.DType != DType.U8 || packed.NumEl != (n + 1) / 2)
            throw new ArgumentException($"Dequant.Nf4: the packed codes must be U8 with {(n + 1) / 2} bytes for {Shapes.Format(shape)}, got {packed.DType} with {packed.NumEl}");
        if (absmax.DType != DType.F32 || absmax.NumEl != (n + Quantization.Nf4.BlockSize - 1) / Quantization.Nf4.BlockSize)
            throw new ArgumentException($"Dequant.Nf4: absmax must be F32 with one value per {Quantization.Nf4.BlockSize} ({(n + 63) / 64} for {Shapes.Format(shape)}), got {absmax.DType} with {absmax.NumEl}");
        if (Tensor.DeviceKernels("Dequant.Nf4", packed, absmax) is { } k)
        {
            using var dp = packed.IsContiguous ? null : packed.Contiguous();
            using var da = absmax.IsContiguous ? null : absmax.Contiguous();
            return k.DequantizeNf4(dp ?? packed, da ?? absmax, shape);
        }
        return Tensor.FromArray(Quantization.Nf4.Dequantize(packed.ToArray<byte>(), absmax.ToArray<float>(), (int)n), shape);
    }

    /// <summary>QLoRA's doubly quantized NF4 statistics: U8 codes (one per NF4 block), F32 nested absmax per 256 of
    /// them and their mean <paramref name="offset"/> → the F32 absmax values.</summary>
    public static Tensor Nf4Absmax(Tensor codes, Tensor nestedAbsmax, float offset)
    {
        long n = codes.NumEl;
        if (codes.DType != DType.U8) throw new ArgumentException($"Dequant.Nf4Absmax: the absmax codes must be U8, got {codes.DType}");
        if (nestedAbsmax.DType != DType.F32 || nestedAbsmax.NumEl != (n + Blockwise8.BlockSize - 1) / Blockwise8.BlockSize)
            throw new ArgumentException($"Dequant.Nf4Absmax: nested absmax must be F32 with one value per {Blockwise8.BlockSize} codes ({(n + 255) / 256} for {n}), got {nestedAbsmax.DType} with {nestedAbsmax.NumEl}");
        if (Tensor.DeviceKernels("Dequant.Nf4Absmax", codes, nestedAbsmax) is { } k)
        {
            using var dc = codes.IsContiguous ? null : codes.Contiguous();
            using var dn = nestedAbsmax.IsContiguous ? null : nestedAbsmax.Contiguous();
            return k.DequantizeBlockwise8(dc ?? codes, dn ?? nestedAbsmax, offset);
        }
        return Tensor.FromArray(new DoubleQuantizedAbsmax(codes.ToArray<byte>(), nestedAbsmax.ToArray<float>(), offset).Dequantize(), codes.Shape);
    }
}
