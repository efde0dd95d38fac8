namespace Peft.Core;

// Fused ops of LoRA.
public sealed partial class Tensor
{
    /// <summary>
    /// A mixed-adapter LoRA batch as one op (SGMV): row r of the result is <paramref name="baseOutput"/>[r] +
    /// s_a·(x[r]·A_aᵀ)·B_aᵀ for its adapter a = <paramref name="rowAdapter"/>[r], or the base row where that is −1.
    /// x [rows, K] and baseOutput [rows, C]; adapter i has A [r_i, K] and B [C, r_i] (LoRA's lora_A / lora_B weights) and
    /// scale s_i; all F32 on one device. On CUDA this is kernels/sgmv.cu (two launches whatever the number of adapters,
    /// no rows gathered or copied); on the CPU it is the reference loop. Inference only: it records no autograd node
    /// and refuses operands that would need one.
    /// </summary>
    public static Tensor SegmentedLora(Tensor baseOutput, Tensor x, int[] rowAdapter, IReadOnlyList<Tensor> a, IReadOnlyList<Tensor> b, IReadOnlyList<double> scales)
    {
        const string op = "SegmentedLora";
        if (x.Rank != 2 || baseOutput.Rank != 2 || x.Size(0) != baseOutput.Size(0))
            throw new ShapeMismatchException($"{op} takes x [rows, K] and the base output [rows, C], got {Shapes.Format(x._shape)} and {Shapes.Format(baseOutput._shape)}");
        int rows = x.Size(0), k = x.Size(1), c = baseOutput.Size(1);
        if (rowAdapter.Length != rows) throw new ArgumentException($"{op}: {rowAdapter.Length} row adapters for {rows} rows");
        if (a.Count != b.Count || a.Count != scales.Count) throw new ArgumentException($"{op}: {a.Count} A factors, {b.Count} B factors and {scales.Count} scales");
        foreach (int i in rowAdapter)
            if (i < -1 || i >= a.Count) throw new ArgumentOutOfRangeException(nameof(rowAdapter), $"{op}: row adapter {i} is not −1 or one of the {a.Count} adapters");
        var operands = new List<Tensor> { baseOutput, x };
        for (int i = 0; i < a.Count; i++)
        {
            if (a[i].Rank != 2 || b[i].Rank != 2 || a[i].Size(1) != k || b[i].Size(0) != c || b[i].Size(1) != a[i].Size(0))
                throw new ShapeMismatchException($"{op}: adapter {i} has A {Shapes.Format(a[i]._shape)} and B {Shapes.Format(b[i]._shape)}; with x [rows, {k}] and output [rows, {c}] they must be [r, {k}] and [{c}, r]");
            operands.Add(a[i]);
            operands.Add(b[i]);
        }
        if (operands.Any(t => t.DType != DType.F32))
            throw new DTypeMismatchException($"{op} takes F32 operands, got {string.Join(", ", operands.Select(t => t.DType).Distinct())}");
        if (Autograd.IsGradEnabled && operands.Any(t => t.RequiresGrad))
            throw new InvalidOperationException($"{op} is for inference and records no gradient; run it under Autograd.NoGrad() or on tensors that do not require grad");
        var device = DeviceKernels(op, operands.ToArray());
        var dense = operands.Select(t => t.ContiguousData()).ToList();
        try
        {
            var av = dense.Skip(2).Where((_, i) => i % 2 == 0).ToArray();
            var bv = dense.Skip(2).Where((_, i) => i % 2 == 1).ToArray();
            var s = scales.Select(v => (float)v).ToArray();
            if (device != null) return device.SegmentedLora(dense[0], dense[1], rowAdapter, av, bv, s);
            var result = dense[0].Clone();
            unsafe
            {
                var ap = new float*[av.Length];
                var bp = new float*[bv.Length];
                for (int i = 0; i < av.Length; i++) { ap[i] = av[i].Ptr<float>(); bp[i] = bv[i].Ptr<float>(); }
                Cpu.SegmentedLora.Apply(result.Ptr<float>(), dense[1].Ptr<float>(), rows, k, c, rowAdapter, ap, bp, av.Select(t => t.Size(0)).ToArray(), s);
            }
            return result;
        }
        finally
        {
            foreach (var t in dense) t.Dispose();
        }
    }
}
