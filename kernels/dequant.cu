// dequant.cu — dequantization of quantized base weights into a compute-dtype scratch buffer.
// Computes:
//   dequant_int8_rowwise_*: w[i, j] = q[i, j] · (scb[i] / 127)        (LLM.int8 / bitsandbytes Int8Params)
//   dequant_nf4_*:          w[k]    = NF4[code(k)] · absmax[k / 64]     (QLoRA; two codes per byte, first in the high nibble)
//   dequant_blockwise8_f32: a[b]    = code[c[b]] · nested[b / 256] + offset
//                           (QLoRA's double quantization: NF4's absmax values stored as 8-bit codes of bitsandbytes'
//                           dynamic map, a float per 256 of them and their mean; decoded before dequant_nf4_*)
// Layouts: row-major [rows, cols] int8 + float scb[rows]; packed NF4 bytes [(n + 1) / 2] + float absmax[ceil(n / 64)].
// Dtypes: f32 and bf16 outputs (bf16 rounds to nearest even).
// Tolerance: bit-exact against the CPU references in Peft.Core.Quantization (Int8RowWise, Nf4, DoubleQuantizedAbsmax)
//   for f32 output (the decode multiplies and adds with explicit round-to-nearest intrinsics: a fused multiply-add
//   would round once where the reference rounds twice);
//   bf16 output equals the f32 reference rounded to bf16 (the same float operations in the same order).
// Memory-bound. Vector path: each thread-step turns V = 16 / sizeof(out) values (4 f32 or 8 bf16; always inside one
//   64-block, and inside one row when cols % V == 0) into exactly one 16-byte store, so a warp's store covers 512
//   contiguous bytes (a thread writing 64 contiguous bytes made every store instruction half-fill its sectors: 43% of
//   the copy ceiling). Four independent steps are loaded before any is stored (bytes in flight). One absmax/scale load
//   and one row division per step. The NF4 table sits in shared memory: a __constant__ lookup with 16 different
//   addresses per warp serialises. Misaligned views and the ragged end take a scalar path.
#include "peft_kernels.h"
#include "peft_device.cuh"

namespace {
using peft::aligned;
using peft::strided_steps;

__constant__ float kNf4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f};

template <typename T> struct Vec;  // V values of T = one 16-byte store; In8/InNf4 = the packed input of those V values
template <> struct Vec<float> { static constexpr int V = 4; using InNf4 = uint16_t; using In8 = uint32_t; };
template <> struct Vec<__nv_bfloat16> { static constexpr int V = 8; using InNf4 = uint32_t; using In8 = uint2; };

__device__ __forceinline__ void store16(float* out, int64_t k, const float (&v)[4])
{
    *reinterpret_cast<float4*>(out + k) = make_float4(v[0], v[1], v[2], v[3]);
}

__device__ __forceinline__ void store16(__nv_bfloat16* out, int64_t k, const float (&v)[8])
{
    __nv_bfloat162 h[4];
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<uint4*>(out + k) = *reinterpret_cast<const uint4*>(h);
}

__device__ __forceinline__ void store1(float* out, int64_t k, float v) { out[k] = v; }
__device__ __forceinline__ void store1(__nv_bfloat16* out, int64_t k, float v) { out[k] = __float2bfloat16_rn(v); }

template <typename T>
__device__ void nf4_body(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, T* __restrict__ out, int64_t n)
{
    constexpr int V = Vec<T>::V;
    using In = typename Vec<T>::InNf4;
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = kNf4[threadIdx.x];
    __syncthreads();
    int64_t done = 0;  // values handled by the vector path
    if (aligned(packed, sizeof(In)) && aligned(out, 16)) {
        const int64_t steps = n / V;
        strided_steps(steps,
            [&](int64_t s) { return reinterpret_cast<const In*>(packed)[s]; },
            [&](int64_t s, In raw) {
                const float scale = absmax[s * V / 64];
                const uint8_t* b = reinterpret_cast<const uint8_t*>(&raw);
                float v[V];
#pragma unroll
                for (int i = 0; i < V / 2; i++) {
                    v[2 * i] = lut[b[i] >> 4] * scale;
                    v[2 * i + 1] = lut[b[i] & 0xF] * scale;
                }
                store16(out, s * V, v);
            });
        done = steps * V;
    }
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t p = done / 2 + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < (n + 1) / 2; p += stride) {
        const uint8_t byte = packed[p];
        const int64_t k = 2 * p;
        store1(out, k, lut[byte >> 4] * absmax[k / 64]);
        if (k + 1 < n) store1(out, k + 1, lut[byte & 0xF] * absmax[(k + 1) / 64]);
    }
}

template <typename T>
__device__ void int8_body(const int8_t* __restrict__ q, const float* __restrict__ scb, T* __restrict__ out, int64_t rows, int64_t cols)
{
    constexpr int V = Vec<T>::V;
    using In = typename Vec<T>::In8;
    const int64_t n = rows * cols;
    int64_t done = 0;
    if (cols % V == 0 && aligned(q, sizeof(In)) && aligned(out, 16)) {
        const int64_t stepsPerRow = cols / V;
        strided_steps(n / V,
            [&](int64_t s) { return reinterpret_cast<const In*>(q)[s]; },
            [&](int64_t s, In raw) {
                const float scale = scb[s / stepsPerRow] / 127.0f;
                const int8_t* b = reinterpret_cast<const int8_t*>(&raw);
                float v[V];
#pragma unroll
                for (int i = 0; i < V; i++) v[i] = (float)b[i] * scale;
                store16(out, s * V, v);
            });
        done = n;
    }
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = done + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        store1(out, i, (float)q[i] * (scb[i / cols] / 127.0f));
}

}  // namespace

extern "C" __global__ void dequant_blockwise8_f32(const uint8_t* __restrict__ codes, const float* __restrict__ code_table,
    const float* __restrict__ nested_absmax, float offset, float* __restrict__ out, int64_t n)
{
    // The 256-level table is read by data-dependent index: from shared memory, not through the constant cache.
    __shared__ float table[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) table[i] = code_table[i];
    __syncthreads();
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < n; b += stride)
        out[b] = __fadd_rn(__fmul_rn(table[codes[b]], nested_absmax[b / 256]), offset);
}

extern "C" __global__ void dequant_nf4_f32(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, float* __restrict__ out, int64_t n)
{
    nf4_body(packed, absmax, out, n);
}

extern "C" __global__ void dequant_nf4_bf16(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, __nv_bfloat16* __restrict__ out, int64_t n)
{
    nf4_body(packed, absmax, out, n);
}

extern "C" __global__ void dequant_int8_rowwise_f32(const int8_t* __restrict__ q, const float* __restrict__ scb, float* __restrict__ out, int64_t rows, int64_t cols)
{
    int8_body(q, scb, out, rows, cols);
}

extern "C" __global__ void dequant_int8_rowwise_bf16(const int8_t* __restrict__ q, const float* __restrict__ scb, __nv_bfloat16* __restrict__ out, int64_t rows, int64_t cols)
{
    int8_body(q, scb, out, rows, cols);
}
