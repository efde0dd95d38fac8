using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// OFT on a Linear or Conv1D, as PEFT: the input is rotated block-wise by each active adapter's orthogonal
/// <see cref="OftRotation"/> (<c>oft_R.&lt;a&gt;</c>), then the base layer runs: y = base(x·R_bd). Merging folds the
/// rotation into the weight, W ← W·R_bdᵀ (PEFT's (R·Wᵀ)ᵀ); unmerging multiplies by the inverse again.
/// </summary>
public sealed class OftLayer : TunerLayer
{
    /// <summary>Wraps <paramref name="baseLayer"/>.</summary>
    public OftLayer(Module baseLayer) : base(baseLayer) => RegisterModule("oft_R", new ModuleDict<OftRotation>());

    private ModuleDict<OftRotation> R => Child<ModuleDict<OftRotation>>("oft_R");

    /// <inheritdoc/>
    public override IEnumerable<string> Adapters => R.Keys;

    /// <summary>The rotation of <paramref name="adapter"/>.</summary>
    public OftRotation Rotation(string adapter) => R[adapter];

    /// <summary>
    /// PEFT's adjust_oft_parameters: the divisor of <paramref name="inFeatures"/> nearest to <paramref name="value"/>
    /// (the lower one on a tie), or inFeatures itself when the value is not smaller.
    /// </summary>
    public static int AdjustToDivisor(int inFeatures, int value)
    {
        if (value >= inFeatures) return inFeatures;
        int higher = value;
        while (higher <= inFeatures && inFeatures % higher != 0) higher++;
        int lower = value;
        while (lower > 1 && inFeatures % lower != 0) lower--;
        return value - lower <= higher - value ? lower : higher;
    }

    /// <summary>Adds (or replaces) an adapter with either <paramref name="r"/> blocks or blocks of
    /// <paramref name="blockSize"/> (the other 0), adjusted to divide the input features as PEFT does.</summary>
    public void UpdateLayer(string adapter, int r, int blockSize, bool blockShare, bool coft, double eps, bool useCayleyNeumann, int neumannTerms, bool initIdentity)
    {
        if ((r == 0) == (blockSize == 0)) throw new ArgumentException($"exactly one of r ({r}) and oft_block_size ({blockSize}) must be non-zero");
        if (r != 0)
        {
            if (InFeatures % r != 0 || r > InFeatures) r = AdjustToDivisor(InFeatures, r);
            blockSize = InFeatures / r;
        }
        else if (InFeatures % blockSize != 0 || blockSize > InFeatures) blockSize = AdjustToDivisor(InFeatures, blockSize);
        var rotation = new OftRotation(InFeatures, blockSize, blockShare, coft, eps, useCayleyNeumann, neumannTerms);
        rotation.Init(initIdentity);
        R.Set(adapter, rotation);
    }

    /// <inheritdoc/>
    protected override bool IsAdditive => false;

    /// <summary>base(x rotated by every adapter in turn).</summary>
    protected override Tensor AdaptedForward(Tensor x, IReadOnlyList<string> adapters)
    {
        var current = x.Contiguous();
        foreach (var a in adapters)
        {
            var next = R[a].Rotate(current);
            current.Dispose();
            current = next;
        }
        using (current) return BaseForward(current);
    }

    /// <summary>W as [out, in] with each row's blocks multiplied by Mᵢ: the weight form of a block matrix.</summary>
    private Tensor WeightTimesBlocks(Tensor m, int blockSize)
    {
        using var w = WeightOutIn();
        using var product = OftRotation.ApplyBlocks(w, m, blockSize);
        return InBaseLayout(product);
    }

    /// <summary>W·R_bdᵀ (so that x·W'ᵀ = (x·R_bd)·Wᵀ).</summary>
    protected override Tensor MergedWeight(string adapter)
    {
        using var r = R[adapter].Rotations();
        using var rt = r.Transpose(-2, -1);
        return WeightTimesBlocks(rt, R[adapter].BlockSize);
    }

    /// <summary>W'·(R_bd⁻¹)ᵀ: the merged weight rotated back (R is orthogonal only for the exact Cayley transform, so the
    /// inverse is computed rather than taken as Rᵀ).</summary>
    protected override Tensor UnmergedWeight(string adapter)
    {
        using var r = R[adapter].Rotations();
        using var inv = r.Inverse();
        using var invT = inv.Transpose(-2, -1);
        return WeightTimesBlocks(invT, R[adapter].BlockSize);
    }

    /// <summary>W·R_bdᵀ − W in the base weight's layout (OFT itself is multiplicative).</summary>
    public override Tensor DeltaWeight(string adapter)
    {
        using var _ = Autograd.NoGrad();
        using var merged = MergedWeight(adapter);
        return merged.Sub(BaseWeight);
    }

    /// <inheritdoc/>
    protected override void RemoveAdapterState(string adapter) => R.Remove(adapter);
}
