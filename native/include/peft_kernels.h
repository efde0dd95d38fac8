// Every CUDA kernel of Peft.Native, declared once. Kernels are extern "C" so their PTX entry names equal the names
// the C# launchers use (no C++ mangling across the boundary); each name carries its dtype (cast_f32_to_bf16).
// kernels/*.cu include this header, so a definition that drifts from its declaration fails to compile.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

// A strided iteration space for the element-wise kernels, passed by value: `rank` dims (outermost first, at most
// 8) and two stride sets in elements (0 along a broadcast dim). The host merges dims that are dense in both stride
// sets first, so two dense same-shape operands arrive as rank 1. Mirrored by Peft.Cuda's StridedLayout.
struct peft_strides {
    int32_t rank;
    int32_t unused;
    int64_t shape[8];
    int64_t a[8];
    int64_t b[8];
};

extern "C" {

// kernels/cast.cu — dtype conversion. f32 → bf16 rounds to nearest even (NaN stays NaN); bf16 → f32 is exact.
__global__ void cast_f32_to_bf16(const float* __restrict__ in, __nv_bfloat16* __restrict__ out, int64_t n);
__global__ void cast_bf16_to_f32(const __nv_bfloat16* __restrict__ in, float* __restrict__ out, int64_t n);
__global__ void cast_f32_to_f16(const float* __restrict__ in, __half* __restrict__ out, int64_t n);
__global__ void cast_f16_to_f32(const __half* __restrict__ in, float* __restrict__ out, int64_t n);
__global__ void cast_i8_to_f32(const int8_t* __restrict__ in, float* __restrict__ out, int64_t n);
__global__ void cast_u8_to_f32(const uint8_t* __restrict__ in, float* __restrict__ out, int64_t n);
__global__ void cast_f32_to_u8(const float* __restrict__ in, uint8_t* __restrict__ out, int64_t n);

// kernels/elementwise.cu — the element-wise ops behind Tensor's front-ends (CPU references: Peft.Core.Cpu's
// Elementwise, Unary and StridedCopy). `op` numbers are listed in the .cu file and mirrored by CudaOps.
//   binary: out[i] = op(a[offset_a(i)], b[offset_b(i)]) with out dense over s.shape and a/b strided by s.a/s.b;
//   unary:  y[i] = op(x[i]; p0, p1) over dense buffers;
//   strided_copy: dst[offset_b(i)] = src[offset_a(i)], a bit copy of 1, 2, 4 or 8-byte elements (named by the dtype
//   of that width; any dtype of the width uses it).
__global__ void binary_f32(int32_t op, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, int64_t n, peft_strides s);
__global__ void unary_f32(int32_t op, const float* __restrict__ x, float* __restrict__ y, int64_t n, float p0, float p1);
__global__ void strided_copy_u8(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t n, peft_strides s);
__global__ void strided_copy_f16(const uint16_t* __restrict__ src, uint16_t* __restrict__ dst, int64_t n, peft_strides s);
__global__ void strided_copy_f32(const uint32_t* __restrict__ src, uint32_t* __restrict__ dst, int64_t n, peft_strides s);
__global__ void strided_copy_f64(const uint64_t* __restrict__ src, uint64_t* __restrict__ dst, int64_t n, peft_strides s);

// kernels/rows.cu — row-wise reductions and fused row ops (CPU references: Peft.Core.Cpu's Reduce, RowSoftmax, Norms).
//   reduce_rows: out[r] = op over x[r, 0..n) (op 0 sum, 1 max, 2 min; NaN propagates through max/min as on the CPU);
//   reduce_mid:  out[o, i] = op over x[o, 0..r, i] for x [outer, r, inner] (bias gradients: no transposed copy);
//   softmax_rows(_backward): softmax or log-softmax over the last dim and its backward from the saved output;
//   norm_rows(_backward): LayerNorm (rms = 0) or RMSNorm (rms = 1) with optional weight/bias (null pointers), saving
//   mean and 1/σ per row; backward writes dx and x̂ (dW = Σ g⊙x̂ and dB = Σ g are reductions on the host side).
__global__ void reduce_rows_f32(int32_t op, const float* __restrict__ x, float* __restrict__ out, int64_t rows, int64_t n);
__global__ void reduce_mid_f32(int32_t op, const float* __restrict__ x, float* __restrict__ out, int64_t outer, int64_t r, int64_t inner);
__global__ void softmax_rows_f32(const float* __restrict__ x, float* __restrict__ y, int64_t rows, int64_t n, int32_t log);
__global__ void softmax_rows_backward_f32(const float* __restrict__ y, const float* __restrict__ g, float* __restrict__ dx, int64_t rows, int64_t n, int32_t log);
__global__ void norm_rows_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
                              float* __restrict__ mean, float* __restrict__ rstd, int64_t rows, int64_t n, float eps, int32_t rms);
__global__ void norm_rows_backward_f32(const float* __restrict__ x, const float* __restrict__ g, const float* __restrict__ mean, const float* __restrict__ rstd,
                                       const float* __restrict__ w, float* __restrict__ dx, float* __restrict__ xhat, int64_t rows, int64_t n, int32_t rms);

// kernels/dequant.cu — quantized base weights to a compute-dtype scratch buffer (CPU references: Peft.Core.Quantization).
__global__ void dequant_nf4_f32(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, float* __restrict__ out, int64_t n);
__global__ void dequant_nf4_bf16(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, __nv_bfloat16* __restrict__ out, int64_t n);
__global__ void dequant_int8_rowwise_f32(const int8_t* __restrict__ q, const float* __restrict__ scb, float* __restrict__ out, int64_t rows, int64_t cols);
__global__ void dequant_blockwise8_f32(const uint8_t* __restrict__ codes, const float* __restrict__ code_table, const float* __restrict__ nested_absmax, float offset, float* __restrict__ out, int64_t n);
__global__ void dequant_int8_rowwise_bf16(const int8_t* __restrict__ q, const float* __restrict__ scb, __nv_bfloat16* __restrict__ out, int64_t rows, int64_t cols);

// kernels/index.cu — index gathers, their scatter-add backward, where, fused cross-entropy (CPU references:
// Peft.Core.Cpu's Indexing and CrossEntropyKernel). Indices are int64 and range-checked by the host.
__global__ void index_select_f32(const uint32_t* __restrict__ src, uint32_t* __restrict__ dst, const int64_t* __restrict__ idx, int64_t outer, int64_t dim, int64_t m, int64_t inner);
__global__ void index_add_f32(const float* __restrict__ src, float* __restrict__ acc, const int64_t* __restrict__ rows, const int64_t* __restrict__ starts,
                              const int64_t* __restrict__ positions, int64_t unique, int64_t outer, int64_t dim, int64_t m, int64_t inner);
__global__ void where_f32(const uint8_t* __restrict__ cond, const uint32_t* __restrict__ a, const uint32_t* __restrict__ b, uint32_t* __restrict__ out, int64_t n);
__global__ void cross_entropy_f32(const float* __restrict__ x, const int64_t* __restrict__ targets, float* __restrict__ loss, float* __restrict__ lse,
                                  int64_t rows, int64_t c, int64_t ignore_index, float smoothing);
__global__ void cross_entropy_backward_f32(const float* __restrict__ x, const int64_t* __restrict__ targets, const float* __restrict__ lse, const float* __restrict__ scale,
                                           float* __restrict__ dx, int64_t rows, int64_t c, int64_t ignore_index, float smoothing);

// kernels/random.cu — the inverted-dropout mask from Peft.Core's Philox stream (counter first + i/4, key = seed), so
// CPU and GPU runs drop the same elements (CPU reference: Tensor.DropoutMask).
__global__ void dropout_mask_f32(float* __restrict__ out, int64_t n, int64_t first, uint32_t k0, uint32_t k1, double p, float scale);

// kernels/optim.cu — torch's AdamW step for one F32 parameter in one pass, rounded op by op as Peft.Nn's AdamW does
// (CPU reference: AdamW.Update's tensor ops), so fused and unfused steps agree bit for bit.
__global__ void adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v, int64_t n,
                          float decay, int32_t decay_on, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                          float inv_sqrt_bc2, float eps, float step_size);
__global__ void adamw_multi_f32(const int64_t* __restrict__ tensors, const int64_t* __restrict__ chunks,
                                float decay, int32_t decay_on, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                                float inv_sqrt_bc2, float eps, float step_size);

// kernels/lora.cu — the thin products of a LoRA layer on tensor cores (rank R = 16, 32; bf16 in/out, float32 accumulation).
//   shrink: out[M, R] = scale · x[M, K] · W(j, k)ᵀ, W stored [R, K] (rk) or [K, R] (kr);
//   expand: out[M, C] = beta · out + scale · t[M, R] · W(c, j)ᵀ, W stored [C, R] (cr) or [R, C] (rc).
__global__ void lora_shrink_rk_r16_bf16(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out, int64_t M, int64_t K, float scale);
__global__ void lora_shrink_kr_r16_bf16(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out, int64_t M, int64_t K, float scale);
__global__ void lora_expand_cr_r16_bf16(const __nv_bfloat16* __restrict__ t, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out, int64_t M, int64_t C, float scale, float beta);
__global__ void lora_expand_rc_r16_bf16(const __nv_bfloat16* __restrict__ t, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out, int64_t M, int64_t C, float scale, float beta);
__global__ void lora_shrink_rk_r32_bf16(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out, int64_t M, int64_t K, float scale);
__global__ void lora_shrink_kr_r32_bf16(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out, int64_t M, int64_t K, float scale);
__global__ void lora_expand_cr_r32_bf16(const __nv_bfloat16* __restrict__ t, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out, int64_t M, int64_t C, float scale, float beta);
__global__ void lora_expand_rc_r32_bf16(const __nv_bfloat16* __restrict__ t, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out, int64_t M, int64_t C, float scale, float beta);


// kernels/attention.cu — fused scaled-dot-product attention (flash-style; scores never stored), F32. CPU reference:
// Peft.Core's FusedAttention (and the composite matmul + softmax + matmul it equals). q/o/do [BH, Tq, D], k/v
// [BH, Tk, D], mask U8 [B, Tk] (1 = attend) or null, lse/delta [BH, Tq]; D ≤ 128. drop_p > 0: dropout on the
// probabilities with the composite's Philox mask from counter drop_first (drop_scale = 1/(1−p) as F32).
__global__ void attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                  const uint8_t* __restrict__ mask, float* __restrict__ o, float* __restrict__ lse,
                                  int64_t heads, int64_t tq, int64_t tk, int64_t d, int32_t causal, int64_t offset, float scale,
                                  double drop_p, float drop_scale, uint32_t k0, uint32_t k1, int64_t drop_first);
__global__ void attention_bwd_delta_f32(const float* __restrict__ o, const float* __restrict__ g, float* __restrict__ delta, int64_t rows, int64_t d);
__global__ void attention_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                     const uint8_t* __restrict__ mask, const float* __restrict__ g, const float* __restrict__ lse,
                                     const float* __restrict__ delta, float* __restrict__ dq,
                                     int64_t heads, int64_t tq, int64_t tk, int64_t d, int32_t causal, int64_t offset, float scale,
                                  double drop_p, float drop_scale, uint32_t k0, uint32_t k1, int64_t drop_first);
__global__ void attention_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                       const uint8_t* __restrict__ mask, const float* __restrict__ g, const float* __restrict__ lse,
                                       const float* __restrict__ delta, float* __restrict__ dk, float* __restrict__ dv,
                                       int64_t heads, int64_t tq, int64_t tk, int64_t d, int32_t causal, int64_t offset, float scale,
                                  double drop_p, float drop_scale, uint32_t k0, uint32_t k1, int64_t drop_first);

// kernels/lycoris.cu — LoHa's ΔW = s·(a1·b1) ⊙ (a2·b2) without the rank-R products stored, and its backward's
// element-wise part g1 = s·g ⊙ (a2·b2), g2 = s·g ⊙ (a1·b1) (null = not wanted). F32, dense; a [M, R], b [R, N].
// CPU reference: Peft.Core.Cpu.LowRankHadamard. Grid (⌈N/64⌉, ⌈M/32⌉), 256 threads.
__global__ void loha_delta_f32(const float* __restrict__ a1, const float* __restrict__ b1, const float* __restrict__ a2,
                               const float* __restrict__ b2, float* __restrict__ out, int64_t M, int64_t N, int64_t R, float scale);
__global__ void loha_delta_bwd_f32(const float* __restrict__ g, const float* __restrict__ a1, const float* __restrict__ b1,
                                   const float* __restrict__ a2, const float* __restrict__ b2, float* __restrict__ g1,
                                   float* __restrict__ g2, int64_t M, int64_t N, int64_t R, float scale);

// kernels/sgmv.cu — a mixed-adapter LoRA batch (SGMV): t = x[rows]·A_aᵀ per tile of ≤ 16 positions of one adapter,
// then y[rows] += s_a·t·B_aᵀ in place. tiles = (first position, count, adapter) triples; a_ptrs/b_ptrs hold each
// adapter's dense F32 A [r, K] / B [C, r] addresses; r ≤ 64. CPU reference: Peft.Core.Cpu.SegmentedLora.
// Shrink grid (tiles), 256 threads; expand grid (tiles, ⌈C/256⌉), 256 threads.
__global__ void sgmv_shrink_f32(const float* __restrict__ x, float* __restrict__ t, const int64_t* __restrict__ rows,
                                const int32_t* __restrict__ tiles, const int64_t* __restrict__ a_ptrs,
                                const int32_t* __restrict__ ranks, int64_t K, int32_t r_stride);
__global__ void sgmv_expand_f32(const float* __restrict__ t, float* __restrict__ y, const int64_t* __restrict__ rows,
                                const int32_t* __restrict__ tiles, const int64_t* __restrict__ b_ptrs,
                                const int32_t* __restrict__ ranks, const float* __restrict__ scales, int64_t C, int32_t r_stride);
}
