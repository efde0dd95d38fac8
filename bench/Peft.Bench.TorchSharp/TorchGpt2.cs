using TorchSharp;
using static TorchSharp.torch;

namespace Peft.Bench.TorchSharpPeer;

/// <summary>
/// GPT-2 written with TorchSharp tensors, the same computation as Peft.Transformers' GPT-2 (pre-LN blocks, learned
/// positions, tanh GELU, causal attention spelled out as softmax(q·kᵀ/√d + mask)·v, tied LM head) with LoRA on c_attn:
/// y = x·W + b + s·(x·Aᵀ)·Bᵀ, the base weights frozen — or, with rank 0, no adapter and every weight trained. Weights
/// are random (this times, it does not compare values).
/// </summary>
internal sealed class TorchGpt2 : IDisposable
{
    private readonly int _layers, _width, _heads, _vocab;
    private readonly Tensor _wte, _wpe, _lnfW, _lnfB;
    private readonly List<Dictionary<string, Tensor>> _blocks = new();
    private readonly float _scale;
    /// <summary>What the optimizer updates: the LoRA factors, or every weight under full fine-tuning (rank 0); Parameters
    /// from the start (wrapping a tensor in a Parameter later steals its handle).</summary>
    public readonly List<TorchSharp.Modules.Parameter> Trainable = new();

    /// <param name="rank">LoRA rank on c_attn; 0 = no adapter and every weight trainable (full fine-tuning).</param>
    public TorchGpt2(int layers, int width, int heads, int vocab, int positions, int rank, double alpha)
    {
        (_layers, _width, _heads, _vocab) = (layers, width, heads, vocab);
        bool full = rank == 0;
        _scale = full ? 0 : (float)(alpha / rank);
        Tensor Weight(Tensor init)
        {
            if (!full) return init.requires_grad_(false);
            var p = new TorchSharp.Modules.Parameter(init);
            Trainable.Add(p);
            return p;
        }
        Tensor Frozen(params long[] shape) => Weight(randn(shape) * 0.02f);
        _wte = Frozen(vocab, width);
        _wpe = Frozen(positions, width);
        _lnfW = Weight(ones(width));
        _lnfB = Weight(zeros(width));
        for (int l = 0; l < layers; l++)
        {
            var block = new Dictionary<string, Tensor>
            {
                ["ln1w"] = Weight(ones(width)), ["ln1b"] = Weight(zeros(width)),
                ["attnW"] = Frozen(width, 3 * width), ["attnB"] = Weight(zeros(3 * width)),
                ["projW"] = Frozen(width, width), ["projB"] = Weight(zeros(width)),
                ["ln2w"] = Weight(ones(width)), ["ln2b"] = Weight(zeros(width)),
                ["fcW"] = Frozen(width, 4 * width), ["fcB"] = Weight(zeros(4 * width)),
                ["fc2W"] = Frozen(4 * width, width), ["fc2B"] = Weight(zeros(width)),
            };
            if (!full)
            {
                var a = new TorchSharp.Modules.Parameter(randn(rank, width) * (1 / Math.Sqrt(width)));   // lora_A (kaiming-like)
                var b = new TorchSharp.Modules.Parameter(zeros(3 * width, rank));                       // lora_B = 0, as PEFT
                Trainable.Add(a);
                Trainable.Add(b);
                (block["loraA"], block["loraB"]) = (a, b);
            }
            _blocks.Add(block);
        }
    }

    /// <summary>Mean next-token cross-entropy of <paramref name="ids"/> [B, T] (labels = ids, as the causal-LM loss).</summary>
    public Tensor Loss(Tensor ids)
    {
        using var scope = NewDisposeScope();
        long b = ids.shape[0], t = ids.shape[1];
        var h = _wte.index_select(0, ids.view(-1)).view(b, t, _width) + _wpe.narrow(0, 0, t);
        var mask = ones(t, t).triu(1).to(ScalarType.Bool);
        foreach (var p in _blocks)
        {
            var x = nn.functional.layer_norm(h, [_width], p["ln1w"], p["ln1b"], 1e-5);
            var qkv = x.matmul(p["attnW"]) + p["attnB"];
            if (p.TryGetValue("loraA", out var loraA)) qkv = qkv + x.matmul(loraA.t()).matmul(p["loraB"].t()) * _scale;
            var parts = qkv.split(_width, 2);
            Tensor Heads(Tensor z) => z.view(b, t, _heads, _width / _heads).transpose(1, 2);
            var (q, k, v) = (Heads(parts[0]), Heads(parts[1]), Heads(parts[2]));
            var scores = q.matmul(k.transpose(-2, -1)) / Math.Sqrt(_width / _heads);
            var attn = scores.masked_fill(mask, float.NegativeInfinity).softmax(-1).matmul(v);
            var merged = attn.transpose(1, 2).contiguous().view(b, t, _width);
            h = h + merged.matmul(p["projW"]) + p["projB"];
            var y = nn.functional.layer_norm(h, [_width], p["ln2w"], p["ln2b"], 1e-5);
            var up = y.matmul(p["fcW"]) + p["fcB"];
            var gelu = up * 0.5 * (1 + ((up + up.pow(3) * 0.044715) * Math.Sqrt(2 / Math.PI)).tanh());
            h = h + gelu.matmul(p["fc2W"]) + p["fc2B"];
        }
        var final = nn.functional.layer_norm(h, [_width], _lnfW, _lnfB, 1e-5);
        var logits = final.matmul(_wte.t());                                          // tied head
        var shifted = logits.narrow(1, 0, t - 1).reshape(-1, _vocab);
        var targets = ids.narrow(1, 1, t - 1).reshape(-1);
        return nn.functional.cross_entropy(shifted, targets).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        foreach (var block in _blocks) foreach (var tensor in block.Values) tensor.Dispose();
        _wte.Dispose(); _wpe.Dispose(); _lnfW.Dispose(); _lnfB.Dispose();
    }
}
