using System.Runtime.InteropServices;
using Peft.Core;
using Peft.Core.Cpu;
using Peft.Core.Quantization;

namespace Peft.Tests.Device;

/// <summary>
/// A stand-in for a CUDA device made of host memory, for machines without a GPU: tensors report
/// <c>Device.Cuda(0)</c>, so every front-end takes its device path (DeviceKernels, widening, the device softmax, norm,
/// cross-entropy, index and where branches, <c>Module.To</c>, tables built on the host and copied), while each kernel
/// call is answered by Peft.Core's CPU kernels on the same memory. It tests the routing and the autograd plumbing
/// of the device paths — the CUDA kernels themselves are tested against the CPU by Peft.Cuda.Tests on a real GPU.
/// Installed for the duration of a <c>using</c>; the registration it replaced comes back afterwards.
/// </summary>
internal sealed unsafe class EmulatedDevice : IDeviceBackend, IDeviceKernels
{
    public static readonly Peft.Core.Device Target = Peft.Core.Device.Cuda(0);

    /// <summary>Kernel calls answered so far, by name (a test can check that its op really took the device path).</summary>
    public Dictionary<string, int> Calls { get; } = new();

    public static (EmulatedDevice Device, IDisposable Registration) Install()
    {
        var device = new EmulatedDevice();
        return (device, DeviceBackends.Override(DeviceType.Cuda, device, device));
    }

    private void Count(string name) => Calls[name] = Calls.GetValueOrDefault(name) + 1;

    /// <summary>Device memory that is host memory underneath.</summary>
    private sealed class DeviceMemory : Storage
    {
        private byte* _ptr;

        public DeviceMemory(long bytes) : base(bytes)
        {
            _ptr = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64);
            new Span<byte>(_ptr, (int)Math.Min(bytes, int.MaxValue)).Fill(0xFF); // NaN-poisoned, as the GPU tests' outputs
        }

        public override Peft.Core.Device Device => Target;

        /// <summary>As CudaStorage: front-end code may not touch device memory from the host.</summary>
        public override byte* Pointer => throw new InvalidOperationException("host access to emulated device memory: a front-end skipped its device path");

        /// <summary>The memory, for the kernels of this stand-in only.</summary>
        public byte* Raw => _ptr;

        protected override void Free()
        {
            NativeMemory.AlignedFree(_ptr);
            _ptr = null;
        }
    }

    /// <summary>A CPU view of device memory (frees nothing: the device tensor owns it).</summary>
    private sealed class HostAlias(DeviceMemory target) : Storage(target.ByteLength)
    {
        public override Peft.Core.Device Device => Peft.Core.Device.Cpu;
        public override byte* Pointer => target.Raw;
        protected override void Free() { }
    }

    private static Tensor Host(Tensor t) => new(new HostAlias((DeviceMemory)t.Storage), t.Shape, t.Strides, t.Offset, t.DType);

    private static Tensor? HostOrNull(Tensor? t) => t == null ? null : Host(t);

    /// <summary>A device copy of a host tensor (which is disposed).</summary>
    private Tensor Up(Tensor host)
    {
        using (host)
        {
            var d = Empty(host.Shape, host.DType, Target);
            using var src = host.Contiguous();
            long bytes = host.NumEl * host.DType.SizeOf();
            Buffer.MemoryCopy(src.Storage.Pointer + src.Offset * host.DType.SizeOf(), ((DeviceMemory)d.Storage).Raw, bytes, bytes);
            return d;
        }
    }

    public Tensor CopyTo(Tensor source, Peft.Core.Device target)
    {
        Count("CopyTo");
        using var _ = Autograd.NoGrad();
        if (source.Device.Type == DeviceType.Cpu) return Up(source.Contiguous());
        using var h = Host(source);
        var onHost = h.ContiguousCopy();
        return target.Type == DeviceType.Cpu ? onHost : Up(onHost);
    }

    public Tensor Empty(int[] shape, DType dtype, Peft.Core.Device device) =>
        new(new DeviceMemory(Shapes.NumEl(shape) * dtype.SizeOf()), shape, Shapes.ContiguousStrides(shape), 0, dtype);

    public void Copy(Tensor destination, Tensor source)
    {
        Count("Copy");
        using var d = Host(destination);
        using var s = Host(source);
        using var _ = Autograd.NoGrad();
        d.CopyFrom(s);
    }

    public Tensor Cast(Tensor x, DType dtype)
    {
        Count("Cast");
        // The casts kernels/cast.cu has (CudaOps chains bf16 ↔ f16 through f32; i8/u8 → f32 and f32 → u8 for codes and masks): anything else must not reach a device.
        bool f32Pair = (x.DType == DType.F32 && dtype is DType.BF16 or DType.F16) || (dtype == DType.F32 && x.DType is DType.BF16 or DType.F16);
        bool halfPair = x.DType is DType.BF16 or DType.F16 && dtype is DType.BF16 or DType.F16;
        bool bytePair = (x.DType is DType.I8 or DType.U8 && dtype == DType.F32) || (x.DType == DType.F32 && dtype == DType.U8);
        if (!f32Pair && !halfPair && !bytePair && x.DType != dtype) throw new NotSupportedException($"no CUDA cast kernel from {x.DType} to {dtype}");
        using var h = Host(x);
        return Up(h.ToDTypeNoGrad(dtype));
    }

    public Tensor Binary(BinaryOp op, Tensor a, Tensor b, int[] shape)
    {
        Count("Binary");
        RequireF32(a, b);
        using var ha = Host(a);
        using var hb = Host(b);
        return Up(Tensor.BinaryKernel(op, ha, hb));
    }

    public Tensor Unary(UnaryOp op, Tensor x, double p0, double p1)
    {
        Count("Unary");
        RequireDense("Unary", x);
        RequireF32(x);
        using var h = Host(x);
        return Up(h.UnaryKernel(op, p0, p1));
    }

    public Tensor Reduce(ReduceOp op, Tensor x, bool[] reduced, int[] outShape)
    {
        Count("Reduce");
        RequireF32(x);
        using var h = Host(x);
        using var _ = Autograd.NoGrad();
        var dims = Enumerable.Range(0, x.Rank).Where(d => reduced[d]).ToArray();
        bool keep = outShape.Length == x.Rank;
        return Up(op switch { ReduceOp.Sum => h.Sum(dims, keep), ReduceOp.Max => h.Max(dims, keep), _ => h.Min(dims, keep) });
    }

    public Tensor MatMul(Tensor a, Tensor b, int[] outShape)
    {
        Count("MatMul");
        using var ha = Host(a);
        using var hb = Host(b);
        return Up(Tensor.MatMulKernel(ha, hb));
    }

    public Tensor Softmax(Tensor x, bool log)
    {
        Count("Softmax");
        RequireDense("Softmax", x);
        RequireF32(x);
        using var h = Host(x);
        using var _ = Autograd.NoGrad();
        return Up(log ? h.LogSoftmax() : h.Softmax());
    }

    public Tensor SoftmaxBackward(Tensor y, Tensor g, bool log)
    {
        Count("SoftmaxBackward");
        RequireDense("SoftmaxBackward", y, g);
        using var hy = Host(y);
        using var hg = Host(g);
        using var _ = Autograd.NoGrad();
        if (log)
        {
            using var s = hg.Sum(-1, keepDim: true);
            using var p = hy.Exp();
            using var ps = p.Mul(s);
            return Up(hg.Sub(ps));
        }
        using var gy = hg.Mul(hy);
        using var dot = gy.Sum(-1, keepDim: true);
        using var c = hg.Sub(dot);
        return Up(hy.Mul(c));
    }

    public (Tensor Y, Tensor Mean, Tensor Rstd) Norm(Tensor x, Tensor? weight, Tensor? bias, double eps, bool rms)
    {
        Count("Norm");
        RequireDense("Norm", x);
        using var h = Host(x);
        using var w = HostOrNull(weight);
        using var b = HostOrNull(bias);
        using var _ = Autograd.NoGrad();
        var y = rms ? h.RmsNorm(w, eps) : h.LayerNorm(w, b, eps);
        using var mean = rms ? Tensor.Zeros(x.Shape[..^1]) : h.Mean(-1);
        using var m = mean.Unsqueeze(-1);
        using var c = h.Sub(m);
        using var sq = c.Mul(c);
        using var v = sq.Mean(-1);
        using var ve = v.Add(eps);
        return (Up(y), Up(mean.Clone()), Up(ve.Rsqrt()));
    }

    public (Tensor Dx, Tensor Xhat) NormBackward(Tensor x, Tensor g, Tensor mean, Tensor rstd, Tensor? weight, bool rms)
    {
        Count("NormBackward");
        RequireDense("NormBackward", x, g);
        using var h = Host(x);
        using var hg = Host(g);
        using var hm = Host(mean);
        using var hr = Host(rstd);
        using var w = HostOrNull(weight);
        using var _ = Autograd.NoGrad();
        using var m = hm.Unsqueeze(-1);
        using var r = hr.Unsqueeze(-1);
        using var c = h.Sub(m);
        var xhat = c.Mul(r);
        using var gw = w == null ? hg.Clone() : hg.Mul(w);
        using var meanG = rms ? Tensor.Zeros([1]) : gw.Mean(-1, keepDim: true);
        using var gx = gw.Mul(xhat);
        using var meanGx = gx.Mean(-1, keepDim: true);
        using var t1 = gw.Sub(meanG);
        using var t2 = xhat.Mul(meanGx);
        using var t3 = t1.Sub(t2);
        return (Up(t3.Mul(r)), Up(xhat));
    }

    public Tensor IndexSelect(Tensor source, long[] index, long outer, int dimSize, long inner, int[] outShape)
    {
        Count("IndexSelect");
        RequireDense("IndexSelect", source);
        using var h = Host(source);
        using var v = h.Reshape((int)outer, dimSize, (int)inner);
        using var idx = Tensor.FromArray(index);
        using var _ = Autograd.NoGrad();
        using var picked = v.IndexSelect(1, idx);
        return Up(picked.Reshape(outShape));
    }

    public Tensor IndexAdd(Tensor g, long[] index, long outer, int dimSize, long inner, int[] inShape)
    {
        Count("IndexAdd");
        RequireDense("IndexAdd", g);
        using var hg = Host(g);
        using var dense = hg.ContiguousCopy();
        var acc = Tensor.Zeros(inShape);
        Indexing.AddAt(dense.Ptr<float>(), acc.Ptr<float>(), outer, dimSize, inner, index);
        return Up(acc);
    }

    public Tensor Where(Tensor condition, Tensor a, Tensor b)
    {
        Count("Where");
        RequireDense("Where", condition, a, b);
        using var c = Host(condition);
        using var ha = Host(a);
        using var hb = Host(b);
        using var _ = Autograd.NoGrad();
        return Up(Tensor.Where(c, ha, hb));
    }

    public void AdamWMulti(Tensor[] p, Tensor[] g, Tensor[] m, Tensor[] v, float decay, bool decayOn, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2, float invSqrtBc2, float eps, float stepSize)
    {
        Count("AdamWMulti");
        for (int i = 0; i < p.Length; i++) AdamW(p[i], g[i], m[i], v[i], decay, decayOn, beta1, oneMinusBeta1, beta2, oneMinusBeta2, invSqrtBc2, eps, stepSize);
    }

    public void AdamW(Tensor p, Tensor g, Tensor m, Tensor v, float decay, bool decayOn, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2, float invSqrtBc2, float eps, float stepSize)
    {
        Count("AdamW");
        RequireDense("AdamW", p, g, m, v);
        // The fused kernel's contract, element by element in F32 with every operation rounded separately.
        using var hp = Host(p);
        using var hg = Host(g);
        using var hm = Host(m);
        using var hv = Host(v);
        Span<float> sp = hp.Span<float>(), sg = hg.Span<float>(), sm = hm.Span<float>(), sv = hv.Span<float>();
        for (int i = 0; i < sp.Length; i++)
        {
            float pi = sp[i], gi = sg[i];
            if (decayOn) pi *= decay;
            float mi = sm[i] * beta1 + gi * oneMinusBeta1;
            float gg = gi * gi;
            float vi = sv[i] * beta2 + gg * oneMinusBeta2;
            float root = MathF.Sqrt(vi) * invSqrtBc2;
            float denom = root + eps;
            float quotient = mi / denom;
            sp[i] = pi + quotient * stepSize;
            sm[i] = mi;
            sv[i] = vi;
        }
    }

    public Tensor DropoutMask(int[] shape, double p, uint key0, uint key1, long first, Peft.Core.Device device)
    {
        Count("DropoutMask");
        return Up(Tensor.DropoutMaskAt(shape, p, key0, key1, first, DType.F32));
    }

    public (Tensor Loss, Tensor Lse) CrossEntropy(Tensor logits, long[] targets, long ignoreIndex, double smoothing)
    {
        Count("CrossEntropy");
        RequireDense("CrossEntropy", logits);
        using var h = Host(logits);
        int c = logits.Size(-1);
        long n = targets.Length;
        var loss = Tensor.Zeros([(int)n]);
        var lse = Tensor.Zeros([(int)n]);
        CrossEntropyKernel<float>.Forward(h.Ptr<float>(), targets, loss.Ptr<float>(), lse.Ptr<float>(), n, c, ignoreIndex, smoothing);
        return (Up(loss), Up(lse));
    }

    public Tensor CrossEntropyBackward(Tensor logits, long[] targets, Tensor lse, Tensor scale, long ignoreIndex, double smoothing)
    {
        Count("CrossEntropyBackward");
        using var h = Host(logits);
        using var hl = Host(lse);
        using var hs = Host(scale);
        var dx = Tensor.Zeros(logits.Shape);
        CrossEntropyKernel<float>.Backward(h.Ptr<float>(), targets, hl.Ptr<float>(), hs.Ptr<float>(), dx.Ptr<float>(), targets.Length, logits.Size(-1), ignoreIndex, smoothing);
        return Up(dx);
    }

    public (Tensor O, Tensor Lse) Attention(Tensor q, Tensor k, Tensor v, Tensor? keyMask, int heads, bool causal, long causalOffset, double scale, AttentionDropout? dropout)
    {
        Count("Attention");
        RequireDense("Attention", q, k, v);
        RequireF32(q, k, v);
        using var hq = Host(q);
        using var hk = Host(k);
        using var hv = Host(v);
        using var hm = HostOrNull(keyMask);
        var (o, lse) = AttentionReference.Forward(hq.Span<float>(), hk.Span<float>(), hv.Span<float>(), hm == null ? default : hm.Span<byte>(),
            q.Size(0) * q.Size(1), heads, q.Size(2), k.Size(2), q.Size(3), causal, causalOffset, scale, dropout);
        return (Up(Tensor.FromArray(o, q.Shape)), Up(Tensor.FromArray(lse, q.Shape[..^1])));
    }

    public (Tensor Dq, Tensor Dk, Tensor Dv) AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor g, Tensor lse, Tensor? keyMask, int heads, bool causal, long causalOffset, double scale, AttentionDropout? dropout)
    {
        Count("AttentionBackward");
        RequireDense("AttentionBackward", q, k, v, o, g, lse);
        using var hq = Host(q);
        using var hk = Host(k);
        using var hv = Host(v);
        using var ho = Host(o);
        using var hg = Host(g);
        using var hl = Host(lse);
        using var hm = HostOrNull(keyMask);
        var (dq, dk, dv) = AttentionReference.Backward(hq.Span<float>(), hk.Span<float>(), hv.Span<float>(), ho.Span<float>(), hg.Span<float>(), hl.Span<float>(),
            hm == null ? default : hm.Span<byte>(), q.Size(0) * q.Size(1), heads, q.Size(2), k.Size(2), q.Size(3), causal, causalOffset, scale, dropout);
        return (Up(Tensor.FromArray(dq, q.Shape)), Up(Tensor.FromArray(dk, k.Shape)), Up(Tensor.FromArray(dv, v.Shape)));
    }

    public unsafe Tensor LowRankHadamard(Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale)
    {
        Count("LowRankHadamard");
        RequireDense("LowRankHadamard", a1, b1, a2, b2);
        RequireF32(a1, b1, a2, b2);
        using var h1 = Host(a1);
        using var k1 = Host(b1);
        using var h2 = Host(a2);
        using var k2 = Host(b2);
        int m = a1.Size(0), r = a1.Size(1), n = b1.Size(1);
        var delta = Tensor.Zeros([m, n]);
        Peft.Core.Cpu.LowRankHadamard.Forward(h1.Ptr<float>(), k1.Ptr<float>(), h2.Ptr<float>(), k2.Ptr<float>(), delta.Ptr<float>(), m, n, r, (float)scale);
        return Up(delta);
    }

    public unsafe (Tensor? G1, Tensor? G2) LowRankHadamardBackward(Tensor g, Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale, bool want1, bool want2)
    {
        Count("LowRankHadamardBackward");
        RequireDense("LowRankHadamardBackward", g, a1, b1, a2, b2);
        RequireF32(g, a1, b1, a2, b2);
        using var hg = Host(g);
        using var h1 = Host(a1);
        using var k1 = Host(b1);
        using var h2 = Host(a2);
        using var k2 = Host(b2);
        int m = a1.Size(0), r = a1.Size(1), n = b1.Size(1);
        var g1 = want1 ? Tensor.Zeros([m, n]) : null;   // Up disposes them
        var g2 = want2 ? Tensor.Zeros([m, n]) : null;
        Peft.Core.Cpu.LowRankHadamard.Backward(hg.Ptr<float>(), h1.Ptr<float>(), k1.Ptr<float>(), h2.Ptr<float>(), k2.Ptr<float>(),
            g1 == null ? null : g1.Ptr<float>(), g2 == null ? null : g2.Ptr<float>(), m, n, r, (float)scale);
        return (g1 == null ? null : Up(g1), g2 == null ? null : Up(g2));
    }

    public unsafe Tensor SegmentedLora(Tensor baseOutput, Tensor x, int[] rowAdapter, Tensor[] a, Tensor[] b, float[] scales)
    {
        Count("SegmentedLora");
        RequireDense("SegmentedLora", [baseOutput, x, .. a, .. b]);
        RequireF32([baseOutput, x, .. a, .. b]);
        using var hy = Host(baseOutput);
        var y = hy.Clone();
        using var hx = Host(x);
        var ha = a.Select(Host).ToArray();
        var hb = b.Select(Host).ToArray();
        try
        {
            var ap = new float*[a.Length];
            var bp = new float*[b.Length];
            for (int i = 0; i < a.Length; i++) { ap[i] = ha[i].Ptr<float>(); bp[i] = hb[i].Ptr<float>(); }
            Peft.Core.Cpu.SegmentedLora.Apply(y.Ptr<float>(), hx.Ptr<float>(), x.Size(0), x.Size(1), baseOutput.Size(1), rowAdapter, ap, bp,
                a.Select(t => t.Size(0)).ToArray(), scales);
            return Up(y);
        }
        finally
        {
            foreach (var t in ha.Concat(hb)) t.Dispose();
        }
    }

    public Tensor DequantizeInt8(Tensor q, Tensor scb)
    {
        Count("DequantizeInt8");
        RequireDense("DequantizeInt8", q, scb);
        using var hq = Host(q);
        using var hs = Host(scb);
        return Up(Tensor.FromArray(Int8RowWise.Dequantize(hq.Span<sbyte>(), hs.Span<float>(), q.Size(0), q.Size(1)), q.Shape));
    }

    public Tensor DequantizeNf4(Tensor packed, Tensor absmax, int[] shape)
    {
        Count("DequantizeNf4");
        RequireDense("DequantizeNf4", packed, absmax);
        using var hp = Host(packed);
        using var ha = Host(absmax);
        return Up(Tensor.FromArray(Nf4.Dequantize(hp.Span<byte>(), ha.Span<float>(), (int)Shapes.NumEl(shape)), shape));
    }

    public Tensor DequantizeBlockwise8(Tensor codes, Tensor nestedAbsmax, float offset)
    {
        Count("DequantizeBlockwise8");
        RequireDense("DequantizeBlockwise8", codes, nestedAbsmax);
        using var hc = Host(codes);
        using var hn = Host(nestedAbsmax);
        return Up(Tensor.FromArray(new DoubleQuantizedAbsmax(hc.Span<byte>().ToArray(), hn.Span<float>().ToArray(), offset).Dequantize(), codes.Shape));
    }

    /// <summary>The CUDA kernels that read dense memory (CudaOps' RequireContiguous): the stand-in holds front-ends to it.</summary>
    private static void RequireDense(string op, params Tensor[] tensors)
    {
        foreach (var t in tensors)
            if (!t.IsContiguous) throw new InvalidOperationException($"front-end passed a strided tensor to the dense-only device kernel {op}");
    }

    /// <summary>The CUDA kernels compute in F32 only; the stand-in holds the front-ends to the same contract.</summary>
    private static void RequireF32(params Tensor[] tensors)
    {
        foreach (var t in tensors)
            if (t.DType != DType.F32) throw new InvalidOperationException($"front-end passed {t.DType} to an F32-only device kernel");
    }
}
