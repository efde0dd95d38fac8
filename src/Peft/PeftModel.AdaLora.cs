using Peft.Core;
using Peft.Transformers;

namespace Peft;

// AdaLoRA's model-level parts (PEFT's AdaLoraModel): one trainable adapter, the orthogonality regulariser added to the
// loss, the rank allocator stepped from the training loop, and rank_pattern-based resizing on save and load.
public sealed partial class PeftModel
{
    private RankAllocator? _rankAllocator;
    private string? _trainableAdaLora;

    /// <summary>Sets up the rank allocator for a trainable AdaLoRA adapter (PEFT allows one; Inject checked).</summary>
    private void PrepareAdaLora(string adapter, AdaLoraConfig config)
    {
        if (config.InferenceMode) return;
        var layers = TunerLayers().Where(l => l.Layer is AdaLoraLayer a && a.Adapters.Contains(adapter))
            .Select(l => (l.Name, (AdaLoraLayer)l.Layer)).ToList();
        _rankAllocator = new RankAllocator(config, adapter, layers);
        _trainableAdaLora = adapter;
    }

    /// <summary>
    /// AdaLoRA's budget step (PEFT's update_and_allocate): call after <c>loss.Backward()</c> and before zeroing the
    /// gradients, every step. Before total_step − tfinal it updates the importance scores and, every deltaT steps, masks
    /// the least important triplets down to the scheduled budget (recording rank_pattern in the config); at that step it
    /// fixes the final pattern; afterwards it re-applies the pattern so masked triplets stay zero.
    /// </summary>
    public void UpdateAndAllocate(int globalStep)
    {
        if (_rankAllocator == null || _trainableAdaLora == null)
            throw new InvalidOperationException("UpdateAndAllocate needs a trainable AdaLoRA adapter");
        var config = (AdaLoraConfig)_configs[_trainableAdaLora];
        int end = config.TotalStep!.Value - config.Tfinal;
        if (globalStep < end)
        {
            _rankAllocator.UpdateImportance();
            var (budget, mask) = _rankAllocator.BudgetSchedule(globalStep);
            if (mask) config.RankPattern = _rankAllocator.MaskToBudget(budget);
        }
        else if (globalStep == end)
        {
            _rankAllocator.UpdateImportance();
            config.RankPattern = _rankAllocator.MaskToBudget(_rankAllocator.BudgetSchedule(globalStep).Budget);
            _rankAllocator.Reset();
        }
        else if (config.RankPattern is { } pattern)
        {
            foreach (var (path, layer) in _rankAllocator.Layers)
                if (pattern.TryGetValue(path + ".lora_E", out var keep)) _rankAllocator.Apply(layer, keep);
        }
    }

    /// <summary>PEFT's orthogonality regulariser: the mean over P and Q matrices of ‖PPᵀ − I‖_F and ‖QᵀQ − I‖_F.</summary>
    private Tensor? OrthogonalityLoss()
    {
        if (_rankAllocator == null || _trainableAdaLora == null) return null;
        var terms = new List<Tensor>();
        foreach (var (_, layer) in _rankAllocator.Layers)
        {
            if (layer.Rank(_trainableAdaLora) == 0) continue;
            foreach (var (m, left) in new[] { (layer.A(_trainableAdaLora), true), (layer.B(_trainableAdaLora), false) })
            {
                using var mt = m.Transpose(0, 1);
                using var cov = left ? m.MatMul(mt) : mt.MatMul(m);
                using var identity = Tensor.Eye(cov.Shape[0], cov.DType, cov.Device);
                using var diff = cov.Sub(identity);
                terms.Add(diff.Norm(2, [0, 1]));
            }
        }
        if (terms.Count == 0) return null;
        using var stacked = Tensor.Stack(terms, 0);
        foreach (var t in terms) t.Dispose();
        return stacked.Mean();
    }

    /// <summary>Adds orth_reg_weight × the regulariser to a training loss, as AdaLoraModel.forward.</summary>
    private ModelOutput WithOrthogonalityLoss(ModelOutput output)
    {
        if (output.Loss == null || _trainableAdaLora == null || !_active.Contains(_trainableAdaLora)) return output;
        using var reg = OrthogonalityLoss();
        if (reg == null) return output;
        double weight = ((AdaLoraConfig)_configs[_trainableAdaLora]).OrthRegWeight;
        using var weighted = reg.Mul(weight);
        var total = output.Loss.Add(weighted);
        output.Loss.Dispose();
        return output with { Loss = total };
    }

    /// <summary>Before loading an AdaLoRA adapter whose config carries a rank_pattern, shrinks each layer to its kept
    /// triplets so the saved (already sliced) tensors fit.</summary>
    private void ResizeByRankPattern(string adapter)
    {
        if (_configs[adapter] is not AdaLoraConfig { RankPattern: { } pattern }) return;
        foreach (var (path, layer) in TunerLayers())
            if (layer is AdaLoraLayer a && a.Adapters.Contains(adapter) && pattern.TryGetValue(path + ".lora_E", out var keep) && keep.Length == a.Rank(adapter))
                a.ResizeTo(adapter, keep);
    }

    /// <summary>The saved form of an AdaLoRA adapter's tensors: P, Λ rows and Q columns of the kept triplets only
    /// (when the layer still holds all of them), as PEFT's resize_state_dict_by_rank_pattern.</summary>
    private void SliceByRankPattern(string adapter, Dictionary<string, Tensor> state)
    {
        if (_configs[adapter] is not AdaLoraConfig { RankPattern: { } pattern }) return;
        foreach (var (name, keep) in pattern)
        {
            if (!name.EndsWith(".lora_E", StringComparison.Ordinal)) continue;
            var prefix = "base_model.model." + name[..^".lora_E".Length];
            var idx = Enumerable.Range(0, keep.Length).Where(i => keep[i]).ToArray();
            foreach (var (param, dim) in new[] { ("lora_A", 0), ("lora_E", 0), ("lora_B", 1) })
            {
                var key = prefix + "." + param;
                if (!state.TryGetValue(key, out var t) || t.Shape[dim] != keep.Length || idx.Length == keep.Length) continue;
                state[key] = AdaLoraLayer.Take(t, dim, idx);
            }
        }
    }
}
