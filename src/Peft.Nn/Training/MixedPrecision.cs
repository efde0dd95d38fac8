using Peft.Core;

namespace Peft.Nn;

/// <summary>Low-precision storage for the frozen part of a model (what loading a model in bfloat16 gives in
/// transformers), to pair with <see cref="Autocast"/> compute and F32 trainable parameters.</summary>
public static class MixedPrecision
{
    /// <summary>
    /// Stores the frozen weight matrices of <see cref="Linear"/> and <see cref="Conv1D"/> layers in
    /// <paramref name="dtype"/> (BF16 or F16): the bulk of a transformer's bytes, read by the GEMM directly. Trainable
    /// parameters (adapters, modules_to_save), biases, norms and any weight an embedding shares (a tied LM head) stay F32.
    /// Call it after <c>PeftModel.Create</c> has frozen the base. Returns the bytes saved.
    /// </summary>
    public static long StoreFrozenWeights(Module model, DType dtype)
    {
        if (dtype is not (DType.BF16 or DType.F16)) throw new ArgumentException($"frozen weights are stored in BF16 or F16, not {dtype}", nameof(dtype));
        // A tensor another kind of module also reads (an embedding table tied to the head) must stay F32 for it.
        var usedElsewhere = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (_, m) in model.NamedModules())
            if (m is not (Linear or Conv1D))
                foreach (var (_, t, _) in m.OwnTensors()) usedElsewhere.Add(t);
        long saved = 0;
        var counted = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        model.ToDType(dtype, (m, name, t) =>
        {
            bool take = m is Linear or Conv1D && name == "weight" && !t.RequiresGrad && t.DType == DType.F32 && !usedElsewhere.Contains(t);
            if (take && counted.Add(t)) saved += t.NumEl * (DType.F32.SizeOf() - dtype.SizeOf());
            return take;
        });
        return saved;
    }
}
