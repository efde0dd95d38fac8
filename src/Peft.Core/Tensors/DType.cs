namespace Peft.Core;

/// <summary>Element type of a <see cref="Tensor"/>. Names follow the safetensors spelling where one exists.</summary>
public enum DType
{
    /// <summary>64-bit IEEE float; used on CPU for gradient checks.</summary>
    F64,
    /// <summary>32-bit IEEE float; the default compute type.</summary>
    F32,
    /// <summary>bfloat16 (8-bit exponent, 7-bit mantissa); a storage and GPU compute type.</summary>
    BF16,
    /// <summary>IEEE half precision.</summary>
    F16,
    /// <summary>64-bit signed integer (token ids, indices).</summary>
    I64,
    /// <summary>32-bit signed integer.</summary>
    I32,
    /// <summary>8-bit signed integer (int8 quantised weights).</summary>
    I8,
    /// <summary>8-bit unsigned integer (booleans/masks; NF4 packs two 4-bit codes per byte).</summary>
    U8,
}

/// <summary>Facts about each <see cref="DType"/>.</summary>
public static class DTypeInfo
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(this DType dtype) => dtype switch
    {
        DType.F64 or DType.I64 => 8,
        DType.F32 or DType.I32 => 4,
        DType.BF16 or DType.F16 => 2,
        DType.I8 or DType.U8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>True for F64, F32, BF16 and F16.</summary>
    public static bool IsFloatingPoint(this DType dtype) =>
        dtype is DType.F64 or DType.F32 or DType.BF16 or DType.F16;

    /// <summary>The name safetensors headers use ("F32", "BF16", "I64", ...).</summary>
    public static string SafeTensorsName(this DType dtype) => dtype switch
    {
        DType.F64 => "F64", DType.F32 => "F32", DType.BF16 => "BF16", DType.F16 => "F16",
        DType.I64 => "I64", DType.I32 => "I32", DType.I8 => "I8", DType.U8 => "U8",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>Parses a safetensors dtype name; returns false for names this library cannot hold (e.g. "F8_E4M3").</summary>
    public static bool TryParseSafeTensorsName(string name, out DType dtype)
    {
        switch (name)
        {
            case "F64": dtype = DType.F64; return true;
            case "F32": dtype = DType.F32; return true;
            case "BF16": dtype = DType.BF16; return true;
            case "F16": dtype = DType.F16; return true;
            case "I64": dtype = DType.I64; return true;
            case "I32": dtype = DType.I32; return true;
            case "I8": dtype = DType.I8; return true;
            case "U8": case "BOOL": dtype = DType.U8; return true;
            default: dtype = default; return false;
        }
    }
}
