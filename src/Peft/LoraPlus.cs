using Peft.Core;
using Peft.Nn;

namespace Peft;

/// <summary>
/// LoRA+ (Hayou et al. 2024), as PEFT's create_loraplus_optimizer: lora_B (and other 1-D trainable parameters)
/// learn <c>loraplusLrRatio</c> times faster than lora_A; biases and norm weights get no weight decay; LoRA factors of
/// embedding layers use <c>loraplusLrEmbedding</c>.
/// </summary>
/// <example><code>using var opt = LoraPlus.CreateOptimizer(peft, lr: 2e-4, loraplusLrRatio: 16);</code></example>
public static class LoraPlus
{
    /// <summary>The four parameter groups PEFT builds: groupA, embedding, groupB, groupB_no_decay (empty ones dropped).</summary>
    public static List<ParamGroup> ParamGroups(PeftModel model, double lr, double loraplusLrRatio, double loraplusLrEmbedding = 1e-6, double weightDecay = 0)
    {
        var a = new List<Tensor>();
        var emb = new List<Tensor>();
        var b = new List<Tensor>();
        var bNoDecay = new List<Tensor>();
        foreach (var (name, p) in model.NamedParameters())
        {
            if (!p.RequiresGrad) continue;
            bool noDecay = name.EndsWith(".bias", StringComparison.Ordinal) || name.Contains("LayerNorm", StringComparison.Ordinal)
                || name.Contains("layer_norm", StringComparison.Ordinal) || name.Contains("layernorm", StringComparison.Ordinal) || name.Contains("_norm.", StringComparison.Ordinal);
            if (name.Contains(".lora_embedding_", StringComparison.Ordinal)) emb.Add(p);
            else if (name.Contains("lora_B", StringComparison.Ordinal) || p.Rank == 1) (noDecay ? bNoDecay : b).Add(p);
            else a.Add(p);
        }
        return new List<ParamGroup>
        {
            new(a, lr, weightDecay, "groupA"),
            new(emb, loraplusLrEmbedding, weightDecay, "embedding"),
            new(b, lr * loraplusLrRatio, weightDecay, "groupB"),
            new(bNoDecay, lr * loraplusLrRatio, 0, "groupB_no_decay"),
        }.Where(g => g.Parameters.Count > 0).ToList();
    }

    /// <summary>An AdamW over <see cref="ParamGroups"/>.</summary>
    public static AdamW CreateOptimizer(PeftModel model, double lr, double loraplusLrRatio, double loraplusLrEmbedding = 1e-6, double weightDecay = 0,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) =>
        new(ParamGroups(model, lr, loraplusLrRatio, loraplusLrEmbedding, weightDecay), beta1, beta2, eps);
}
