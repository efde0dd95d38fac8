using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// One OFT adapter's rotation (PEFT's OFTRotationModule, <c>oft_R.&lt;a&gt;.weight</c> [blocks, b(b−1)/2]): each row is
/// the upper triangle of a skew-symmetric Q (Q = U − Uᵀ), turned into a block R by the Cayley transform — exactly,
/// (I − Q)(I + Q)⁻¹, or by PEFT's Cayley–Neumann series I + 2Q + 2Q² + … + 2Q^(k−2) + Q^(k−1). Input blocks of size b
/// are multiplied by their R (x_blk·R_i); with block_share one R serves every block. COFT projects each Q back into an
/// ε-ball before use.
/// </summary>
public sealed class OftRotation : Module
{
    /// <summary>A rotation of <paramref name="inFeatures"/> inputs in blocks of <paramref name="blockSize"/>.</summary>
    public OftRotation(int inFeatures, int blockSize, bool blockShare, bool coft, double eps, bool useCayleyNeumann, int neumannTerms)
    {
        if (blockSize < 1 || inFeatures % blockSize != 0) throw new ArgumentException($"OFT block size {blockSize} does not divide {inFeatures} input features");
        (InFeatures, BlockSize, BlockShare, Coft, Eps, UseCayleyNeumann, NeumannTerms) = (inFeatures, blockSize, blockShare, coft, eps, useCayleyNeumann, neumannTerms);
        int n = blockSize * (blockSize - 1) / 2;
        RegisterParameter("weight", Tensor.Zeros([blockShare ? 1 : Blocks, n]));
        var s = new float[n * blockSize * blockSize];
        int e = 0;
        for (int i = 0; i < blockSize; i++)   // torch.triu_indices(b, b, 1) order: row-major above the diagonal
            for (int j = i + 1; j < blockSize; j++, e++)
            {
                s[e * blockSize * blockSize + i * blockSize + j] = 1;
                s[e * blockSize * blockSize + j * blockSize + i] = -1;
            }
        // [n, b·b]: vec·S is the skew matrix flattened (+1 above, −1 below the diagonal); not saved, as PEFT's rows/cols.
        RegisterBuffer("scatter", Tensor.FromArray(s, [n, blockSize * blockSize]), persistent: false);
    }

    /// <summary>Input features rotated.</summary>
    public int InFeatures { get; }

    /// <summary>b, the block size.</summary>
    public int BlockSize { get; }

    /// <summary>Number of diagonal blocks, in / b (PEFT's r).</summary>
    public int Blocks => InFeatures / BlockSize;

    /// <summary>One rotation for every block.</summary>
    public bool BlockShare { get; }

    /// <summary>Constrained OFT: Q is kept within <see cref="Eps"/>.</summary>
    public bool Coft { get; }

    /// <summary>COFT's radius.</summary>
    public double Eps { get; }

    /// <summary>Cayley–Neumann series instead of the exact inverse.</summary>
    public bool UseCayleyNeumann { get; }

    /// <summary>Terms of the Neumann series.</summary>
    public int NeumannTerms { get; }

    /// <summary>The trained upper triangles.</summary>
    public Tensor Weight => Parameter("weight");

    /// <summary>Fills the weight (PEFT: 0 for the identity, N(0, 0.1) for a random rotation).</summary>
    public void Init(bool identity)
    {
        using var _ = Autograd.NoGrad();
        if (identity) Weight.FillInPlace(0);
        else using (var r = Tensor.Randn(Weight.Shape, null, Weight.DType, 0, 0.1)) Weight.CopyFrom(r);
    }

    /// <summary>The blocks R [blocks or 1, b, b], recorded by autograd.</summary>
    public Tensor Rotations()
    {
        if (Coft) Project();
        int b = BlockSize, rows = Weight.Shape[0];
        var s = Buffer("scatter");
        using var scatter = s.DType == Weight.DType ? s.Contiguous() : s.To(Weight.DType);
        using var flat = Weight.MatMul(scatter);
        using var q = flat.Reshape(rows, b, b);
        using var identity = Tensor.Eye(b, Weight.DType, Weight.Device);
        using var eye = identity.Expand(rows, b, b);   // one I per block (a view)
        if (!UseCayleyNeumann)
        {
            using var minus = eye.Sub(q);
            using var plus = eye.Add(q);
            using var inv = plus.Inverse();
            return minus.MatMul(inv);
        }
        // PEFT's series, term by term: R = I + 2Q + 2Q² + 2Q³ + … + Q^(k−1) (the last power once).
        var r = eye.Contiguous();
        if (NeumannTerms > 1)
        {
            Accumulate(ref r, q, 2.0);
            if (NeumannTerms > 2)
            {
                var power = q.MatMul(q);
                Accumulate(ref r, power, 2.0);
                for (int k = 3; k < NeumannTerms - 1; k++)
                {
                    var next = power.MatMul(q);
                    power.Dispose();
                    power = next;
                    Accumulate(ref r, power, 2.0);
                }
                using (power)
                using (var last = power.MatMul(q)) Accumulate(ref r, last, 1.0);
            }
        }
        return r;
    }

    private static void Accumulate(ref Tensor sum, Tensor term, double factor)
    {
        using var scaled = term.Mul(factor);
        var next = sum.Add(scaled);
        sum.Dispose();
        sum = next;
    }

    /// <summary>COFT (PEFT's _project_batch): each Q with ‖Q‖_F above ε/√blocks is scaled back onto that radius.</summary>
    private void Project()
    {
        using var _ = Autograd.NoGrad();
        int rows = Weight.Shape[0], n = Weight.Shape[1];
        var w = Weight.ToArray<float>();
        double eps = Eps / Math.Sqrt(rows);
        for (int k = 0; k < rows; k++)
        {
            double norm = 0;
            for (int e = 0; e < n; e++) norm += 2.0 * w[k * n + e] * w[k * n + e]; // each entry appears as +u and −u in Q
            norm = Math.Sqrt(norm);
            if (norm <= eps * (1 + 1e-5)) continue; // already on the ball: re-projecting would only add rounding
            for (int e = 0; e < n; e++) w[k * n + e] = (float)(eps * w[k * n + e] / norm);
        }
        using var projected = Tensor.FromArray(w, Weight.Shape);
        Weight.CopyFrom(projected);
    }

    /// <summary>Each block of x's last dim times its matrix: x_blk·M_i, with M [blocks or 1, b, b].</summary>
    public static Tensor ApplyBlocks(Tensor x, Tensor m, int blockSize)
    {
        var shape = x.Shape;
        int blocks = shape[^1] / blockSize;
        using var xs = x.Reshape(-1, blocks, blockSize);    // [N, r, b]
        using var perm = xs.Permute(1, 0, 2);               // [r, N, b]
        using var rotated = perm.MatMul(m);                 // [r, N, b] (M broadcasts when shared)
        using var back = rotated.Permute(1, 0, 2);          // [N, r, b]
        return back.Reshape(shape);
    }

    /// <summary>x with every block rotated (the OFT forward on the input).</summary>
    public Tensor Rotate(Tensor x)
    {
        using var r = Rotations();
        return ApplyBlocks(x, r, BlockSize);
    }
}
