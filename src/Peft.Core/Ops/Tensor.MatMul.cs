using Peft.Core.Cpu;

namespace Peft.Core;

// Matrix products with torch.matmul semantics. A transposed view is passed to the GEMM as a transpose flag, so
// backward's Aᵀ·G and G·Bᵀ never copy.
public sealed partial class Tensor
{
    /// <summary>
    /// torch.matmul: 1-D·1-D is a dot product; 2-D·2-D a matrix product; higher ranks are batches of matrices whose
    /// batch dims broadcast. F32 and F64; BF16/F16 operands (alone or with F32) compute in F32 and return F32. Inside
    /// <see cref="Autocast.Enable"/> the product computes in the autocast dtype instead (see <see cref="Autocast"/>).
    /// </summary>
    public Tensor MatMul(Tensor other)
    {
        if (Rank == 0 || other.Rank == 0) throw new ShapeMismatchException("MatMul needs at least 1-D operands; use Mul for scalars");
        if (Rank == 1 && other.Rank == 1)
        {
            using var a2 = Unsqueeze(0);
            using var b2 = other.Unsqueeze(1);
            using var m = a2.MatMul(b2);
            return m.Reshape();
        }
        if (Rank == 1)
        {
            using var a2 = Unsqueeze(0);
            using var m = a2.MatMul(other);
            return m.Squeeze(-2);
        }
        if (other.Rank == 1)
        {
            using var b2 = other.Unsqueeze(1);
            using var m = MatMul(b2);
            return m.Squeeze(-1);
        }
        if (Rank > 2 && other.Rank == 2)
        {
            // [..., M, K]·[K, N]: one GEMM with M' = ∏(leading)·M instead of a batch of small ones; the backward
            // then forms dW as a single Aᵀ·G over every row rather than summing per-batch copies.
            int k = Size(-1);
            using var flat = Reshape(-1, k);
            using var y = flat.MatMul(other);
            return y.Reshape([.. _shape[..^1], other._shape[1]]);
        }
        if (Autocast.Current is { } low && DType != DType.F64 && other.DType != DType.F64) return AutocastMatMul(this, other, low);
        var r = MatMulKernel(this, other);
        return Autograd.Record(r, "MatMul", [this, other], saved =>
        {
        // dA needs B and dB needs A: save only what a wanted gradient reads.
        var a = other.RequiresGrad ? saved.Save(this) : this;
        var b = RequiresGrad ? saved.Save(other) : other;
        return (g, need) =>
        {
            Tensor? ga = null, gb = null;
            if (need[0])
            {
                using var bt = b.Transpose(-1, -2);
                using var full = MatMulKernel(g, bt);
                ga = Owned(full.SumToShape(a._shape), full);
            }
            if (need[1])
            {
                using var at = a.Transpose(-1, -2);
                using var full = MatMulKernel(at, g);
                gb = Owned(full.SumToShape(b._shape), full);
            }
            return [ga, gb];
        };
        });
    }

    /// <summary>y = x·Wᵀ + b with W of shape [out, in] (torch.nn.functional.linear).</summary>
    public Tensor Linear(Tensor weight, Tensor? bias = null)
    {
        if (weight.Rank != 2) throw new ShapeMismatchException($"Linear weight must be 2-D [out, in], got {Shapes.Format(weight._shape)}");
        if (Size(-1) != weight._shape[1])
            throw new ShapeMismatchException($"Linear: input features {Size(-1)} do not match weight {Shapes.Format(weight._shape)} (expects [out, in])");
        using var wt = weight.Transpose(0, 1);
        var y = MatMul(wt);
        if (bias == null) return y;
        using (y) return y.Add(bias);
    }

    private static void CheckMatMulOperands(Tensor a, Tensor b)
    {
        foreach (var t in new[] { a, b })
        {
            t.ThrowIfDisposed();
            if (t.DType is not (DType.F32 or DType.F64 or DType.BF16 or DType.F16))
                throw new DTypeMismatchException($"MatMul supports F32, F64, BF16 and F16, got {t.DType}");
        }
        if ((a.DType == DType.F64) != (b.DType == DType.F64))
            throw new DTypeMismatchException($"MatMul: dtypes differ ({a.DType} vs {b.DType})");
        if (a._shape[^1] != b._shape[^2])
            throw new ShapeMismatchException($"MatMul: {Shapes.Format(a._shape)} · {Shapes.Format(b._shape)} — inner dimensions {a._shape[^1]} and {b._shape[^2]} differ");
    }

    /// <summary>Batched GEMM on ≥2-D operands (no graph node).</summary>
    internal static unsafe Tensor MatMulKernel(Tensor a, Tensor b)
    {
        CheckMatMulOperands(a, b);
        int m = a._shape[^2], k = a._shape[^1], n = b._shape[^1];
        var batch = Shapes.Broadcast(a._shape.AsSpan(0, a.Rank - 2), b._shape.AsSpan(0, b.Rank - 2));
        var outShape = batch.Concat([m, n]).ToArray();
        if (DeviceKernels("MatMul", a, b) is { } device) return device.MatMul(a, b, outShape);
        var outDType = a.DType == DType.F64 ? DType.F64 : DType.F32;
        var c = Allocate(outShape, outDType, zero: false);
        long batches = Shapes.NumEl(batch);
        if (batches == 0 || m == 0 || n == 0) return c;

        using var ad = MatrixLayout(a, out bool ta, out long lda);
        using var bd = MatrixLayout(b, out bool tb, out long ldb);
        var aBatchStrides = Shapes.BroadcastStrides(ad._shape.AsSpan(0, a.Rank - 2), ad._strides.AsSpan(0, a.Rank - 2), batch);
        var bBatchStrides = Shapes.BroadcastStrides(bd._shape.AsSpan(0, b.Rank - 2), bd._strides.AsSpan(0, b.Rank - 2), batch);
        int ea = ad.DType.SizeOf(), eb = bd.DType.SizeOf(), ec = c.DType.SizeOf();
        byte* pa = ad.Ptr<byte>(), pb = bd.Ptr<byte>(), pc = c.Ptr<byte>();

        void One(long bi, int threads)
        {
            long oa = 0, ob = 0, rem = bi;
            for (int d = batch.Length - 1; d >= 0; d--)
            {
                long idx = rem % batch[d];
                rem /= batch[d];
                oa += idx * aBatchStrides[d];
                ob += idx * bBatchStrides[d];
            }
            byte* cp = pc + bi * m * n * ec;
            if (outDType == DType.F64)
                Gemm.Dgemm(m, n, k, 1, (double*)(pa + oa * ea), lda, ta, (double*)(pb + ob * eb), ldb, tb, 0, (double*)cp, n);
            else
                Gemm.Sgemm(m, n, k, 1, new Gemm.Operand(pa + oa * ea, lda, ta, Gemm.ElementOf(ad.DType)),
                    new Gemm.Operand(pb + ob * eb, ldb, tb, Gemm.ElementOf(bd.DType)), 0, (float*)cp, n, threads);
        }
        // Many small matrices (attention heads): one thread per matrix. Few large ones: threads inside each GEMM.
        if (batches > 1 && (long)m * n * k < 4_000_000) CpuParallel.For(batches, bi => One(bi, 1));
        else for (long bi = 0; bi < batches; bi++) One(bi, 0);
        return c;
    }

    /// <summary>Describes the last two dims as a row-major (trans=false) or column-major (trans=true) matrix with
    /// leading dimension <paramref name="ld"/>, copying only when they are neither.</summary>
    private static Tensor MatrixLayout(Tensor t, out bool trans, out long ld)
    {
        int rows = t._shape[^2], cols = t._shape[^1];
        long rs = t._strides[^2], cs = t._strides[^1];
        if ((cs == 1 || cols == 1) && rs >= cols) { trans = false; ld = Math.Max(rs, cols); return t.ViewOf(t._shape, t._strides, t.Offset); }
        if ((rs == 1 || rows == 1) && cs >= rows) { trans = true; ld = Math.Max(cs, rows); return t.ViewOf(t._shape, t._strides, t.Offset); }
        var c = t.ContiguousCopy();
        trans = false;
        ld = cols;
        return c;
    }
}
