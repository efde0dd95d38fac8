namespace Peft.Core;

/// <summary>
/// Mixed-precision compute (torch.autocast's matmul rule): inside <see cref="Enable"/>, every matrix product rounds its
/// operands to BF16 or F16, accumulates in F32 and rounds its result to the same low precision — in the forward pass and
/// in the gradient products of its backward (which remember the dtype they were recorded with). Everything else
/// (norms, softmax, losses, element-wise ops, the optimizer) stays in F32, and trainable parameters stay F32 master
/// weights: the rounding is a differentiable cast, so their gradients arrive in F32. F16's narrow range is what
/// <c>GradScaler</c> (Peft.Nn) exists for; BF16 needs no loss scaling.
/// </summary>
/// <example><code>
/// using (Autocast.Enable(DType.BF16))
/// {
///     var loss = model.Forward(ids, labels: ids).Loss!;   // matmuls in bf16, the rest in f32
///     loss.Backward();
/// }
/// </code></example>
public static class Autocast
{
    [ThreadStatic] private static DType? _dtype;

    /// <summary>The low-precision dtype matrix products use on this thread, or null outside autocast.</summary>
    public static DType? Current => _dtype;

    /// <summary>Makes matrix products on this thread compute in <paramref name="dtype"/> (BF16 or F16) until disposed;
    /// scopes nest and restore the previous setting.</summary>
    public static IDisposable Enable(DType dtype)
    {
        if (dtype is not (DType.BF16 or DType.F16)) throw new ArgumentException($"autocast computes in BF16 or F16, not {dtype}", nameof(dtype));
        return Use(dtype);
    }

    /// <summary>Turns autocast off on this thread until disposed (a region that must stay in F32).</summary>
    public static IDisposable Disable() => Use(null);

    /// <summary>Sets the precision of matrix products on this thread until disposed: BF16, F16, or null for F32 — for
    /// code that runs at a configured precision (a trainer's, a recomputation's) whatever the caller had set.</summary>
    public static IDisposable Use(DType? dtype)
    {
        if (dtype is { } d && d is not (DType.BF16 or DType.F16)) throw new ArgumentException($"autocast computes in BF16 or F16, not {d}", nameof(dtype));
        var previous = _dtype;
        _dtype = dtype;
        return new OnDispose(() => _dtype = previous);
    }
}
