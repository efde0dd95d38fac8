using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// LoRA on an Embedding, as PEFT: parameters <c>lora_embedding_A.&lt;a&gt;</c> [r, num_embeddings] and
/// <c>lora_embedding_B.&lt;a&gt;</c> [dim, r]; y = emb(ids) + s·(Aᵀ[ids])·Bᵀ; ΔW = s·(B·A)ᵀ. PEFT's init: A = 0 and
/// B ~ N(0, 1) (so the layer starts as the base); with init_lora_weights = false both are N(0, 1).
/// </summary>
public sealed class LoraEmbedding : LoraLayer
{
    /// <summary>Wraps <paramref name="baseLayer"/>.</summary>
    public LoraEmbedding(Embedding baseLayer) : base(baseLayer)
    {
        RegisterModule("lora_embedding_A", new ParameterDict());
        RegisterModule("lora_embedding_B", new ParameterDict());
    }

    private ParameterDict A => Child<ParameterDict>("lora_embedding_A");
    private ParameterDict B => Child<ParameterDict>("lora_embedding_B");

    /// <inheritdoc/>
    public override IEnumerable<string> Adapters => A.NamedParameters().Select(p => p.Name);

    /// <inheritdoc/>
    public override void UpdateLayer(string adapter, int r, double alpha, double dropout, string init, bool useRslora, bool loraBias, bool useDora)
    {
        CheckRank(r);
        if (useDora) throw new NotSupportedException("DoRA on embedding layers is not supported yet");
        if (loraBias) throw new NotSupportedException("lora_bias is not defined for embedding layers");
        var a = Tensor.Randn([r, InFeatures]);
        var b = Tensor.Randn([OutFeatures, r]);
        if (init != "false") using (Autograd.NoGrad()) a.FillInPlace(0);
        A.Set(adapter, a);
        B.Set(adapter, b);
        SetRankAndScaling(adapter, r, alpha, useRslora);
    }

    /// <inheritdoc/>
    protected override Tensor AddAdapterOutput(string adapter, Tensor ids, Tensor result)
    {
        using var at = A[adapter].Transpose(0, 1);          // [num, r]
        using var rows = at.Embedding(ids);                  // [..., r]
        using var bt = B[adapter].Transpose(0, 1);           // [r, dim]
        using var proj = rows.MatMul(bt);
        using var scaled = proj.Mul(Scaling(adapter));
        return result.Add(scaled);
    }

    /// <inheritdoc/>
    public override Tensor DeltaWeight(string adapter)
    {
        using var _ = Autograd.NoGrad();
        using var ba = B[adapter].MatMul(A[adapter]);        // [dim, num]
        using var scaled = ba.Mul(Scaling(adapter));
        using var t = scaled.Transpose(0, 1);                // [num, dim]
        return t.Contiguous();
    }

    /// <inheritdoc/>
    public override (Tensor A, Tensor B) Factors(string adapter) => (A[adapter], B[adapter]);

    /// <inheritdoc/>
    protected override void RemoveFactors(string adapter)
    {
        A.Remove(adapter);
        B.Remove(adapter);
    }
}
