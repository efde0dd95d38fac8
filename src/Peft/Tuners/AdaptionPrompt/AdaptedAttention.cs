using Peft.Core;
using Peft.Nn;
using Peft.Transformers;
using Peft.Transformers.Llama;

namespace Peft;

/// <summary>
/// LLaMA-Adapter's attention wrapper (PEFT's AdaptedAttention): the original attention as <c>model</c>, and per adapter
/// <c>adaption_prompt</c> [1, adapter_len, hidden] ~ N(0, 1) and <c>adaption_gate</c> [1] = 0. Output: attn(x) +
/// o_proj(gate · softmax(Q·K_pᵀ/√head_dim) · V_p) with Q the layer's rotary queries, K_p, V_p the prompt through its
/// k/v projections (no rotation; key/value heads repeated for grouped-query attention). A zero gate is the base model.
/// </summary>
public sealed class AdaptedAttention : Module, ILlamaAttention
{
    /// <summary>Wraps <paramref name="attention"/>.</summary>
    public AdaptedAttention(LlamaAttention attention)
    {
        RegisterModule("model", attention);
        RegisterModule("adaption_prompt", new ParameterDict());
        RegisterModule("adaption_gate", new ParameterDict());
    }

    /// <summary>The wrapped attention.</summary>
    public LlamaAttention Attention => Child<LlamaAttention>("model");

    private ParameterDict Prompts => Child<ParameterDict>("adaption_prompt");
    private ParameterDict Gates => Child<ParameterDict>("adaption_gate");

    /// <summary>Adapters this layer holds.</summary>
    public IEnumerable<string> Adapters => Prompts.NamedParameters().Select(p => p.Name);

    /// <summary>The adapter applied in forward (null: none).</summary>
    public string? ActiveAdapter { get; set; }

    /// <summary>When true only the wrapped attention runs.</summary>
    public bool Disabled { get; set; }

    /// <summary>Adds (or replaces) an adapter with PEFT's init.</summary>
    public void AddAdapter(string adapter, int adapterLen)
    {
        Prompts.Set(adapter, Tensor.Randn([1, adapterLen, Attention.Config.HiddenSize]));
        Gates.Set(adapter, Tensor.Zeros([1]));
    }

    /// <summary>Removes an adapter's parameters.</summary>
    public void RemoveAdapter(string adapter)
    {
        if (!Prompts.Contains(adapter)) return;
        Prompts.Remove(adapter);
        Gates.Remove(adapter);
        if (ActiveAdapter == adapter) ActiveAdapter = null;
    }

    /// <inheritdoc/>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? keyPaddingMask, KvCache? cache)
    {
        var output = Attention.Forward(x, cos, sin, keyPaddingMask, cache);
        if (Disabled || ActiveAdapter is not { } a || !Prompts.Contains(a)) return output;
        using (output)
        {
            var cfg = Attention.Config;
            int b = x.Size(0), hd = cfg.HeadDim, h = cfg.NumAttentionHeads, kvh = cfg.NumKeyValueHeads;
            var prompt = Prompts[a];
            using var kp = AttentionHeads.Project((IUnaryModule)Attention.GetSubmodule("k_proj"), prompt, kvh, hd);   // [1, kvh, L, hd]
            using var vp = AttentionHeads.Project((IUnaryModule)Attention.GetSubmodule("v_proj"), prompt, kvh, hd);
            using var kRep = LlamaAttention.RepeatKv(kp, h / kvh);                                                   // [1, h, L, hd]
            using var vRep = LlamaAttention.RepeatKv(vp, h / kvh);
            using var q = Attention.QueryStates(x, cos, sin);                                                       // [B, h, T, hd]
            using var kt = kRep.Transpose(2, 3);
            using var raw = q.MatMul(kt);
            using var scores = raw.Mul(1.0 / Math.Sqrt(hd));
            using var probs = scores.Softmax(-1);
            using var gated = probs.Mul(Gates[a]);
            using var mixed = gated.MatMul(vRep);                                                                   // [B, h, T, hd]
            using var merged = AttentionHeads.Merge(mixed);                                                         // [B, T, h·hd]
            using var projected = ((IUnaryModule)Attention.GetSubmodule("o_proj")).Forward(merged);
            return output.Add(projected);
        }
    }

    /// <summary>Detaches and returns the wrapped attention (for unloading).</summary>
    internal LlamaAttention TakeAttention() => (LlamaAttention)RemoveModule("model");
}
