using Peft.Core;

namespace Peft.Nn;

/// <summary>Parameters sharing optimizer settings (torch's param_groups); LoRA+ gives lora_B a larger learning rate this way.</summary>
public sealed class ParamGroup
{
    /// <summary>Creates a group.</summary>
    public ParamGroup(IEnumerable<Tensor> parameters, double lr, double weightDecay = 0, string name = "")
    {
        Parameters = parameters.ToList();
        Lr = lr;
        WeightDecay = weightDecay;
        Name = name;
    }

    /// <summary>The tensors updated by this group.</summary>
    public IReadOnlyList<Tensor> Parameters { get; }

    /// <summary>Learning rate (schedulers change it).</summary>
    public double Lr { get; set; }

    /// <summary>Weight decay.</summary>
    public double WeightDecay { get; set; }

    /// <summary>A label ("groupA", "groupB", ...).</summary>
    public string Name { get; }
}

/// <summary>Base of the optimizers: parameter groups, per-parameter state, zeroing gradients.</summary>
public abstract class Optimizer : IDisposable
{
    /// <summary>Per-parameter state tensors, owned by the optimizer.</summary>
    protected readonly Dictionary<Tensor, Tensor[]> State = new(ReferenceEqualityComparer.Instance);

    /// <summary>Creates the optimizer over <paramref name="groups"/>.</summary>
    protected Optimizer(IEnumerable<ParamGroup> groups)
    {
        Groups = groups.ToList();
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var p in Groups.SelectMany(g => g.Parameters))
            if (!seen.Add(p)) throw new ArgumentException("a parameter appears in more than one parameter group");
    }

    /// <summary>The parameter groups.</summary>
    public IReadOnlyList<ParamGroup> Groups { get; }

    /// <summary>Steps taken.</summary>
    public long StepCount { get; protected set; }

    /// <summary>F32 master copies of BF16/F16 parameters: the update runs on the master (small steps are not lost to
    /// 8-bit mantissas) and the parameter receives it rounded.</summary>
    private readonly Dictionary<Tensor, Tensor> _masters = new(ReferenceEqualityComparer.Instance);

    /// <summary>Updates every parameter that has a gradient. A BF16/F16 parameter is updated through its F32 master
    /// copy, with F32 optimizer state.</summary>
    public void Step()
    {
        StepCount++;
        using var _ = Autograd.NoGrad();
        using var scope = Tensor.NewScope();
        foreach (var g in Groups)
        {
            // (the tensor stepped, its gradient): the parameter itself, or its F32 master and an F32 gradient.
            var items = new List<(Tensor Target, Tensor Grad)>();
            foreach (var p in g.Parameters)
            {
                if (p.Grad == null) continue;
                if (!IsLowPrecision(p)) { items.Add((p, p.Grad)); continue; }
                items.Add((MasterOf(p), p.Grad.DType == DType.F32 ? p.Grad : p.Grad.To(DType.F32)));
            }
            if (!TryUpdateGroup(g, items))
                foreach (var (target, grad) in items) Update(g, target, grad);
            foreach (var p in g.Parameters)
                if (p.Grad != null && IsLowPrecision(p)) p.CopyFrom(MasterOf(p));
        }
    }

    /// <summary>Steps every item of a group at once (a device's multi-tensor kernel) and returns true, or false to have
    /// <see cref="Update"/> step them one by one. Called inside NoGrad and a scope.</summary>
    protected virtual bool TryUpdateGroup(ParamGroup group, IReadOnlyList<(Tensor Target, Tensor Grad)> items) => false;

    private static bool IsLowPrecision(Tensor p) => p.DType is DType.BF16 or DType.F16;

    private Tensor MasterOf(Tensor p)
    {
        if (!_masters.TryGetValue(p, out var m))
            _masters[p] = m = p.To(DType.F32).MoveToOuterScope().KeepAlive();
        return m;
    }

    /// <summary>The tensor whose state the optimizer keeps for <paramref name="p"/>: its master copy or itself.</summary>
    private Tensor StateKey(Tensor p) => _masters.TryGetValue(p, out var m) ? m : p;

    /// <summary>Applies one update to <paramref name="p"/> (inside NoGrad and a scope); for a low-precision parameter
    /// <paramref name="p"/> is its F32 master copy.</summary>
    protected abstract void Update(ParamGroup group, Tensor p, Tensor grad);

    /// <summary>The state tensors of <paramref name="p"/>, created as zeros on first use.</summary>
    protected Tensor[] StateOf(Tensor p, int count)
    {
        if (!State.TryGetValue(p, out var s))
        {
            s = Enumerable.Range(0, count).Select(_ => Tensor.ZerosLike(p).MoveToOuterScope().KeepAlive()).ToArray();
            State[p] = s;
        }
        return s;
    }

    /// <summary>Clears the gradients of every parameter.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Groups.SelectMany(g => g.Parameters)) p.ZeroGrad();
    }

    /// <summary>Scales all gradients so their global L2 norm is at most <paramref name="maxNorm"/>; returns the norm
    /// before clipping (torch.nn.utils.clip_grad_norm_).</summary>
    public double ClipGradNorm(double maxNorm)
    {
        double sq = 0;
        var grads = Groups.SelectMany(g => g.Parameters).Where(p => p.Grad != null).Select(p => p.Grad!).ToList();
        using (Autograd.NoGrad())
            foreach (var g in grads)
            {
                // Σg² per tensor in float64 on the CPU (a tensor reduction, no copy of the gradient to managed memory);
                // a device reduces in its F32 kernels (as torch's clip_grad_norm_ does for F32 gradients on a GPU).
                using var wide = g.DType == DType.F64 || g.Device.Type != DeviceType.Cpu ? g.Contiguous() : g.To(DType.F64);
                using var squares = wide.Mul(wide);
                using var total = squares.Sum();
                sq += total.Item();
            }
        double norm = Math.Sqrt(sq);
        double coef = maxNorm / (norm + 1e-6);
        if (coef < 1)
            using (Autograd.NoGrad())
                foreach (var g in grads) g.MulInPlace(coef);
        return norm;
    }

    /// <summary>
    /// The optimizer's state for a checkpoint: <c>state.{i}.{k}</c> for the k-th state tensor of the i-th parameter (in
    /// group order, as torch numbers them) and <c>step</c>. The tensors are the optimizer's own; save them, do not keep them.
    /// </summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var result = new Dictionary<string, Tensor>();
        var all = Groups.SelectMany(g => g.Parameters).ToList();
        for (int i = 0; i < all.Count; i++)
        {
            if (State.TryGetValue(StateKey(all[i]), out var s))
                for (int k = 0; k < s.Length; k++) result[$"state.{i}.{k}"] = s[k];
            if (_masters.TryGetValue(all[i], out var master)) result[$"master.{i}"] = master;
        }
        result["step"] = Tensor.Scalar(StepCount, DType.I64);
        return result;
    }

    /// <summary>Restores state saved by <see cref="StateDict"/> (same parameters, same order).</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        var all = Groups.SelectMany(g => g.Parameters).ToList();
        var entries = new List<(int Param, int Slot, Tensor Value)>();
        var masters = new List<(int Param, Tensor Value)>();
        foreach (var (key, value) in state)
        {
            if (key == "step") { StepCount = value.ToArray<long>()[0]; continue; }
            var parts = key.Split('.');
            if (parts.Length == 2 && parts[0] == "master" && int.TryParse(parts[1], out int mi) && mi >= 0 && mi < all.Count && IsLowPrecision(all[mi])
                && value.Shape.AsSpan().SequenceEqual(all[mi].Shape))
            {
                masters.Add((mi, value));
                continue;
            }
            if (parts.Length != 3 || parts[0] != "state" || !int.TryParse(parts[1], out int i) || !int.TryParse(parts[2], out int k) || i < 0 || i >= all.Count || k < 0)
                throw new ArgumentException($"optimizer state key '{key}' does not fit this optimizer ({all.Count} parameters)");
            if (!value.Shape.AsSpan().SequenceEqual(all[i].Shape))
                throw new ArgumentException($"optimizer state '{key}' has shape {Shapes.Format(value.Shape)}, parameter {i} has {Shapes.Format(all[i].Shape)}");
            entries.Add((i, k, value));
        }
        using var _ = Autograd.NoGrad();
        foreach (var (i, value) in masters) MasterOf(all[i]).CopyFrom(value);
        foreach (var group in entries.GroupBy(e => e.Param))
        {
            var key = IsLowPrecision(all[group.Key]) ? MasterOf(all[group.Key]) : all[group.Key];
            var slots = StateOf(key, group.Max(e => e.Slot) + 1);
            foreach (var (_, k, value) in group)
            {
                if (k >= slots.Length) throw new ArgumentException($"optimizer state for parameter {group.Key} has slot {k}; this optimizer keeps {slots.Length}");
                slots[k].CopyFrom(value);
            }
        }
    }

    /// <summary>Frees the optimizer state.</summary>
    public void Dispose()
    {
        foreach (var s in State.Values) foreach (var t in s) t.Dispose();
        State.Clear();
        foreach (var m in _masters.Values) m.Dispose();
        _masters.Clear();
        GC.SuppressFinalize(this);
    }
}

/// <summary>
/// AdamW exactly as torch.optim.AdamW: p ← p·(1 − lr·wd); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
/// p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).
/// </summary>
public sealed class AdamW(IEnumerable<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) : Optimizer(groups)
{
    /// <summary>Convenience: one group over <paramref name="parameters"/>.</summary>
    public AdamW(IEnumerable<Tensor> parameters, double lr = 1e-3, double weightDecay = 0.01)
        : this([new ParamGroup(parameters, lr, weightDecay)]) { }

    /// <inheritdoc/>
    /// <remarks>On a device, the whole group in one launch (kernels/optim.cu's adamw_multi_f32), the same step bit for bit.</remarks>
    protected override bool TryUpdateGroup(ParamGroup group, IReadOnlyList<(Tensor Target, Tensor Grad)> items)
    {
        if (items.Count < 2 || items[0].Target.Device.Type == DeviceType.Cpu) return false;
        var fused = items.Select(i => { var s = StateOf(i.Target, 2); return (i.Target, i.Grad, s[0], s[1]); }).ToList();
        double bc1 = 1 - Math.Pow(beta1, StepCount), bc2 = 1 - Math.Pow(beta2, StepCount);
        return Tensor.TryFusedAdamWMulti(fused, group.Lr, beta1, beta2, eps, group.WeightDecay, bc1, bc2);
    }

    /// <inheritdoc/>
    protected override void Update(ParamGroup group, Tensor p, Tensor grad)
    {
        var s = StateOf(p, 2);
        var (m, v) = (s[0], s[1]);
        double bc1 = 1 - Math.Pow(beta1, StepCount), bc2 = 1 - Math.Pow(beta2, StepCount);
        // On a GPU: one fused kernel, equal bit for bit to the ops below.
        if (Tensor.TryFusedAdamW(p, grad, m, v, group.Lr, beta1, beta2, eps, group.WeightDecay, bc1, bc2)) return;
        if (group.WeightDecay != 0) p.MulInPlace(1 - group.Lr * group.WeightDecay);
        m.MulInPlace(beta1);
        m.AddInPlace(grad, 1 - beta1);
        var g2 = grad.Mul(grad);
        v.MulInPlace(beta2);
        v.AddInPlace(g2, 1 - beta2);
        var denom = v.Sqrt().Mul(1 / Math.Sqrt(bc2)).Add(eps);
        var stepDir = m.Div(denom);
        p.AddInPlace(stepDir, -group.Lr / bc1);
    }
}

/// <summary>SGD with optional momentum (torch.optim.SGD without dampening or Nesterov): b ← μb + g (b = g on the
/// first step); p ← p − lr·b. Weight decay adds wd·p to g.</summary>
public sealed class Sgd(IEnumerable<ParamGroup> groups, double momentum = 0) : Optimizer(groups)
{
    /// <summary>Convenience: one group.</summary>
    public Sgd(IEnumerable<Tensor> parameters, double lr, double momentum = 0) : this([new ParamGroup(parameters, lr)], momentum) { }

    /// <inheritdoc/>
    protected override void Update(ParamGroup group, Tensor p, Tensor grad)
    {
        var g = group.WeightDecay != 0 ? grad.Add(p.Mul(group.WeightDecay)) : grad;
        if (momentum != 0)
        {
            bool first = !State.ContainsKey(p);
            var b = StateOf(p, 1)[0];
            if (first) b.CopyFrom(g);
            else { b.MulInPlace(momentum); b.AddInPlace(g); }
            g = b;
        }
        p.AddInPlace(g, -group.Lr);
    }
}
