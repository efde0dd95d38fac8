using Peft.Core.Cpu;

namespace Peft.Core;

/// <summary>
/// The kernels a device package runs for <see cref="Tensor"/>'s front-ends when the operands live on its device
/// (Peft.Cuda's CudaOps). Front-ends validate shapes, widen 16-bit operands where the op computes in F32, call one
/// of these and record the autograd node, so every backward formula written with tensor ops runs on the device
/// unchanged. Inputs are live tensors of this device; results are new contiguous tensors on it.
/// </summary>
internal interface IDeviceKernels
{
    /// <summary>An uninitialised contiguous tensor on <paramref name="device"/>.</summary>
    Tensor Empty(int[] shape, DType dtype, Device device);

    /// <summary>destination[i] = source[i] over destination's shape; both have one dtype, source's strides may be 0
    /// (broadcast) and destination's any (a view being written).</summary>
    void Copy(Tensor destination, Tensor source);

    /// <summary>A contiguous copy in <paramref name="dtype"/> (floating dtypes).</summary>
    Tensor Cast(Tensor x, DType dtype);

    /// <summary>op(a, b) broadcast to <paramref name="shape"/>; F32 operands.</summary>
    Tensor Binary(BinaryOp op, Tensor a, Tensor b, int[] shape);

    /// <summary>op(x; p0, p1) element-wise; contiguous F32 x.</summary>
    Tensor Unary(UnaryOp op, Tensor x, double p0, double p1);

    /// <summary>op over the dims marked in <paramref name="reduced"/>, shaped <paramref name="outShape"/>; F32 x.</summary>
    Tensor Reduce(ReduceOp op, Tensor x, bool[] reduced, int[] outShape);

    /// <summary>Batched a·b (≥ 2-D, batch dims broadcast) shaped <paramref name="outShape"/>: F64·F64 → F64, anything
    /// else → F32 (16-bit operands multiply in 16 bits with F32 accumulation).</summary>
    Tensor MatMul(Tensor a, Tensor b, int[] outShape);

    /// <summary>Softmax (or log-softmax) over the last dim of contiguous F32 x.</summary>
    Tensor Softmax(Tensor x, bool log);

    /// <summary>Its backward from the saved output y and the incoming gradient g (both contiguous).</summary>
    Tensor SoftmaxBackward(Tensor y, Tensor g, bool log);

    /// <summary>LayerNorm / RMSNorm over the last dim: the output and the per-row mean and 1/σ.</summary>
    (Tensor Y, Tensor Mean, Tensor Rstd) Norm(Tensor x, Tensor? weight, Tensor? bias, double eps, bool rms);

    /// <summary>The norm's input gradient and x̂ (for the weight gradient).</summary>
    (Tensor Dx, Tensor Xhat) NormBackward(Tensor x, Tensor g, Tensor mean, Tensor rstd, Tensor? weight, bool rms);

    /// <summary>out[o, j, i] = source[o, index[j], i] for dense F32 source viewed as [outer, dimSize, inner]; index
    /// entries are already checked to lie in [0, dimSize).</summary>
    Tensor IndexSelect(Tensor source, long[] index, long outer, int dimSize, long inner, int[] outShape);

    /// <summary>The adjoint of <see cref="IndexSelect"/>: zeros shaped <paramref name="inShape"/> with acc[o, index[j], i] += g[o, j, i].</summary>
    Tensor IndexAdd(Tensor g, long[] index, long outer, int dimSize, long inner, int[] inShape);

    /// <summary>condition ? a : b over dense, equally shaped tensors (U8 condition, 4-byte elements).</summary>
    Tensor Where(Tensor condition, Tensor a, Tensor b);

    /// <summary>The F32 inverted-dropout mask of <see cref="Tensor.DropoutMaskAt"/> (Philox counters from
    /// <paramref name="first"/>, key (<paramref name="key0"/>, <paramref name="key1"/>)), drawn on <paramref name="device"/>.</summary>
    Tensor DropoutMask(int[] shape, double p, uint key0, uint key1, long first, Device device);

    /// <summary>One AdamW step in place on dense F32 p, m, v with gradient g (all on this device), each operation rounded
    /// to F32 in the order of Peft.Nn's unfused AdamW: p·decay (when <paramref name="decayOn"/>), m·β₁ + g·(1−β₁),
    /// v·β₂ + g²·(1−β₂), p + m / (√v·invSqrtBc2 + ε)·stepSize.</summary>
    void AdamW(Tensor p, Tensor g, Tensor m, Tensor v, float decay, bool decayOn, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2, float invSqrtBc2, float eps, float stepSize);

    /// <summary><see cref="AdamW"/> over many tensors in one pass (a parameter group's): item i steps p[i] with g[i],
    /// m[i], v[i], all dense F32 on this device, with the same factors and the same rounding.</summary>
    void AdamWMulti(Tensor[] p, Tensor[] g, Tensor[] m, Tensor[] v, float decay, bool decayOn, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2, float invSqrtBc2, float eps, float stepSize);

    /// <summary>Fused cross-entropy of dense F32 logits [rows, C]: the per-row loss and log-sum-exp.</summary>
    (Tensor Loss, Tensor Lse) CrossEntropy(Tensor logits, long[] targets, long ignoreIndex, double smoothing);

    /// <summary>d logits = scale[r]·(softmax − target distribution); zero rows for ignored targets.</summary>
    Tensor CrossEntropyBackward(Tensor logits, long[] targets, Tensor lse, Tensor scale, long ignoreIndex, double smoothing);

    /// <summary>Fused attention over dense F32 q [BH, Tq, D], k and v [BH, Tk, D] (D ≤ 128): the output and each row's
    /// log-sum-exp (<see cref="Cpu.AttentionReference"/>); <paramref name="keyMask"/> is a dense U8 [B, Tk] (1 = attend)
    /// on this device or null; causal hides key j from query i when j &gt; i + <paramref name="causalOffset"/>.</summary>
    /// <paramref name="dropout"/>, when set, drops probabilities in-kernel with the composite's mask (<see cref="AttentionDropout"/>).
    (Tensor O, Tensor Lse) Attention(Tensor q, Tensor k, Tensor v, Tensor? keyMask, int heads, bool causal, long causalOffset, double scale, AttentionDropout? dropout);

    /// <summary>Its backward from the saved output and log-sum-exp and the incoming gradient g: dq, dk, dv.</summary>
    (Tensor Dq, Tensor Dk, Tensor Dv) AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor g, Tensor lse, Tensor? keyMask, int heads, bool causal, long causalOffset, double scale, AttentionDropout? dropout);

    /// <summary>LoHa's ΔW = s·(a1·b1) ⊙ (a2·b2) from dense F32 a1, a2 [M, R] and b1, b2 [R, N]
    /// (<see cref="Cpu.LowRankHadamard"/>).</summary>
    Tensor LowRankHadamard(Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale);

    /// <summary>Its backward's element-wise part from dense F32 g [M, N]: G1 = s·g ⊙ (a2·b2) when
    /// <paramref name="want1"/>, G2 = s·g ⊙ (a1·b1) when <paramref name="want2"/> (null otherwise).</summary>
    (Tensor? G1, Tensor? G2) LowRankHadamardBackward(Tensor g, Tensor a1, Tensor b1, Tensor a2, Tensor b2, double scale, bool want1, bool want2);

    /// <summary>A mixed-adapter LoRA batch (SGMV): a copy of dense F32 <paramref name="baseOutput"/> [rows, C] with
    /// s_i·(x[r]·A_iᵀ)·B_iᵀ added to each row r whose <paramref name="rowAdapter"/> is i ≥ 0 (<see cref="Cpu.SegmentedLora"/>).</summary>
    Tensor SegmentedLora(Tensor baseOutput, Tensor x, int[] rowAdapter, Tensor[] a, Tensor[] b, float[] scales);

    /// <summary>LLM.int8 row-wise dequantization: dense q [rows, cols] I8 and scb [rows] F32 → q·(scb/127) as F32
    /// (<see cref="Quantization.Int8RowWise"/>).</summary>
    Tensor DequantizeInt8(Tensor q, Tensor scb);

    /// <summary>NF4: dense packed U8 codes (first of a pair in the high nibble) × F32 absmax per 64 → F32
    /// [<paramref name="shape"/>] (<see cref="Quantization.Nf4"/>).</summary>
    Tensor DequantizeNf4(Tensor packed, Tensor absmax, int[] shape);

    /// <summary>Double quantization's statistics: Blockwise8.Code[codes[b]]·nested[b / 256] + offset as F32
    /// (<see cref="Quantization.DoubleQuantizedAbsmax"/>).</summary>
    Tensor DequantizeBlockwise8(Tensor codes, Tensor nestedAbsmax, float offset);
}
