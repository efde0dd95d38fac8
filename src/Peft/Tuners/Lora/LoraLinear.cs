using Peft.Core;
using Peft.Core.Linalg;
using Peft.Nn;

namespace Peft;

/// <summary>
/// LoRA on a Linear or GPT-2 Conv1D, laid out as PEFT lays it out in memory: <c>base_layer</c>,
/// <c>lora_A.&lt;adapter&gt;</c> (Linear in→r, no bias), <c>lora_B.&lt;adapter&gt;</c> (Linear r→out),
/// <c>lora_dropout.&lt;adapter&gt;</c> and, for DoRA, <c>lora_magnitude_vector.&lt;adapter&gt;.weight</c>.
/// y = base(x) + s·B(A(dropout(x))). The frozen base weight never gets a gradient: autograd only builds dA and dB.
/// </summary>
public sealed class LoraLinear : LoraLayer
{
    private readonly Dictionary<string, Tensor> _doraNormCache = new();

    /// <summary>Wraps <paramref name="baseLayer"/> (a <see cref="Linear"/> or <see cref="Conv1D"/>).</summary>
    public LoraLinear(Module baseLayer)
        : base(baseLayer)
    {
        RegisterModule("lora_dropout", new ModuleDict<Dropout>());
        RegisterModule("lora_A", new ModuleDict<Linear>());
        RegisterModule("lora_B", new ModuleDict<Linear>());
        RegisterModule("lora_magnitude_vector", new ModuleDict<DoraMagnitude>());
    }

    private ModuleDict<Linear> LoraA => Child<ModuleDict<Linear>>("lora_A");
    private ModuleDict<Linear> LoraB => Child<ModuleDict<Linear>>("lora_B");
    private ModuleDict<Dropout> DropoutDict => Child<ModuleDict<Dropout>>("lora_dropout");
    private ModuleDict<DoraMagnitude> Magnitudes => Child<ModuleDict<DoraMagnitude>>("lora_magnitude_vector");

    /// <inheritdoc/>
    public override IEnumerable<string> Adapters => LoraA.Keys;

    /// <summary>True when <paramref name="adapter"/> is a DoRA adapter (not allowed in mixed batches, as in PEFT).</summary>
    public bool UsesDora(string adapter) => Magnitudes.Contains(adapter);

    /// <summary>
    /// Adds (or replaces) an adapter. <paramref name="init"/>: "true" (A ~ U(±1/√in) — kaiming_uniform(a=√5) — and B = 0,
    /// so the layer starts as the base), "gaussian" (A ~ N(0, 1/r), B = 0) or "false" (both random as nn.Linear).
    /// With <paramref name="useDora"/> the magnitude starts as the row norms of W + s·BA.
    /// </summary>
    public override void UpdateLayer(string adapter, int r, double alpha, double dropout, string init, bool useRslora, bool loraBias, bool useDora)
    {
        CheckRank(r);
        if (useDora && loraBias) throw new NotSupportedException("DoRA cannot be combined with lora_bias (as in PEFT)");
        if (BaseLayer is QuantizedLinear && (useDora || IsDataDriven(init)))
            throw new NotSupportedException($"{(useDora ? "DoRA" : init)} on a quantized base is not implemented yet");
        var a = new Linear(InFeatures, r, bias: false);
        var b = new Linear(r, OutFeatures, bias: loraBias);
        using (Autograd.NoGrad())
        {
            switch (init)
            {
                case "true":
                    b.Weight.FillInPlace(0);
                    b.Bias?.FillInPlace(0);
                    break;
                case "gaussian":
                    using (var g = Tensor.Randn(a.Weight.Shape, null, a.Weight.DType, 0, 1.0 / r)) a.Weight.CopyFrom(g);
                    b.Weight.FillInPlace(0);
                    b.Bias?.FillInPlace(0);
                    break;
                case "false":
                    break; // nn.Linear's own init for both factors: a non-trivial adapter
                case "olora":
                case "pissa":
                case var pissa when pissa.StartsWith("pissa_niter_", StringComparison.Ordinal):
                    break; // data-driven: set below, once the scaling is known
                default:
                    throw new NotSupportedException($"init_lora_weights '{init}' is not supported yet (true, false, gaussian, pissa, pissa_niter_K, olora)");
            }
        }
        LoraA.Set(adapter, a);
        LoraB.Set(adapter, b);
        DropoutDict.Set(adapter, new Dropout(dropout));
        SetRankAndScaling(adapter, r, alpha, useRslora);
        if (IsDataDriven(init)) DataDrivenInit(adapter, r, init);
        if (useDora)
        {
            using var norm = WeightNorm(adapter);
            Magnitudes.Set(adapter, new DoraMagnitude(norm));
        }
        else if (Magnitudes.Contains(adapter)) Magnitudes.Remove(adapter);
    }

    /// <summary>PiSSA and OLoRA inits factorise the base weight (and change it), unlike the random ones.</summary>
    private static bool IsDataDriven(string init) => init == "olora" || init.StartsWith("pissa", StringComparison.Ordinal);

    /// <summary>
    /// PiSSA (W ≈ U·S·Vᵀ: A = √(S_r/s)·V_rᵀ, B = U_r·√(S_r/s)) or OLoRA (W = Q·R: A = R[:r], B = Q[:, :r]); the base keeps
    /// the residual W − s·B·A, so the model's output is unchanged at init, as PEFT's pissa_init / olora_init.
    /// "pissa_niter_K" finds the top-r subspace with a randomized range finder and K power iterations (PEFT uses
    /// torch's svd_lowrank; its random stream cannot be replayed, so the factors differ from Python's, not the method).
    /// </summary>
    private void DataDrivenInit(string adapter, int r, string init)
    {
        using var _ = Autograd.NoGrad();
        if (init == "olora" && FanInFanOut)
            throw new NotSupportedException("OLoRA init on a Conv1D (fan_in_fan_out) layer is not supported (PEFT factorises the stored [in, out] weight, which does not fit lora_B)");
        int outF = OutFeatures, inF = InFeatures;
        double[,] w;
        using (var wOutIn = WeightOutIn()) w = Decompositions.Matrix(wOutIn);
        double s = Scaling(adapter);
        var aVals = new double[r * inF];
        var bVals = new double[outF * r];
        if (init == "olora")
        {
            var (q, rr) = Decompositions.Qr(w);
            for (int k = 0; k < r; k++)
            {
                for (int j = 0; j < inF; j++) aVals[k * inF + j] = rr[k, j];
                for (int i = 0; i < outF; i++) bVals[i * r + k] = q[i, k];
            }
        }
        else
        {
            var (u, sv, vt) = init == "pissa" ? ExactTopR(w, r) : RandomizedTopR(w, r, int.Parse(init["pissa_niter_".Length..], System.Globalization.CultureInfo.InvariantCulture));
            for (int k = 0; k < r; k++)
            {
                double root = Math.Sqrt(sv[k] / s);
                for (int j = 0; j < inF; j++) aVals[k * inF + j] = root * vt[k, j];
                for (int i = 0; i < outF; i++) bVals[i * r + k] = u[i, k] * root;
            }
        }
        var (aT, bT) = (LoraA[adapter].Weight, LoraB[adapter].Weight);
        using (var at = Tensor.FromArray(aVals, [r, inF])) aT.CopyFrom(at);   // CopyFrom converts the dtype
        using (var bt = Tensor.FromArray(bVals, [outF, r])) bT.CopyFrom(bt);
        using var delta = DeltaWeight(adapter);
        BaseWeight.AddInPlace(delta, -1);
    }

    private static (double[,] U, double[] S, double[,] Vt) ExactTopR(double[,] w, int r)
    {
        var (u, s, v) = Decompositions.Svd(w);
        return (u, s, Decompositions.Transpose(v));
    }

    /// <summary>Halko et al.'s randomized SVD: orthonormal basis of W·Ω refined by power iterations, then an exact SVD
    /// of the small projected matrix.</summary>
    private static (double[,] U, double[] S, double[,] Vt) RandomizedTopR(double[,] w, int r, int powerIterations)
    {
        int m = w.GetLength(0), n = w.GetLength(1);
        int q = Math.Min(Math.Min(m, n), r + 4); // a little oversampling, as svd_lowrank's q ≥ r
        double[,] omega;
        using (var omegaT = Tensor.Randn([n, q], null, DType.F64)) omega = Decompositions.Matrix(omegaT);
        var wt = Decompositions.Transpose(w);
        var (basis, _) = Decompositions.Qr(Decompositions.MatMul(w, omega));
        for (int it = 0; it < powerIterations; it++)
        {
            var (z, _) = Decompositions.Qr(Decompositions.MatMul(wt, basis));
            (basis, _) = Decompositions.Qr(Decompositions.MatMul(w, z));
        }
        var small = Decompositions.MatMul(Decompositions.Transpose(basis), w); // q×n
        var (ub, s, v) = Decompositions.Svd(small);
        return (Decompositions.MatMul(basis, ub), s, Decompositions.Transpose(v));
    }


    /// <summary>s·B·A as [out, in] (no transpose).</summary>
    private Tensor ScaledBa(string adapter)
    {
        using var ba = LoraB[adapter].Weight.MatMul(LoraA[adapter].Weight);
        return ba.Mul(Scaling(adapter));
    }

    /// <summary>W + s·BA as [out, in].</summary>
    private Tensor WeightPlusDelta(string adapter)
    {
        using var w = WeightOutIn();
        using var delta = ScaledBa(adapter);
        return w.Add(delta);
    }

    /// <summary>‖W + s·BA‖ per output row, as PEFT's DoRA get_weight_norm (computed without gradients).</summary>
    private Tensor WeightNorm(string adapter)
    {
        using var _ = Autograd.NoGrad();
        using var sum = WeightPlusDelta(adapter);
        return sum.Norm(2, [1]);
    }

    /// <inheritdoc/>
    protected override Tensor AddAdapterOutput(string adapter, Tensor x, Tensor result)
    {
        var drop = DropoutDict[adapter];
        using var dx = drop.Forward(x);
        using var t = LoraA[adapter].Forward(dx);
        using var u = LoraB[adapter].Forward(t);
        double s = Scaling(adapter);
        if (!UsesDora(adapter))
        {
            using var scaled = u.Mul(s);
            return result.Add(scaled);
        }
        // DoRA (PEFT's DoraLinearLayer): y += (m/‖W+sBA‖ − 1)·(base(dx) − b) + (m/‖W+sBA‖)·s·B(A(dx)), the norm detached.
        using var norm = WeightNorm(adapter);
        using var ratio = Magnitudes[adapter].Weight.Div(norm);
        using var ratioMinus1 = ratio.Sub(1.0);
        bool dropoutActive = drop.IsTraining && drop.P > 0;
        using var baseOut = dropoutActive ? Child<IUnaryModule>("base_layer").Forward(dx) : result.Contiguous(); // gradients flow to x through it
        using var noBias = BaseBias is { } bias ? baseOut.Sub(bias) : baseOut.Contiguous();
        using var term1 = noBias.Mul(ratioMinus1);
        using var scaledLora = u.Mul(s);
        using var term2 = scaledLora.Mul(ratio);
        using var both = term1.Add(term2);
        return result.Add(both);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// On a device, an inference batch of plain LoRA adapters (no DoRA, no lora_bias, F32, rank ≤ 64) runs as one
    /// SGMV op (<see cref="Tensor.SegmentedLora"/>: two kernel launches on CUDA, rows read and written in place) instead
    /// of gathering each adapter's rows. On the CPU the per-adapter path stays: its grouped products are faster there.
    /// </remarks>
    protected override Tensor? FusedMixedBatch(Tensor x, string[] perSample, Tensor baseOutput)
    {
        if (x.Device.Type == DeviceType.Cpu || IsTraining || x.DType != DType.F32 || baseOutput.DType != DType.F32 || x.Size(0) == 0) return null;
        var used = perSample.Where(n => n != PeftModel.BaseAdapterName).Distinct().ToList();
        if (used.Count == 0) return null;
        foreach (var name in used)
        {
            var (a, b) = (LoraA[name].Weight, LoraB[name].Weight);
            if (UsesDora(name) || LoraB[name].Bias != null || a.DType != DType.F32 || b.DType != DType.F32 || a.Size(0) > 64) return null;
            if (Autograd.IsGradEnabled && (a.RequiresGrad || b.RequiresGrad || x.RequiresGrad)) return null;
        }
        int k = x.Size(-1), c = baseOutput.Size(-1);
        long rowsPerSample = x.NumEl / ((long)x.Size(0) * k);
        var rowAdapter = new int[checked((int)(x.NumEl / k))];
        for (int row = 0; row < rowAdapter.Length; row++)
            rowAdapter[row] = used.IndexOf(perSample[row / rowsPerSample]);   // −1 for the base
        using var x2 = x.Reshape(-1, k);
        using var y2 = baseOutput.Reshape(-1, c);
        using var fused = Tensor.SegmentedLora(y2, x2, rowAdapter, used.Select(n => LoraA[n].Weight).ToList(), used.Select(n => LoraB[n].Weight).ToList(),
            used.Select(Scaling).ToList());
        return fused.Reshape(baseOutput.Shape);
    }

    /// <inheritdoc/>
    public override Tensor DeltaWeight(string adapter)
    {
        using var _ = Autograd.NoGrad();
        using var scaled = ScaledBa(adapter);
        return InBaseLayout(scaled);
    }

    /// <summary>DoRA merges W' = (m/‖W+ΔW‖)·(W+ΔW) row-wise and caches the norm for unmerging; plain LoRA adds ΔW.</summary>
    protected override Tensor MergedWeight(string adapter)
    {
        if (!UsesDora(adapter)) return base.MergedWeight(adapter);
        using var sum = WeightPlusDelta(adapter);   // Merge runs without gradients, so this is WeightNorm's input
        using var norm = sum.Norm(2, [1]);
        using var scale = Magnitudes[adapter].Weight.Div(norm);
        using var col = scale.Unsqueeze(1);
        using var merged = sum.Mul(col);
        if (_doraNormCache.Remove(adapter, out var stale)) stale.Dispose();
        _doraNormCache[adapter] = norm.Clone().KeepAlive();
        return InBaseLayout(merged);
    }

    /// <inheritdoc/>
    protected override Tensor UnmergedWeight(string adapter)
    {
        if (!UsesDora(adapter)) return base.UnmergedWeight(adapter);
        if (!_doraNormCache.Remove(adapter, out var norm)) throw new InvalidOperationException($"DoRA adapter '{adapter}' has no cached norm to unmerge with");
        using (norm)
        {
            using var w = WeightOutIn();
            using var scale = Magnitudes[adapter].Weight.Div(norm);
            using var col = scale.Unsqueeze(1);
            using var unscaled = w.Div(col);
            using var delta = ScaledBa(adapter);
            using var restored = unscaled.Sub(delta);
            return InBaseLayout(restored);
        }
    }

    /// <inheritdoc/>
    protected override void MergeBias(string adapter, int sign)
    {
        if (LoraB[adapter].Bias is { } lb) BaseBias!.AddInPlace(lb, sign * Scaling(adapter));
    }

    /// <inheritdoc/>
    public override (Tensor A, Tensor B) Factors(string adapter) => (LoraA[adapter].Weight, LoraB[adapter].Weight);

    /// <summary>Releases the DoRA norms cached for unmerging (a layer unloaded while merged never unmerges).</summary>
    protected override void DisposeOwnedState()
    {
        foreach (var n in _doraNormCache.Values) n.Dispose();
        _doraNormCache.Clear();
    }

    /// <inheritdoc/>
    protected override void RemoveFactors(string adapter)
    {
        LoraA.Remove(adapter);
        LoraB.Remove(adapter);
        DropoutDict.Remove(adapter);
        if (Magnitudes.Contains(adapter)) Magnitudes.Remove(adapter);
    }
}

/// <summary>DoRA's learned magnitude m (one per output feature), stored as PEFT does: <c>lora_magnitude_vector.&lt;a&gt;.weight</c>.</summary>
public sealed class DoraMagnitude : Module
{
    /// <summary>Creates the magnitude from initial values (copied).</summary>
    public DoraMagnitude(Tensor initial)
    {
        using var _ = Autograd.NoGrad();
        RegisterParameter("weight", initial.Clone());
    }

    /// <summary>m.</summary>
    public Tensor Weight => Parameter("weight");
}
