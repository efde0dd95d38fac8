using Peft.Core;
using Peft.Core.Random;

namespace Peft.Nn;

/// <summary>y = x·Wᵀ + b with W of shape [out, in] (torch.nn.Linear). Parameters: <c>weight</c>, <c>bias</c>.</summary>
public sealed class Linear : Module, IUnaryModule
{
    /// <summary>A layer initialised as torch does: W, b ~ U(−1/√in, 1/√in).</summary>
    public Linear(int inFeatures, int outFeatures, bool bias = true, DType dtype = DType.F32, Generator? generator = null)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        double bound = 1 / Math.Sqrt(inFeatures);
        RegisterParameter("weight", Tensor.Rand([outFeatures, inFeatures], generator, dtype, -bound, bound));
        if (bias) RegisterParameter("bias", Tensor.Rand([outFeatures], generator, dtype, -bound, bound));
        HasBias = bias;
    }

    /// <summary>Input features.</summary>
    public int InFeatures { get; }

    /// <summary>Output features.</summary>
    public int OutFeatures { get; }

    /// <summary>Whether the layer adds a bias.</summary>
    public bool HasBias { get; }

    /// <summary>[out, in].</summary>
    public Tensor Weight => Parameter("weight");

    /// <summary>[out], or null.</summary>
    public Tensor? Bias => HasBias ? Parameter("bias") : null;

    /// <inheritdoc/>
    public Tensor Forward(Tensor input) => input.Linear(Weight, Bias);
}

/// <summary>
/// GPT-2's "Conv1D": a linear layer whose weight is stored transposed, [in, out], so y = x·W + b. Hugging Face keeps
/// this layout in GPT-2 checkpoints (PEFT's fan_in_fan_out = true refers to it).
/// </summary>
public sealed class Conv1D : Module, IUnaryModule
{
    /// <summary>A layer initialised as Hugging Face does: W ~ N(0, 0.02), b = 0.</summary>
    public Conv1D(int outFeatures, int inFeatures, DType dtype = DType.F32, Generator? generator = null, double std = 0.02)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        RegisterParameter("weight", Tensor.Randn([inFeatures, outFeatures], generator, dtype, 0, std));
        RegisterParameter("bias", Tensor.Zeros([outFeatures], dtype));
    }

    /// <summary>Input features.</summary>
    public int InFeatures { get; }

    /// <summary>Output features.</summary>
    public int OutFeatures { get; }

    /// <summary>[in, out].</summary>
    public Tensor Weight => Parameter("weight");

    /// <summary>[out].</summary>
    public Tensor Bias => Parameter("bias");

    /// <inheritdoc/>
    public Tensor Forward(Tensor input)
    {
        using var y = input.MatMul(Weight);
        return y.Add(Bias);
    }
}

/// <summary>A lookup table [num, dim] (torch.nn.Embedding). Parameter: <c>weight</c>.</summary>
public sealed class Embedding : Module, IUnaryModule
{
    /// <summary>A table initialised N(0, <paramref name="std"/>) (torch uses 1; Hugging Face models 0.02).</summary>
    public Embedding(int numEmbeddings, int embeddingDim, DType dtype = DType.F32, Generator? generator = null, double std = 1.0)
    {
        NumEmbeddings = numEmbeddings;
        EmbeddingDim = embeddingDim;
        RegisterParameter("weight", Tensor.Randn([numEmbeddings, embeddingDim], generator, dtype, 0, std));
    }

    /// <summary>Rows in the table.</summary>
    public int NumEmbeddings { get; }

    /// <summary>Width of a row.</summary>
    public int EmbeddingDim { get; }

    /// <summary>[num, dim].</summary>
    public Tensor Weight => Parameter("weight");

    /// <summary>Looks up integer ids of any shape → [..., dim].</summary>
    public Tensor Forward(Tensor ids) => Weight.Embedding(ids);
}
