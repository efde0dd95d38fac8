using Peft.Core;

namespace Peft.Cuda;

/// <summary>
/// Typed launchers of the hand-written kernels (kernels/*.cu; declared in native/include/peft_kernels.h). Each checks
/// shapes and dtypes, then queues the kernel on the device's stream. CPU references: Peft.Core's Cast and Quantization.
/// </summary>
public static class CudaKernels
{
    private const uint Block = 256;

    /// <summary>A contiguous copy of <paramref name="x"/> in <paramref name="dtype"/> (f32 ↔ bf16, f32 ↔ f16, round to nearest even; i8/u8 → f32, exact; f32 → u8 as .NET's conversion).</summary>
    public static Tensor Cast(Tensor x, DType dtype)
    {
        CudaTensors.RequireContiguous(x, "Cast");
        var device = CudaTensors.DeviceOf(x);
        // The bf16 pair converts four values per thread-step; the f16 pair one.
        (string name, long perThread) = (x.DType, dtype) switch
        {
            (DType.F32, DType.BF16) => ("cast_f32_to_bf16", 4),
            (DType.BF16, DType.F32) => ("cast_bf16_to_f32", 4),
            (DType.F32, DType.F16) => ("cast_f32_to_f16", 1),
            (DType.F16, DType.F32) => ("cast_f16_to_f32", 1),
            (DType.I8, DType.F32) => ("cast_i8_to_f32", 1),
            (DType.U8, DType.F32) => ("cast_u8_to_f32", 1),
            (DType.F32, DType.U8) => ("cast_f32_to_u8", 1),
            _ => throw new NotSupportedException($"no CUDA cast kernel from {x.DType} to {dtype} (f32 ↔ bf16, f32 ↔ f16, f32 ↔ u8 and i8 → f32 exist)"),
        };
        var y = CudaTensors.Empty(x.Shape, dtype, device);
        long n = x.NumEl;
        if (n > 0) device.Kernels.Launch(name, device.Kernels.GridFor((n + perThread - 1) / perThread, Block), Block, CudaTensors.Address(x), CudaTensors.Address(y), n);
        return y;
    }

    /// <summary>NF4 codes (two per byte, first in the high nibble) × per-64-block absmax → a [<paramref name="shape"/>] tensor in <paramref name="dtype"/> (f32 or bf16).</summary>
    public static Tensor DequantizeNf4(Tensor packed, Tensor absmax, int[] shape, DType dtype)
    {
        CudaTensors.RequireSameDevice("DequantizeNf4", packed, absmax);
        long n = Shapes.NumEl(shape);
        if (packed.DType != DType.U8 || packed.NumEl != (n + 1) / 2)
            throw new ArgumentException($"DequantizeNf4: packed must be U8 with {(n + 1) / 2} bytes for {n} values (got {packed.DType}, {packed.NumEl})");
        if (absmax.DType != DType.F32 || absmax.NumEl != (n + 63) / 64)
            throw new ArgumentException($"DequantizeNf4: absmax must be F32 with {(n + 63) / 64} blocks (got {absmax.DType}, {absmax.NumEl})");
        var device = CudaTensors.DeviceOf(packed);
        var y = CudaTensors.Empty(shape, dtype, device);
        string name = dtype switch { DType.F32 => "dequant_nf4_f32", DType.BF16 => "dequant_nf4_bf16", _ => throw new NotSupportedException($"NF4 dequant to {dtype}") };
        if (n > 0) device.Kernels.Launch(name, device.Kernels.GridFor((n + 1) / 2, Block), Block, CudaTensors.Address(packed), CudaTensors.Address(absmax), CudaTensors.Address(y), n);
        return y;
    }

    /// <summary>
    /// QLoRA's doubly quantized NF4 block statistics decoded on the device: absmax[b] = code[codes[b]]·nested[b / 256] +
    /// offset, as F32 (the CPU reference is <see cref="Peft.Core.Quantization.DoubleQuantizedAbsmax.Dequantize"/>);
    /// <paramref name="codeTable"/> is <see cref="Peft.Core.Quantization.Blockwise8.Code"/> on the device.
    /// </summary>
    public static Tensor DequantizeBlockwise8(Tensor codes, Tensor codeTable, Tensor nestedAbsmax, float offset)
    {
        CudaTensors.RequireSameDevice("DequantizeBlockwise8", codes, codeTable, nestedAbsmax);
        long n = codes.NumEl;
        if (codes.DType != DType.U8) throw new ArgumentException($"DequantizeBlockwise8: codes must be U8 (got {codes.DType})");
        if (codeTable.DType != DType.F32 || codeTable.NumEl != 256) throw new ArgumentException($"DequantizeBlockwise8: the code table must be 256 F32 levels (got {codeTable.DType}, {codeTable.NumEl})");
        if (nestedAbsmax.DType != DType.F32 || nestedAbsmax.NumEl != (n + 255) / 256)
            throw new ArgumentException($"DequantizeBlockwise8: nested absmax must be F32 with {(n + 255) / 256} blocks for {n} codes (got {nestedAbsmax.DType}, {nestedAbsmax.NumEl})");
        var device = CudaTensors.DeviceOf(codes);
        var y = CudaTensors.Empty(codes.Shape, DType.F32, device);
        if (n > 0) device.Kernels.Launch("dequant_blockwise8_f32", device.Kernels.GridFor(n, Block), Block,
            CudaTensors.Address(codes), CudaTensors.Address(codeTable), CudaTensors.Address(nestedAbsmax), offset, CudaTensors.Address(y), n);
        return y;
    }

    /// <summary>Doubly quantized NF4 (codes, 8-bit absmax codes, nested absmax, offset) → a [<paramref name="shape"/>]
    /// tensor in <paramref name="dtype"/>: the statistics decoded by <see cref="DequantizeBlockwise8"/>, then
    /// <see cref="DequantizeNf4(Tensor, Tensor, int[], DType)"/>.</summary>
    public static Tensor DequantizeNf4(Tensor packed, Tensor absmaxCodes, Tensor codeTable, Tensor nestedAbsmax, float offset, int[] shape, DType dtype)
    {
        using var absmax = DequantizeBlockwise8(absmaxCodes, codeTable, nestedAbsmax, offset);
        return DequantizeNf4(packed, absmax, shape, dtype);
    }

    /// <summary>Row-wise absmax int8 (LLM.int8 layout: q [rows, cols] I8, scb [rows] F32) → q·scb/127 in <paramref name="dtype"/> (f32 or bf16).</summary>
    public static Tensor DequantizeInt8(Tensor q, Tensor scb, DType dtype)
    {
        CudaTensors.RequireSameDevice("DequantizeInt8", q, scb);
        if (q.DType != DType.I8 || q.Rank != 2) throw new ArgumentException($"DequantizeInt8: q must be a 2-D I8 tensor (got {q.DType} {Shapes.Format(q.Shape)})");
        if (scb.DType != DType.F32 || scb.NumEl != q.Size(0)) throw new ArgumentException($"DequantizeInt8: scb must be F32 with one scale per row ({q.Size(0)})");
        var device = CudaTensors.DeviceOf(q);
        var y = CudaTensors.Empty(q.Shape, dtype, device);
        string name = dtype switch { DType.F32 => "dequant_int8_rowwise_f32", DType.BF16 => "dequant_int8_rowwise_bf16", _ => throw new NotSupportedException($"int8 dequant to {dtype}") };
        long rows = q.Size(0), cols = q.Size(1);
        if (rows * cols > 0) device.Kernels.Launch(name, device.Kernels.GridFor(rows * cols, Block), Block, CudaTensors.Address(q), CudaTensors.Address(scb), CudaTensors.Address(y), rows, cols);
        return y;
    }
}
