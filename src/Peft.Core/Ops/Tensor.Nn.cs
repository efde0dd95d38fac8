using Peft.Core.Cpu;
using Peft.Core.Random;

namespace Peft.Core;

/// <summary>How a per-element loss is combined.</summary>
public enum Reduction
{
    /// <summary>Average over the counted elements (for cross-entropy: the non-ignored targets).</summary>
    Mean,
    /// <summary>Sum.</summary>
    Sum,
    /// <summary>One value per element.</summary>
    None,
}

// Neural-network ops. Softmax, norms and cross-entropy are fused kernels with explicit backward; their composite
// versions (in the tests) are the oracles.
public sealed partial class Tensor
{
    /// <summary>Softmax along <paramref name="dim"/>.</summary>
    public Tensor Softmax(int dim = -1) => SoftmaxImpl(dim, log: false);

    /// <summary>log(softmax(x)) along <paramref name="dim"/>, computed stably.</summary>
    public Tensor LogSoftmax(int dim = -1) => SoftmaxImpl(dim, log: true);

    private unsafe Tensor SoftmaxImpl(int dim, bool log)
    {
        string name = log ? "LogSoftmax" : "Softmax";
        if (DeviceKernels(name, this) is null) CheckFloatOperands(name, this);
        int d = Shapes.NormalizeDim(dim, Rank);
        if (Rank == 0) throw new ShapeMismatchException("Softmax of a scalar");
        if (d != Rank - 1)
        {
            using var moved = Transpose(d, -1);
            using var s = moved.SoftmaxImpl(-1, log);
            return s.Transpose(d, -1);
        }
        if (DeviceKernels(name, this) is { } k) return DeviceSoftmax(k, log);
        using var x = ContiguousData();
        var y = Allocate(_shape, DType, zero: false);
        int n = _shape[^1];
        long rows = NumEl / Math.Max(n, 1);
        if (DType == DType.F64) RowSoftmax<double>.Forward(x.Ptr<double>(), y.Ptr<double>(), rows, n, log);
        else RowSoftmax<float>.Forward(x.Ptr<float>(), y.Ptr<float>(), rows, n, log);
        return Autograd.Record(y, log ? "LogSoftmax" : "Softmax", [this], saved =>
        {
        var ys = saved.Save(y);
        return (g, _) =>
        {
            using var gc = g.ContiguousData();
            var dx = Allocate(y._shape, y.DType, zero: false);
            if (y.DType == DType.F64) RowSoftmax<double>.Backward(ys.Ptr<double>(), gc.Ptr<double>(), dx.Ptr<double>(), rows, n, log);
            else RowSoftmax<float>.Backward(ys.Ptr<float>(), gc.Ptr<float>(), dx.Ptr<float>(), rows, n, log);
            return [dx];
        };
        });
    }

    private Tensor DeviceSoftmax(IDeviceKernels k, bool log)
    {
        string name = log ? "LogSoftmax" : "Softmax";
        using var wide = WidenOnDevice(k, name, this);
        using var x = (wide ?? this).ContiguousData();
        var y = k.Softmax(x, log);
        return Autograd.Record(y, name, [this], saved =>
        {
            var ys = saved.Save(y);
            return (g, _) =>
            {
                using var gc = g.ContiguousData();
                return [k.SoftmaxBackward(ys, gc, log)];
            };
        });
    }

    /// <summary>LayerNorm over the last dim with optional affine weight and bias (torch.nn.functional.layer_norm).</summary>
    public Tensor LayerNorm(Tensor? weight, Tensor? bias, double eps = 1e-5) => NormImpl(weight, bias, eps, rms: false);

    /// <summary>RMSNorm over the last dim: x / √(mean(x²) + ε) · weight (LLaMA, T5).</summary>
    public Tensor RmsNorm(Tensor? weight, double eps = 1e-6) => NormImpl(weight, null, eps, rms: true);

    private Tensor NormImpl(Tensor? weight, Tensor? bias, double eps, bool rms)
    {
        string name = rms ? "RmsNorm" : "LayerNorm";
        var device = DeviceKernels(name, this, weight, bias);
        if (device == null) CheckFloatOperands(name, [this, .. new[] { weight, bias }.OfType<Tensor>()]);
        int d = Size(-1);
        foreach (var p in new[] { weight, bias })
            if (p != null && (p.Rank != 1 || p._shape[0] != d))
                throw new ShapeMismatchException($"{name}: parameter of shape {Shapes.Format(p._shape)} does not match the normalized size {d}");
        var (y, mean, rstd) = device == null ? CpuNorm(this, weight, bias, eps, rms) : DeviceNorm(device, name, this, weight, bias, eps, rms);
        var inputs = new List<Tensor> { this };
        if (weight != null) inputs.Add(weight);
        if (bias != null) inputs.Add(bias);
        bool kept = false;
        var recorded = Autograd.Record(y, name, inputs.ToArray(), saved =>
        {
        kept = true;
        var self = saved.Save(this);
        var wSaved = weight == null ? null : saved.Save(weight);
        saved.Own(mean.KeepAlive());
        saved.Own(rstd.KeepAlive());
        return (g, need) =>
        {
            var (dx, xhat) = device == null ? CpuNormBackward(self, g, mean, rstd, wSaved, rms) : DeviceNormBackward(device, name, self, g, mean, rstd, wSaved, rms);
            using var _ = xhat;
            var grads = new Tensor?[inputs.Count];
            grads[0] = need[0] ? dx : null;
            if (!need[0]) dx.Dispose();
            int k = 1;
            if (weight != null) { if (need[k]) { using var gx = g.Mul(xhat); grads[k] = Owned(gx.SumToShape(weight._shape), gx); } k++; }
            if (bias != null && need[k]) grads[k] = g.SumToShape(bias._shape);
            return grads;
        };
        });
        if (!kept) { mean.Dispose(); rstd.Dispose(); } // inference: statistics are not needed
        return recorded;
    }

    /// <summary>The fused norm on the CPU: output, per-row mean and 1/σ.</summary>
    private static unsafe (Tensor Y, Tensor Mean, Tensor Rstd) CpuNorm(Tensor self, Tensor? weight, Tensor? bias, double eps, bool rms)
    {
        int d = self.Size(-1);
        long rows = self.NumEl / Math.Max(d, 1);
        using var x = self.ContiguousData();
        using var w = weight?.ContiguousData();
        using var b = bias?.ContiguousData();
        var y = Allocate(self._shape, self.DType, zero: false);
        var mean = Allocate([(int)rows], self.DType, zero: false);
        var rstd = Allocate([(int)rows], self.DType, zero: false);
        if (self.DType == DType.F64)
            Norms<double>.Forward(x.Ptr<double>(), y.Ptr<double>(), mean.Ptr<double>(), rstd.Ptr<double>(), w == null ? null : w.Ptr<double>(), b == null ? null : b.Ptr<double>(), rows, d, eps, rms);
        else
            Norms<float>.Forward(x.Ptr<float>(), y.Ptr<float>(), mean.Ptr<float>(), rstd.Ptr<float>(), w == null ? null : w.Ptr<float>(), b == null ? null : b.Ptr<float>(), rows, d, eps, rms);
        return (y, mean, rstd);
    }

    /// <summary>Its backward on the CPU: dx and x̂.</summary>
    private static unsafe (Tensor Dx, Tensor Xhat) CpuNormBackward(Tensor self, Tensor g, Tensor mean, Tensor rstd, Tensor? weight, bool rms)
    {
        int d = self.Size(-1);
        long rows = self.NumEl / Math.Max(d, 1);
        using var gc = g.ContiguousData();
        using var xs = self.ContiguousData();
        using var ws = weight?.ContiguousData();
        var dx = Allocate(self._shape, self.DType, zero: false);
        var xhat = Allocate(self._shape, self.DType, zero: false);
        if (self.DType == DType.F64)
            Norms<double>.Backward(xs.Ptr<double>(), gc.Ptr<double>(), mean.Ptr<double>(), rstd.Ptr<double>(), ws == null ? null : ws.Ptr<double>(), dx.Ptr<double>(), xhat.Ptr<double>(), rows, d, rms);
        else
            Norms<float>.Backward(xs.Ptr<float>(), gc.Ptr<float>(), mean.Ptr<float>(), rstd.Ptr<float>(), ws == null ? null : ws.Ptr<float>(), dx.Ptr<float>(), xhat.Ptr<float>(), rows, d, rms);
        return (dx, xhat);
    }

    /// <summary>The fused norm on a device (16-bit inputs widened to F32 first, as the device kernels compute in F32).</summary>
    private static (Tensor Y, Tensor Mean, Tensor Rstd) DeviceNorm(IDeviceKernels k, string name, Tensor self, Tensor? weight, Tensor? bias, double eps, bool rms)
    {
        using var wx = WidenOnDevice(k, name, self);
        using var ww = weight == null ? null : WidenOnDevice(k, name, weight);
        using var wb = bias == null ? null : WidenOnDevice(k, name, bias);
        using var x = (wx ?? self).ContiguousData();
        using var w = (ww ?? weight)?.ContiguousData();
        using var b = (wb ?? bias)?.ContiguousData();
        return k.Norm(x, w, b, eps, rms);
    }

    /// <summary>Its backward on a device; the saved inputs are widened and made dense again here rather than kept twice.</summary>
    private static (Tensor Dx, Tensor Xhat) DeviceNormBackward(IDeviceKernels k, string name, Tensor self, Tensor g, Tensor mean, Tensor rstd, Tensor? weight, bool rms)
    {
        using var gw = WidenOnDevice(k, name, g);
        using var gc = (gw ?? g).ContiguousData();
        using var sx = WidenOnDevice(k, name, self);
        using var xs = (sx ?? self).ContiguousData();
        using var sw = weight == null ? null : WidenOnDevice(k, name, weight);
        using var ws = (sw ?? weight)?.ContiguousData();
        return k.NormBackward(xs, gc, mean, rstd, ws, rms);
    }

    /// <summary>
    /// Cross-entropy between logits [..., C] and integer targets [...]: targets equal to <paramref name="ignoreIndex"/>
    /// contribute nothing (and are not counted by the mean); <paramref name="labelSmoothing"/> mixes the one-hot
    /// target with the uniform distribution as torch does.
    /// </summary>
    public Tensor CrossEntropy(Tensor targets, long ignoreIndex = -100, double labelSmoothing = 0, Reduction reduction = Reduction.Mean)
    {
        var device = DeviceKernels("CrossEntropy", this);
        if (device == null) CheckFloatOperands("CrossEntropy", this);
        if (labelSmoothing is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(labelSmoothing), "label smoothing must be in [0, 1]");
        int c = Size(-1);
        long n = NumEl / Math.Max(c, 1);
        if (targets.NumEl != n || targets.Rank != Rank - 1)
            throw new ShapeMismatchException($"CrossEntropy: targets of shape {Shapes.Format(targets._shape)} do not match logits {Shapes.Format(_shape)} (expected the logits' shape without the class dim)");
        var t = ReadTargets(targets, c, ignoreIndex);
        long counted = t.Count(v => v != ignoreIndex);
        var (loss, lse) = device == null ? CpuCrossEntropy(this, t, ignoreIndex, labelSmoothing) : DeviceCrossEntropy(device, this, t, ignoreIndex, labelSmoothing);
        Tensor result;
        using (loss)
        {
            result = reduction switch
            {
                Reduction.None => loss.Reshape(targets._shape),
                Reduction.Sum => loss.Sum(),
                _ => MeanOfCounted(loss, counted),
            };
        }
        bool kept = false;
        var recordedLoss = Autograd.Record(result, "CrossEntropy", [this], saved =>
        {
        kept = true;
        var self = saved.Save(this);
        saved.Own(lse.KeepAlive());
        return (g, _) =>
        {
            // Per-row scale of the softmax-minus-target gradient.
            using var scale = reduction == Reduction.None ? g.Reshape(-1).ContiguousData() : g.Mul(reduction == Reduction.Mean ? 1.0 / counted : 1.0).Expand((int)n).ContiguousCopy();
            return [device == null ? CpuCrossEntropyBackward(self, t, lse, scale, ignoreIndex, labelSmoothing) : DeviceCrossEntropyBackward(device, self, t, lse, scale, ignoreIndex, labelSmoothing)];
        };
        });
        if (!kept) lse.Dispose();
        return recordedLoss;
    }

    /// <summary>The fused cross-entropy on the CPU: the per-row loss and log-sum-exp.</summary>
    private static unsafe (Tensor Loss, Tensor Lse) CpuCrossEntropy(Tensor self, long[] t, long ignoreIndex, double smoothing)
    {
        int c = self.Size(-1);
        long n = t.Length;
        using var x = self.ContiguousData();
        var loss = Allocate([(int)n], self.DType, zero: false);
        var lse = Allocate([(int)n], self.DType, zero: false);
        if (self.DType == DType.F64) CrossEntropyKernel<double>.Forward(x.Ptr<double>(), t, loss.Ptr<double>(), lse.Ptr<double>(), n, c, ignoreIndex, smoothing);
        else CrossEntropyKernel<float>.Forward(x.Ptr<float>(), t, loss.Ptr<float>(), lse.Ptr<float>(), n, c, ignoreIndex, smoothing);
        return (loss, lse);
    }

    /// <summary>Its backward on the CPU: d logits from the saved log-sum-exp and the per-row scale.</summary>
    private static unsafe Tensor CpuCrossEntropyBackward(Tensor self, long[] t, Tensor lse, Tensor scale, long ignoreIndex, double smoothing)
    {
        int c = self.Size(-1);
        long n = t.Length;
        using var xs = self.ContiguousData();
        var dx = Allocate(self._shape, self.DType, zero: false);
        if (self.DType == DType.F64) CrossEntropyKernel<double>.Backward(xs.Ptr<double>(), t, lse.Ptr<double>(), scale.Ptr<double>(), dx.Ptr<double>(), n, c, ignoreIndex, smoothing);
        else CrossEntropyKernel<float>.Backward(xs.Ptr<float>(), t, lse.Ptr<float>(), scale.Ptr<float>(), dx.Ptr<float>(), n, c, ignoreIndex, smoothing);
        return dx;
    }

    /// <summary>The fused cross-entropy on a device (16-bit logits widened to F32 first).</summary>
    private static (Tensor Loss, Tensor Lse) DeviceCrossEntropy(IDeviceKernels k, Tensor self, long[] t, long ignoreIndex, double smoothing)
    {
        using var wide = WidenOnDevice(k, "CrossEntropy", self);
        using var x = (wide ?? self).ContiguousData();
        return k.CrossEntropy(x, t, ignoreIndex, smoothing);
    }

    /// <summary>Its backward on a device; the saved logits are widened and made dense again here.</summary>
    private static Tensor DeviceCrossEntropyBackward(IDeviceKernels k, Tensor self, long[] t, Tensor lse, Tensor scale, long ignoreIndex, double smoothing)
    {
        using var wide = WidenOnDevice(k, "CrossEntropy", self);
        using var xs = (wide ?? self).ContiguousData();
        return k.CrossEntropyBackward(xs, t, lse, scale, ignoreIndex, smoothing);
    }

    private static Tensor MeanOfCounted(Tensor loss, long count)
    {
        using var sum = loss.Sum();
        return sum.Mul(count == 0 ? double.NaN : 1.0 / count); // torch: NaN when every target is ignored
    }

    private static long[] ReadTargets(Tensor targets, int classes, long ignoreIndex)
    {
        if (targets.DType is not (DType.I64 or DType.I32)) throw new DTypeMismatchException($"CrossEntropy: targets must be I64 or I32 class indices, got {targets.DType}");
        var values = targets.DType == DType.I64 ? targets.ToArray<long>() : targets.ToArray<int>().Select(v => (long)v).ToArray();
        foreach (var v in values)
            if (v != ignoreIndex && (v < 0 || v >= classes))
                throw new IndexOutOfRangeException($"CrossEntropy: target {v} is outside [0, {classes}) and is not the ignore index {ignoreIndex}");
        return values;
    }

    /// <summary>Inverted dropout: zeroes elements with probability <paramref name="p"/> and scales the rest by 1/(1−p).
    /// The mask comes from <paramref name="generator"/> (Philox), so a seed reproduces it exactly.</summary>
    public Tensor Dropout(double p, bool training = true, Generator? generator = null)
    {
        if (p is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(p), $"dropout probability must be in [0, 1], got {p}");
        if (!training || p == 0) return Contiguous();
        if (p == 1) { using var z = ZerosLike(this); return Mul(z); }
        var gen = generator ?? Generator.Default;
        if (DeviceKernels("Dropout", this) is { } k)
        {
            // Drawn on the device from the same Philox counters the CPU would use: the same elements are dropped.
            using var deviceMask = k.DropoutMask(_shape, p, gen.Key0, gen.Key1, gen.Reserve((NumEl + 3) / 4), Device);
            return Mul(deviceMask);
        }
        using var mask = DropoutMask(_shape, p, gen, DType);
        return Mul(mask);
    }

    /// <summary>
    /// softmax(Q·Kᵀ·scale + mask)·V over q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv].
    /// <paramref name="attentionMask"/>: U8 (1 = attend, 0 = masked, as torch's boolean masks) or an additive float
    /// mask, broadcast to [..., Tq, Tk]. <paramref name="isCausal"/> lets query i see keys j ≤ i + (Tk − Tq), which is
    /// right both for full sequences and for decoding with a KV cache.
    /// </summary>
    public static Tensor ScaledDotProductAttention(Tensor q, Tensor k, Tensor v, Tensor? attentionMask = null, bool isCausal = false, double? scale = null, double dropoutP = 0, Generator? generator = null)
    {
        if (Autocast.Current is { } half)
        {
            // Under autocast: what torch's fused 16-bit attention computes (and HF models' default "sdpa" path runs):
            // q, k, v rounded to the autocast dtype, scores, softmax, dropout and sums in F32, the output rounded once.
            // The same on every device, fused kernel or composite; gradients pass the roundings straight through.
            using var qr = RoundedForAutocast(q, half);
            using var kr = RoundedForAutocast(k, half);
            using var vr = RoundedForAutocast(v, half);
            using var mr = attentionMask is { DType: DType.BF16 or DType.F16 } m ? m.To(DType.F32) : null;
            Tensor wide;
            using (Autocast.Disable()) wide = ScaledDotProductAttention(qr, kr, vr, mr ?? attentionMask, isCausal, scale, dropoutP, generator);
            using (wide) return wide.To(half);
        }
        if (q.Device.Type != DeviceType.Cpu && FusedAttention(q, k, v, attentionMask, isCausal, scale, dropoutP, generator) is { } fused) return fused;
        int tq = q.Size(-2), tk = k.Size(-2);
        double s = scale ?? 1.0 / Math.Sqrt(q.Size(-1));
        using var kt = k.Transpose(-2, -1);
        using var raw = q.MatMul(kt);
        Tensor scores = raw.Mul(s);
        if (isCausal)
        {
            using var future = TriangleMask(tq, tk, tk - tq, lower: true);
            using var old = scores;
            scores = old.MaskedFill(future, double.NegativeInfinity);
        }
        if (attentionMask != null)
        {
            using var old = scores;
            if (attentionMask.DType == DType.U8)
            {
                using var blocked = attentionMask.Eq0();
                scores = old.MaskedFill(blocked, double.NegativeInfinity);
            }
            else scores = old.Add(attentionMask);
        }
        using (scores)
        using (var probs = scores.Softmax(-1))
        using (var dropped = dropoutP > 0 ? probs.Dropout(dropoutP, true, generator) : null)
            return (dropped ?? probs).MatMul(v);
    }

    /// <summary>
    /// ScaledDotProductAttention on a device as one fused kernel (kernels/attention.cu on CUDA: the [Tq, Tk] scores
    /// and probabilities are never stored, backward recomputes them from each row's log-sum-exp) when the call fits it:
    /// heads [B, H, T, D] with D ≤ 128 for q, k and v, and no mask or a U8 key-padding mask [B or 1, 1, 1, Tk].
    /// Dropout on the probabilities (p &lt; 1) runs inside the kernels and drops exactly the elements the composite's
    /// Dropout would (the same Philox counters, reserved from the same generator). Null otherwise: additive float masks
    /// (T5's bias) and other shapes take the composite. (Autocast is handled by the caller: this sees F32 heads.)
    /// </summary>
    private static Tensor? FusedAttention(Tensor q, Tensor k, Tensor v, Tensor? mask, bool causal, double? scale, double dropoutP, Random.Generator? generator)
    {
        if (dropoutP >= 1 || q.Rank != 4 || k.Rank != 4 || v.Rank != 4) return null;
        int b = q.Size(0), h = q.Size(1), tq = q.Size(2), d = q.Size(3), tk = k.Size(2);
        if (!k.Shape.AsSpan().SequenceEqual(v.Shape) || k.Size(0) != b || k.Size(1) != h || k.Size(3) != d) return null;
        if (d is 0 or > 128 || tq == 0 || tk == 0 || (long)b * h > 65535) return null;
        if (mask != null && !(mask.DType == DType.U8 && mask.Rank == 4 && mask.Size(1) == 1 && mask.Size(2) == 1 && mask.Size(3) == tk && (mask.Size(0) == b || mask.Size(0) == 1)))
            return null;
        if (DeviceKernels("ScaledDotProductAttention", q, k, v) is not { } kernels) return null;
        double s = scale ?? 1.0 / Math.Sqrt(d);
        long offset = tk - tq;   // causal: query i sees keys up to i + Tk − Tq (a KV cache's past included)
        using var qd = DenseF32(kernels, q);
        using var kd = DenseF32(kernels, k);
        using var vd = DenseF32(kernels, v);
        using var maskD = mask == null ? null : KeyMaskOn(mask, b, tk, q.Device);
        AttentionDropout? dropout = null;
        if (dropoutP > 0)
        {
            // The counters the composite's probs.Dropout(p) would reserve for its [B, H, Tq, Tk] mask.
            var gen = generator ?? Random.Generator.Default;
            dropout = new AttentionDropout(dropoutP, gen.Key0, gen.Key1, gen.Reserve(((long)b * h * tq * tk + 3) / 4));
        }
        var (o, lse) = kernels.Attention(qd, kd, vd, maskD, h, causal, offset, s, dropout);
        using (lse)
            return Autograd.Record(o, "ScaledDotProductAttention", [q, k, v], saved =>
            {
                var (qs, ks, vs, os, ls) = (saved.Save(qd), saved.Save(kd), saved.Save(vd), saved.Save(o), saved.Save(lse));
                var ms = maskD == null ? null : saved.Save(maskD);
                return (g, _) =>
                {
                    using var gc = g.ContiguousData();
                    var (dq, dk, dv) = kernels.AttentionBackward(qs, ks, vs, os, gc, ls, ms, h, causal, offset, s, dropout);
                    return [dq, dk, dv];
                };
            });

        static Tensor DenseF32(IDeviceKernels k, Tensor t)
        {
            using var wide = WidenOnDevice(k, "ScaledDotProductAttention", t);
            return (wide ?? t).ContiguousData();
        }
    }

    /// <summary>
    /// <paramref name="t"/>'s values rounded to <paramref name="half"/> (exact when it already is), as an F32 tensor
    /// whose gradient is the incoming one unchanged (a straight-through rounding: autocast's casts do not round gradients).
    /// </summary>
    private static Tensor RoundedForAutocast(Tensor t, DType half)
    {
        Tensor value;
        if (t.DType == half) value = t.ToDTypeNoGrad(DType.F32);
        else
        {
            using var rounded = t.ToDTypeNoGrad(half);
            value = rounded.ToDTypeNoGrad(DType.F32);
        }
        return Autograd.Record(value, "AutocastRound", [t], (g, need) => [need[0] ? g.Contiguous() : null]);
    }

    /// <summary>A key-padding mask [B or 1, 1, 1, Tk] as the dense U8 [B, Tk] the fused kernels read, on <paramref name="device"/>
    /// (masks are usually built on the host; B·Tk bytes).</summary>
    private static Tensor KeyMaskOn(Tensor mask, int b, int tk, Device device)
    {
        var bytes = mask.ToArray<byte>();
        var rows = mask.Size(0) == b ? bytes : Enumerable.Repeat(bytes, b).SelectMany(r => r).ToArray();
        using var host = FromArray(rows, [b, tk]);
        return host.To(device);
    }

    private unsafe Tensor Eq0()
    {
        if (Device.Type != DeviceType.Cpu)
        {
            // A mask that already lives on a device: compared there (U8 widens exactly to F32).
            using var wide = ToDTypeNoGrad(DType.F32);
            using var zero = wide.ScalarLike(0);
            return CompareMask(BinaryOp.Equal, wide, zero);
        }
        using var c = ContiguousData();
        var r = Allocate(_shape, DType.U8, zero: false);
        byte* src = c.Ptr<byte>(), dst = r.Ptr<byte>();
        for (long i = 0; i < NumEl; i++) dst[i] = (byte)(src[i] == 0 ? 1 : 0);
        return r;
    }

    /// <summary>Kronecker product of two matrices: [m·p, n·q] blocks a[i,j]·b (LoKr's ΔW).</summary>
    public static Tensor Kron(Tensor a, Tensor b)
    {
        if (a.Rank != 2 || b.Rank != 2) throw new ShapeMismatchException($"Kron needs 2-D operands, got {Shapes.Format(a._shape)} and {Shapes.Format(b._shape)}");
        int m = a._shape[0], n = a._shape[1], p = b._shape[0], q = b._shape[1];
        using var a4 = a.Reshape(m, 1, n, 1);
        using var b4 = b.Reshape(1, p, 1, q);
        using var prod = a4.Mul(b4);
        return prod.Reshape(m * p, n * q);
    }
}
