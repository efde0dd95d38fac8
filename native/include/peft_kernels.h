// Every CUDA kernel of Peft.Native, declared once. Kernels are extern "C" so their PTX entry names equal the names
// the C# launchers use (no C++ mangling across the boundary); each name carries its dtype (cast_f32_to_bf16).
// kernels/*.cu include this header, so a definition that drifts from its declaration fails to compile.
#pragma once
#include <cuda_bf16.h>
#include <cstdint>

extern "C" {

// kernels/cast.cu — dtype conversion. f32 → bf16 rounds to nearest even (NaN stays NaN); bf16 → f32 is exact.
__global__ void cast_f32_to_bf16(const float* __restrict__ in, __nv_bfloat16* __restrict__ out, int64_t n);
__global__ void cast_bf16_to_f32(const __nv_bfloat16* __restrict__ in, float* __restrict__ out, int64_t n);

// kernels/dequant.cu — quantized base weights to a compute-dtype scratch buffer (CPU references: Peft.Core.Quantization).
__global__ void dequant_nf4_f32(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, float* __restrict__ out, int64_t n);
__global__ void dequant_nf4_bf16(const uint8_t* __restrict__ packed, const float* __restrict__ absmax, __nv_bfloat16* __restrict__ out, int64_t n);
__global__ void dequant_int8_rowwise_f32(const int8_t* __restrict__ q, const float* __restrict__ scb, float* __restrict__ out, int64_t rows, int64_t cols);
__global__ void dequant_blockwise8_f32(const uint8_t* __restrict__ codes, const float* __restrict__ code_table, const float* __restrict__ nested_absmax, float offset, float* __restrict__ out, int64_t n);
__global__ void dequant_int8_rowwise_bf16(const int8_t* __restrict__ q, const float* __restrict__ scb, __nv_bfloat16* __restrict__ out, int64_t rows, int64_t cols);

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

}
