// lora.cu — the thin products of a LoRA layer on tensor cores (WMMA bf16 m16n16k16, float32 accumulation).
// The big base GEMM stays cuBLAS's. Computes (bf16 in and out; R = rank, a compile-time 16 or 32):
//   lora_shrink_{rk,kr}_r{R}_bf16:  out[m, j] = scale · Σ_k x[m, k] · W(j, k)            out [M, R]
//       rk: W stored [R, K] (lora_A: t = x·Aᵀ);  kr: W stored [K, R] (lora_B: u = dY·B)
//   lora_expand_{cr,rc}_r{R}_bf16:  out[m, c] = beta · out[m, c] + scale · Σ_j t[m, j] · W(c, j)   out [M, C]
//       cr: W stored [C, R] (lora_B: y = s·t·Bᵀ);  rc: W stored [R, C] (lora_A: dX = s·u·A)
// Layout: row-major, contiguous, 32-byte aligned; M a multiple of 16, K a multiple of 16 (shrink), C a multiple of 64
//   (expand). The C# launchers check and otherwise use cuBLAS. beta is 0 (out only written) or 1.
// Shrink: a block of 8 warps owns 16 rows; its warps split K in 16-wide tiles (one mma per tile and 16 outputs),
//   and the 8 partial 16×R tiles are summed in shared memory.
// Expand: a warp owns 16 rows × 64 columns (4 accumulators over R / 16 mma steps); the tile goes through shared
//   memory so each lane writes 16 contiguous bytes (a warp: 16 rows × 128 bytes).
// History: a CUDA-core version (a lane = 8 values of K, all R outputs in registers) ran 2-3× slower than cuBLAS
//   (shrink 45-62 µs, expand 36-50 µs at 4096² × 16 on an H100): each lane re-read all of W for 4 rows.
// Tolerance: float32 accumulation in another order than the CPU: ‖err‖/‖ref‖ ≤ 1e-2 against float64 with bf16
//   output rounding (the GPU tests), as cuBLAS.
#include "peft_kernels.h"
#include "peft_device.cuh"
#include <mma.h>
#include <type_traits>

namespace {
using namespace nvcuda;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
template <typename Layout> using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, Layout>;

constexpr int kWarps = 8, kUnrollK = 4;

template <int R, bool KMajor>
__device__ void shrink(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out,
                       int64_t M, int64_t K, float scale)
{
    constexpr int F = R / 16;
    using LayoutB = typename std::conditional<KMajor, wmma::row_major, wmma::col_major>::type;
    __shared__ __align__(32) float partial[kWarps][16 * R];
    const int warp = threadIdx.x / 32;
    for (int64_t row0 = (int64_t)blockIdx.x * 16; row0 < M; row0 += (int64_t)gridDim.x * 16) {
        FragAcc acc[F];
#pragma unroll
        for (int f = 0; f < F; f++) wmma::fill_fragment(acc[f], 0.f);
        // kUnrollK tiles' loads are issued before their mma: one 512-byte load per warp in flight left the SMs
        // waiting on memory (29 µs against cuBLAS's 20 µs at 4096² × 16).
        for (int64_t k0 = (int64_t)warp * 16; k0 < K; k0 += kWarps * 16 * kUnrollK) {
            FragA a[kUnrollK];
            FragB<LayoutB> b[kUnrollK][F];
#pragma unroll
            for (int u = 0; u < kUnrollK; u++) {
                const int64_t kk = k0 + (int64_t)u * kWarps * 16;
                if (kk >= K) break;
                wmma::load_matrix_sync(a[u], x + row0 * K + kk, (unsigned)K);
#pragma unroll
                for (int f = 0; f < F; f++) {  // b(k', j') = W(f·16 + j', kk + k')
                    if (KMajor) wmma::load_matrix_sync(b[u][f], w + kk * R + f * 16, (unsigned)R);
                    else wmma::load_matrix_sync(b[u][f], w + (int64_t)f * 16 * K + kk, (unsigned)K);
                }
            }
#pragma unroll
            for (int u = 0; u < kUnrollK; u++) {
                if (k0 + (int64_t)u * kWarps * 16 >= K) break;
#pragma unroll
                for (int f = 0; f < F; f++) wmma::mma_sync(acc[f], a[u], b[u][f], acc[f]);
            }
        }
#pragma unroll
        for (int f = 0; f < F; f++) wmma::store_matrix_sync(&partial[warp][f * 16], acc[f], R, wmma::mem_row_major);
        __syncthreads();
        for (int i = threadIdx.x; i < 16 * R; i += blockDim.x) {
            float v = 0.f;
#pragma unroll
            for (int wi = 0; wi < kWarps; wi++) v += partial[wi][i];
            out[row0 * R + i] = __float2bfloat16_rn(scale * v);  // rows row0..row0+15 are contiguous in out
        }
        __syncthreads();
    }
}

template <int R, bool CMajor>
__device__ void expand(const __nv_bfloat16* __restrict__ t, const __nv_bfloat16* __restrict__ w, __nv_bfloat16* __restrict__ out,
                       int64_t M, int64_t C, float scale, float beta)
{
    constexpr int F = R / 16, Cols = 64, Tiles = Cols / 16;
    using LayoutB = typename std::conditional<CMajor, wmma::col_major, wmma::row_major>::type;
    __shared__ __align__(32) float stage[kWarps][16 * Cols];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t colBlocks = C / Cols, tasks = M / 16 * colBlocks;
    for (int64_t task = (int64_t)blockIdx.x * kWarps + warp; task < tasks; task += (int64_t)gridDim.x * kWarps) {
        const int64_t row0 = task / colBlocks * 16, c0 = task % colBlocks * Cols;
        FragA a[F];
#pragma unroll
        for (int f = 0; f < F; f++) wmma::load_matrix_sync(a[f], t + row0 * R + f * 16, R);
#pragma unroll
        for (int tile = 0; tile < Tiles; tile++) {
            FragAcc acc;
            wmma::fill_fragment(acc, 0.f);
            const int64_t c = c0 + tile * 16;
#pragma unroll
            for (int f = 0; f < F; f++) {
                FragB<LayoutB> b;  // b(j', c') = W(c + c', f·16 + j')
                if (CMajor) wmma::load_matrix_sync(b, w + c * R + f * 16, R);
                else wmma::load_matrix_sync(b, w + (int64_t)f * 16 * C + c, (unsigned)C);
                wmma::mma_sync(acc, a[f], b, acc);
            }
            wmma::store_matrix_sync(&stage[warp][tile * 16], acc, Cols, wmma::mem_row_major);
        }
        __syncwarp();
        // 16 rows × 64 columns = 128 chunks of 8 values; a lane writes 4 of them (16 bytes each).
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int chunk = i * 32 + lane, r = chunk / 8, c8 = chunk % 8 * 8;
            const float* s = &stage[warp][r * Cols + c8];
            uint4* dst = reinterpret_cast<uint4*>(out + (row0 + r) * C + c0 + c8);
            __nv_bfloat162 h[4];
            if (beta != 0.f) {
                const uint4 old = *dst;
                const __nv_bfloat162* o = reinterpret_cast<const __nv_bfloat162*>(&old);
#pragma unroll
                for (int p = 0; p < 4; p++) {
                    const float2 ov = __bfloat1622float2(o[p]);
                    h[p] = __floats2bfloat162_rn(fmaf(beta, ov.x, scale * s[2 * p]), fmaf(beta, ov.y, scale * s[2 * p + 1]));
                }
            } else {
#pragma unroll
                for (int p = 0; p < 4; p++) h[p] = __floats2bfloat162_rn(scale * s[2 * p], scale * s[2 * p + 1]);
            }
            *dst = *reinterpret_cast<const uint4*>(h);
        }
        __syncwarp();
    }
}

}  // namespace

#define PEFT_LORA_KERNELS(R)                                                                                              \
    extern "C" __global__ void lora_shrink_rk_r##R##_bf16(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, \
                                                          __nv_bfloat16* __restrict__ out, int64_t M, int64_t K, float scale)         \
    {                                                                                                                       \
        shrink<R, false>(x, w, out, M, K, scale);                                                                          \
    }                                                                                                                       \
    extern "C" __global__ void lora_shrink_kr_r##R##_bf16(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, \
                                                          __nv_bfloat16* __restrict__ out, int64_t M, int64_t K, float scale)         \
    {                                                                                                                       \
        shrink<R, true>(x, w, out, M, K, scale);                                                                           \
    }                                                                                                                       \
    extern "C" __global__ void lora_expand_cr_r##R##_bf16(const __nv_bfloat16* __restrict__ t, const __nv_bfloat16* __restrict__ w, \
                                                          __nv_bfloat16* __restrict__ out, int64_t M, int64_t C, float scale, float beta) \
    {                                                                                                                       \
        expand<R, true>(t, w, out, M, C, scale, beta);                                                                     \
    }                                                                                                                       \
    extern "C" __global__ void lora_expand_rc_r##R##_bf16(const __nv_bfloat16* __restrict__ t, const __nv_bfloat16* __restrict__ w, \
                                                          __nv_bfloat16* __restrict__ out, int64_t M, int64_t C, float scale, float beta) \
    {                                                                                                                       \
        expand<R, false>(t, w, out, M, C, scale, beta);                                                                    \
    }

PEFT_LORA_KERNELS(16)
PEFT_LORA_KERNELS(32)
