// dequant.cu — dequantization of quantized base weights into a compute-dtype scratch buffer.
// Computes:
//   dequant_int8_rowwise_*: w[i, j] = q[i, j] · scb[i] / 127          (LLM.int8 / bitsandbytes Int8Params)
//   dequant_nf4_*:          w[k]    = NF4[code(k)] · absmax[k / 64]     (QLoRA; two codes per byte, first in the high nibble)
// Layouts: row-major [rows, cols] int8 + float scb[rows]; packed NF4 bytes [(n + 1) / 2] + float absmax[ceil(n / 64)].
// Dtypes: f32 and bf16 outputs (bf16 rounds to nearest even).
// Tolerance: bit-exact against the CPU references in Peft.Core.Quantization (Int8RowWise, Nf4) for f32 output;
//   bf16 output equals the f32 reference rounded to bf16.
// Each thread handles 2 output elements of NF4 (one packed byte) or 4 int8 elements, grid-stride; memory-bound.
#include "peft_kernels.h"

namespace {

__constant__ float kNf4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f};

template <typename Store>
__device__ void nf4_body(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, int64_t n, Store store)
{
    const int64_t pairs = (n + 1) / 2;
    for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < pairs; p += (int64_t)gridDim.x * blockDim.x) {
        const uint8_t byte = packed[p];
        const int64_t k = 2 * p;
        store(k, kNf4[byte >> 4] * absmax[k / 64]);
        if (k + 1 < n) store(k + 1, kNf4[byte & 0xF] * absmax[(k + 1) / 64]);
    }
}

template <typename Store>
__device__ void int8_body(const int8_t* __restrict__ q, const float* __restrict__ scb, int64_t rows, int64_t cols, Store store)
{
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        store(i, (float)q[i] * (scb[i / cols] / 127.0f));
}

}  // namespace

extern "C" __global__ void dequant_nf4_f32(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, float* __restrict__ out, int64_t n)
{
    nf4_body(packed, absmax, n, [out](int64_t k, float v) { out[k] = v; });
}

extern "C" __global__ void dequant_nf4_bf16(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, __nv_bfloat16* __restrict__ out, int64_t n)
{
    nf4_body(packed, absmax, n, [out](int64_t k, float v) { out[k] = __float2bfloat16_rn(v); });
}

extern "C" __global__ void dequant_int8_rowwise_f32(const int8_t* __restrict__ q, const float* __restrict__ scb, float* __restrict__ out, int64_t rows, int64_t cols)
{
    int8_body(q, scb, rows, cols, [out](int64_t i, float v) { out[i] = v; });
}

extern "C" __global__ void dequant_int8_rowwise_bf16(const int8_t* __restrict__ q, const float* __restrict__ scb, __nv_bfloat16* __restrict__ out, int64_t rows, int64_t cols)
{
    int8_body(q, scb, rows, cols, [out](int64_t i, float v) { out[i] = __float2bfloat16_rn(v); });
}
