// cast.cu — dtype conversion kernels.
// Computes: out[i] = convert(in[i]) for i < n over contiguous buffers.
// Layout: 1-D, any length. Each thread-step converts the values of one 16-byte vector of the wider side (4 f32 ↔ 4
//   bf16: one 16-byte and one 8-byte access), lanes adjacent, so every warp access is contiguous; steps go through
//   peft::strided_steps (four loads in flight per thread). A scalar tail handles n % 4 and misaligned views.
//   (History: converting 8 values per thread with two 16-byte f32 stores reached 75% of the copy ceiling on an H100
//   for bf16 → f32, 65% when unrolled; its stores half-filled their sectors.)
// Dtypes: f32 → bf16 / f16 (round to nearest even, as Peft.Core's BFloat16.FromSingle and (Half) casts) and
//   bf16 / f16 → f32 (exact). The f16 pair is scalar per element (it feeds mixed precision, not a hot path yet).
//   i8 → f32 (exact): LLM.int8's weight codes as the operand of its integer-valued f32 product; one value per
//   thread-step (it runs once per int8 layer and forward, beside a GEMM 2·tokens times larger).
//   u8 ↔ f32: masks (comparison results to U8, U8 masks to floats); f32 → u8 is .NET's conversion (the CPU
//   reference): truncate toward zero saturating to int32, keep the low 8 bits (−3 → 253, 300 → 44, ∞ → 255, NaN → 0).
// Tolerance: bit-exact against the CPU reference (Peft.Core Cast.FloatToBf16 / Bf16ToFloat).
#include "peft_kernels.h"
#include "peft_device.cuh"

extern "C" __global__ void cast_f32_to_bf16(const float* __restrict__ in, __nv_bfloat16* __restrict__ out, int64_t n)
{
    const int64_t steps = peft::aligned(in, 16) && peft::aligned(out, 8) ? n / 4 : 0;
    peft::strided_steps(steps,
        [&](int64_t s) { return reinterpret_cast<const float4*>(in)[s]; },
        [&](int64_t s, float4 v) {
            __nv_bfloat162 h[2] = {__floats2bfloat162_rn(v.x, v.y), __floats2bfloat162_rn(v.z, v.w)};
            reinterpret_cast<uint2*>(out)[s] = *reinterpret_cast<const uint2*>(h);
        });
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = steps * 4 + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __float2bfloat16_rn(in[i]);
}

extern "C" __global__ void cast_bf16_to_f32(const __nv_bfloat16* __restrict__ in, float* __restrict__ out, int64_t n)
{
    const int64_t steps = peft::aligned(in, 8) && peft::aligned(out, 16) ? n / 4 : 0;
    peft::strided_steps(steps,
        [&](int64_t s) { return reinterpret_cast<const uint2*>(in)[s]; },
        [&](int64_t s, uint2 raw) {
            const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
            const float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
            reinterpret_cast<float4*>(out)[s] = make_float4(a.x, a.y, b.x, b.y);
        });
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = steps * 4 + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __bfloat162float(in[i]);
}

extern "C" __global__ void cast_f32_to_f16(const float* __restrict__ in, __half* __restrict__ out, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = __float2half_rn(in[i]);
}

extern "C" __global__ void cast_f16_to_f32(const __half* __restrict__ in, float* __restrict__ out, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = __half2float(in[i]);
}

extern "C" __global__ void cast_i8_to_f32(const int8_t* __restrict__ in, float* __restrict__ out, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = (float)in[i];
}

extern "C" __global__ void cast_u8_to_f32(const uint8_t* __restrict__ in, float* __restrict__ out, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = (float)in[i];
}

extern "C" __global__ void cast_f32_to_u8(const float* __restrict__ in, uint8_t* __restrict__ out, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = in[i];
        const int32_t q = v != v ? 0 : v >= 2147483647.f ? INT32_MAX : v <= -2147483648.f ? INT32_MIN : (int32_t)v;
        out[i] = (uint8_t)q;
    }
}
