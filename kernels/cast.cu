// cast.cu — dtype conversion kernels.
// Computes: out[i] = convert(in[i]) for i < n over contiguous buffers.
// Layout: 1-D, any length; the main loop moves 8 elements per thread per step (16-byte bf16 loads/stores for
//   the f32→bf16 direction's output and the bf16→f32 direction's input), a scalar tail handles n % 8.
// Dtypes: f32 → bf16 (round to nearest even, as Peft.Core's BFloat16.FromSingle) and bf16 → f32 (exact).
// Tolerance: bit-exact against the CPU reference (Peft.Core Cast.FloatToBf16 / Bf16ToFloat).
#include "peft_kernels.h"

namespace {
constexpr int kVec = 8;
}

extern "C" __global__ void cast_f32_to_bf16(const float* __restrict__ in, __nv_bfloat16* __restrict__ out, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t vecCount = n / kVec;
    for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < vecCount; v += stride) {
        const float4 a = reinterpret_cast<const float4*>(in)[2 * v];
        const float4 b = reinterpret_cast<const float4*>(in)[2 * v + 1];
        __nv_bfloat162 packed[4] = {
            __floats2bfloat162_rn(a.x, a.y), __floats2bfloat162_rn(a.z, a.w),
            __floats2bfloat162_rn(b.x, b.y), __floats2bfloat162_rn(b.z, b.w)};
        reinterpret_cast<uint4*>(out)[v] = *reinterpret_cast<const uint4*>(packed);
    }
    for (int64_t i = vecCount * kVec + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __float2bfloat16_rn(in[i]);
}

extern "C" __global__ void cast_bf16_to_f32(const __nv_bfloat16* __restrict__ in, float* __restrict__ out, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t vecCount = n / kVec;
    for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < vecCount; v += stride) {
        const uint4 raw = reinterpret_cast<const uint4*>(in)[v];
        const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
        const float2 f0 = __bfloat1622float2(h[0]), f1 = __bfloat1622float2(h[1]);
        const float2 f2 = __bfloat1622float2(h[2]), f3 = __bfloat1622float2(h[3]);
        reinterpret_cast<float4*>(out)[2 * v] = make_float4(f0.x, f0.y, f1.x, f1.y);
        reinterpret_cast<float4*>(out)[2 * v + 1] = make_float4(f2.x, f2.y, f3.x, f3.y);
    }
    for (int64_t i = vecCount * kVec + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __bfloat162float(in[i]);
}
