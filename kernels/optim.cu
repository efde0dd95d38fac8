// optim.cu — optimizer updates fused into one pass per parameter.
// Computes: adamw_f32 (and adamw_multi_f32 for a list of tensors), torch.optim.AdamW's step for one F32 parameter p with gradient g and moments m, v:
//   p ← p·decay (when decay_on);  m ← m·β₁ + g·(1−β₁);  v ← v·β₂ + (g·g)·(1−β₂);
//   p ← p + (m / (√v·inv_sqrt_bc2 + ε))·step_size   with step_size = −lr/(1−β₁ᵗ), inv_sqrt_bc2 = 1/√(1−β₂ᵗ).
// Every product, sum, quotient and root is rounded to f32 separately and in the order Peft.Nn's AdamW applies its
// tensor ops (the __f*_rn intrinsics keep nvcc from contracting a·b + c into one FMA), so the fused step equals the
// unfused one bit for bit — on the CPU too, whose TensorPrimitives ops round the same way.
// Layout: dense buffers of n elements, grid-stride. Dtypes: f32 (BF16 parameters step through their F32 masters).
// Tolerance: bit-exact against the CPU AdamW.
#include "peft_kernels.h"
#include "peft_device.cuh"

namespace {
// One element's step, shared by the per-tensor and the multi-tensor kernel so both round identically.
__device__ __forceinline__ void adamw_element(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v, int64_t i,
                                              float decay, int32_t decay_on, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                                              float inv_sqrt_bc2, float eps, float step_size)
{
    float pi = p[i];
    const float gi = g[i];
    if (decay_on) pi = __fmul_rn(pi, decay);
    const float mi = __fadd_rn(__fmul_rn(m[i], beta1), __fmul_rn(gi, one_minus_beta1));
    const float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(gi, gi), one_minus_beta2));
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), inv_sqrt_bc2), eps);
    p[i] = __fadd_rn(pi, __fmul_rn(__fdiv_rn(mi, denom), step_size));
    m[i] = mi;
    v[i] = vi;
}
}  // namespace

extern "C" __global__ void adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v, int64_t n,
                                     float decay, int32_t decay_on, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                                     float inv_sqrt_bc2, float eps, float step_size)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        adamw_element(p, g, m, v, i, decay, decay_on, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_sqrt_bc2, eps, step_size);
}

// adamw_multi_f32: the same step for every tensor of a parameter group in one launch (a LoRA model has hundreds of
// small factors: one launch each cost more than their arithmetic). tensors[4t..4t+3] = addresses of tensor t's p, g,
// m, v; chunks[3c..3c+2] = (tensor, first element, count ≤ 4096) — block c steps chunk c.
extern "C" __global__ void adamw_multi_f32(const int64_t* __restrict__ tensors, const int64_t* __restrict__ chunks,
                                           float decay, int32_t decay_on, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                                           float inv_sqrt_bc2, float eps, float step_size)
{
    const int64_t t = chunks[3 * blockIdx.x], first = chunks[3 * blockIdx.x + 1], count = chunks[3 * blockIdx.x + 2];
    float* p = reinterpret_cast<float*>(tensors[4 * t]);
    const float* g = reinterpret_cast<const float*>(tensors[4 * t + 1]);
    float* m = reinterpret_cast<float*>(tensors[4 * t + 2]);
    float* v = reinterpret_cast<float*>(tensors[4 * t + 3]);
    for (int64_t i = first + threadIdx.x; i < first + count; i += blockDim.x)
        adamw_element(p, g, m, v, i, decay, decay_on, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_sqrt_bc2, eps, step_size);
}
