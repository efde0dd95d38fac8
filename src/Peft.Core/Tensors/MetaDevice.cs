using Peft.Core.Cpu;

namespace Peft.Core;

/// <summary>
/// The meta device: tensors with a shape, strides and a dtype but no memory, and ops that produce correctly shaped
/// results without computing anything, so a model of any size can be built and counted in microseconds
/// (<c>peft inspect --peft</c> on a 70B config). Copies into a meta tensor are no-ops; reading a meta tensor's elements
/// (or moving one to the CPU) throws, because there are none.
/// </summary>
/// <summary>Thrown when the elements of a meta tensor are read (a data-dependent step met a shape-only tensor).</summary>
public sealed class MetaTensorException(string message) : InvalidOperationException(message);

internal sealed class MetaDevice : IDeviceBackend, IDeviceKernels
{
    internal static readonly MetaDevice Instance = new();

    /// <summary>Storage that records its size and owns nothing.</summary>
    private sealed class MetaStorage(long bytes) : Storage(bytes)
    {
        public override Device Device => Device.Meta;
        public override unsafe byte* Pointer => throw new MetaTensorException("a meta tensor has no elements to read (it was built for its shape only)");
        protected override void Free() { }
    }

    public Tensor CopyTo(Tensor source, Device target)
    {
        if (target.Type == DeviceType.Meta) return Empty(source.Shape, source.DType, target);
        throw new MetaTensorException($"a meta tensor has no elements to copy to {target} (it was built for its shape only)");
    }

    public Tensor Empty(int[] shape, DType dtype, Device device) =>
        new(new MetaStorage(Shapes.NumEl(shape) * dtype.SizeOf()), shape, Shapes.ContiguousStrides(shape), 0, dtype);

    private Tensor Like(int[] shape, DType dtype) => Empty(shape, dtype, Device.Meta);

    public void Copy(Tensor destination, Tensor source) { }
    public Tensor Cast(Tensor x, DType dtype) => Like(x.Shape, dtype);
    public Tensor Binary(BinaryOp op, Tensor a, Tensor b, int[] shape) => Like(shape, DType.F32);
    public Tensor Unary(UnaryOp op, Tensor x, double p0, double p1) => Like(x.Shape, x.DType);
    public Tensor Reduce(ReduceOp op, Tensor x, bool[] reduced, int[] outShape) => Like(outShape, x.DType);
    public Tensor MatMul(Tensor a, Tensor b, int[] outShape) => Like(outShape, a.DType == DType.F64 ? DType.F64 : DType.F32);
    public Tensor Softmax(Tensor x, bool log) => Like(x.Shape, x.DType);
    public Tensor SoftmaxBackward(Tensor y, Tensor g, bool log) => Like(y.Shape, y.DType);

    public (Tensor Y, Tensor Mean, Tensor Rstd) Norm(Tensor x, Tensor? weight, Tensor? bias, double eps, bool rms) =>
        (Like(x.Shape, x.DType), Like(x.Shape[..^1], x.DType), Like(x.Shape[..^1], x.DType));

    public (Tensor Dx, Tensor Xhat) NormBackward(Tensor x, Tensor g, Tensor mean, Tensor rstd, Tensor? weight, bool rms) =>
        (Like(x.Shape, x.DType), Like(x.Shape, x.DType));

    public Tensor IndexSelect(Tensor source, long[] index, long outer, int dimSize, long inner, int[] outShape) => Like(outShape, source.DType);
    public Tensor IndexAdd(Tensor g, long[] index, long outer, int dimSize, long inner, int[] inShape) => Like(inShape, g.DType);
    public Tensor Where(Tensor condition, Tensor a, Tensor b) => Like(a.Shape, a.DType);
    public void AdamW(Tensor p, Tensor g, Tensor m, Tensor v, float decay, bool decayOn, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2, float invSqrtBc2, float eps, float stepSize) { }
    public void AdamWMulti(Tensor[] p, Tensor[] g, Tensor[] m, Tensor[] v, float decay, bool decayOn, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2, float invSqrtBc2, float eps, float stepSize) { }
    public Tensor DropoutMask(int[] shape, double p, uint key0, uint key1, long first, Device device) => Like(shape, DType.F32);

    public (Tensor Loss, Tensor Lse) CrossEntropy(Tensor logits, long[] targets, long ignoreIndex, double smoothing) =>
        (Like([targets.Length], logits.DType), Like([targets.Length], logits.DType));

    public Tensor CrossEntropyBackward(Tensor logits, long[] targets, Tensor lse, Tensor scale, long ignoreIndex, double smoothing) => Like(logits.Shape, logits.DType);
    public (Tensor O, Tensor Lse) Attention(Tensor q, Tensor k, Tensor v, Tensor? keyMask, int heads, bool causal, long causalOffset, double scale, AttentionDropout? dropout) =>
        (Like(q.Shape, DType.F32), Like(q.Shape[..^1], DType.F32));
    public (Tensor Dq, Tensor Dk, Tensor Dv) AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor g, Tensor lse, Tensor? keyMask, int heads, bool causal, long causalOffset, double scale, AttentionDropout? dropout) =>
        (Like(q.Shape, DType.F32), Like(k.Shape, DType.F32), Like(v.Shape, DType.F32));
    public Tensor LowRankHadamard(Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale) => Like([a1.Size(0), b1.Size(1)], DType.F32);
    public (Tensor? G1, Tensor? G2) LowRankHadamardBackward(Tensor g, Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale, bool want1, bool want2) =>
        (want1 ? Like(g.Shape, DType.F32) : null, want2 ? Like(g.Shape, DType.F32) : null);
    public Tensor SegmentedLora(Tensor baseOutput, Tensor x, int[] rowAdapter, Tensor[] a, Tensor[] b, float[] scales) => Like(baseOutput.Shape, DType.F32);
    public Tensor DequantizeInt8(Tensor q, Tensor scb) => Like(q.Shape, DType.F32);
    public Tensor DequantizeNf4(Tensor packed, Tensor absmax, int[] shape) => Like(shape, DType.F32);
    public Tensor DequantizeBlockwise8(Tensor codes, Tensor nestedAbsmax, float offset) => Like(codes.Shape, DType.F32);
}
