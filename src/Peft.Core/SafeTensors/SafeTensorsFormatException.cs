namespace Peft.Core.SafeTensors;

/// <summary>A safetensors file or index that does not follow the format; names the file and the problem.</summary>
public sealed class SafeTensorsFormatException : IOException
{
    /// <summary>Creates the exception for <paramref name="path"/>.</summary>
    public SafeTensorsFormatException(string path, string problem, Exception? inner = null)
        : base($"{path}: {problem}", inner)
    {
        FilePath = path;
        Problem = problem;
    }

    /// <summary>The file at fault.</summary>
    public string FilePath { get; }

    /// <summary>What is wrong with it.</summary>
    public string Problem { get; }
}

/// <summary>One tensor's entry in a safetensors header.</summary>
/// <param name="Name">Tensor name (the state-dict key).</param>
/// <param name="DTypeName">dtype as written in the header ("F32", "BF16", "F8_E4M3", ...).</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Begin">Start of the data, relative to the end of the header.</param>
/// <param name="End">End (exclusive) of the data.</param>
public sealed record SafeTensorInfo(string Name, string DTypeName, int[] Shape, long Begin, long End)
{
    /// <summary>The dtype when this library can hold it, else null (the tensor can be listed but not loaded).</summary>
    public DType? DType => DTypeInfo.TryParseSafeTensorsName(DTypeName, out var d) ? d : null;

    /// <summary>Bytes of data.</summary>
    public long ByteLength => End - Begin;

    /// <summary>Element count.</summary>
    public long NumEl => Shapes.NumEl(Shape);
}
