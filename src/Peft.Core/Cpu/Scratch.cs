using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;

namespace Peft.Core.Cpu;

/// <summary>Row-sized temporary buffers for kernels that need one (rows can be a 50k-wide vocabulary: too big for the stack).</summary>
internal static class Scratch<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Σ exp(x − shift), vectorised through a pooled buffer.</summary>
    public static T SumExpShifted(ReadOnlySpan<T> x, T shift)
    {
        var buffer = ArrayPool<T>.Shared.Rent(x.Length);
        try
        {
            var tmp = buffer.AsSpan(0, x.Length);
            TensorPrimitives.Subtract(x, shift, tmp);
            TensorPrimitives.Exp(tmp, tmp);
            return TensorPrimitives.Sum<T>(tmp);
        }
        finally { ArrayPool<T>.Shared.Return(buffer); }
    }
}
