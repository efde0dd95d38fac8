// lycoris.cu — LoHa's Hadamard-product weight delta without its two rank-R products stored, F32:
//   loha_delta_f32:      out[i, j] = s · P1[i, j] · P2[i, j],  P1 = a1·b1, P2 = a2·b2  (a1, a2 [M, R]; b1, b2 [R, N])
//   loha_delta_bwd_f32:  g1 = s·g ⊙ P2 and g2 = s·g ⊙ P1 (either output may be null: not wanted); the factor
//                        gradients are then GEMMs of g1 and g2 (cuBLAS, from the C# side)
// CPU reference: Peft.Core.Cpu.LowRankHadamard, which rounds the same way — P accumulated over k = 0 … R−1 in order
// with fused multiply-adds from 0, then (s·p1)·p2 forward and (s·g)·p backward — so the two agree to the last bit
// where both FMAs are exact. Layout: dense row-major; M ≤ 65535 · 32 rows (grid y).
// Tiling: a block of 256 threads owns 32 rows × 64 columns; a thread holds 2 rows × 4 columns of both products
// (16 accumulators; columns tx, tx + 16, … so each store of a warp is 16 consecutive floats on 2 rows). R is walked
// in chunks of 16 through shared memory (the chunk's a rows and b columns of both factors, 12 KB). At LoHa's ranks
// (R ≤ 64) it is bound by writing ΔW (forward) or reading g and writing g1, g2 (backward): each once, where the
// composite of two GEMMs and two multiplies writes three M × N tensors and reads four.
#include "peft_kernels.h"
#include "peft_device.cuh"

namespace {
constexpr int kLohaRows = 32, kLohaCols = 64, kLohaChunk = 16, kLohaThreads = 256;

template <bool Backward>
__device__ void loha_tile(const float* __restrict__ a1, const float* __restrict__ b1, const float* __restrict__ a2,
                          const float* __restrict__ b2, const float* __restrict__ g, float* __restrict__ out1,
                          float* __restrict__ out2, int64_t M, int64_t N, int64_t R, float s)
{
    __shared__ float sa1[kLohaRows][kLohaChunk], sa2[kLohaRows][kLohaChunk];
    __shared__ float sb1[kLohaChunk][kLohaCols], sb2[kLohaChunk][kLohaCols];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t row0 = (int64_t)blockIdx.y * kLohaRows, col0 = (int64_t)blockIdx.x * kLohaCols;
    float p1[2][4], p2[2][4];
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
        for (int q = 0; q < 4; q++) p1[r][q] = p2[r][q] = 0.f;
    for (int64_t k0 = 0; k0 < R; k0 += kLohaChunk) {
        for (int e = threadIdx.x; e < kLohaRows * kLohaChunk; e += kLohaThreads) {
            const int i = e / kLohaChunk, k = e % kLohaChunk;
            const int64_t row = row0 + i, kk = k0 + k;
            const bool inside = row < M && kk < R;
            sa1[i][k] = inside ? a1[row * R + kk] : 0.f;
            sa2[i][k] = inside ? a2[row * R + kk] : 0.f;
        }
        for (int e = threadIdx.x; e < kLohaChunk * kLohaCols; e += kLohaThreads) {
            const int k = e / kLohaCols, j = e % kLohaCols;
            const int64_t kk = k0 + k, col = col0 + j;
            const bool inside = kk < R && col < N;
            sb1[k][j] = inside ? b1[kk * N + col] : 0.f;
            sb2[k][j] = inside ? b2[kk * N + col] : 0.f;
        }
        __syncthreads();
        // Only the chunk's real k: the CPU adds exactly R terms, and fmaf(0, 0, −0) would turn a −0 into +0.
        const int kn = R - k0 < kLohaChunk ? (int)(R - k0) : kLohaChunk;
        for (int k = 0; k < kn; k++) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const float x1 = sa1[ty * 2 + r][k], x2 = sa2[ty * 2 + r][k];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    p1[r][q] = fmaf(x1, sb1[k][tx + 16 * q], p1[r][q]);
                    p2[r][q] = fmaf(x2, sb2[k][tx + 16 * q], p2[r][q]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t row = row0 + ty * 2 + r;
        if (row >= M) continue;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int64_t col = col0 + tx + 16 * q;
            if (col >= N) continue;
            const int64_t at = row * N + col;
            if (!Backward) {
                out1[at] = s * p1[r][q] * p2[r][q];
            } else {
                const float sg = s * g[at];
                if (out1) out1[at] = sg * p2[r][q];
                if (out2) out2[at] = sg * p1[r][q];
            }
        }
    }
}
}  // namespace

extern "C" __global__ void loha_delta_f32(const float* __restrict__ a1, const float* __restrict__ b1, const float* __restrict__ a2,
                                          const float* __restrict__ b2, float* __restrict__ out, int64_t M, int64_t N, int64_t R, float scale)
{
    loha_tile<false>(a1, b1, a2, b2, nullptr, out, nullptr, M, N, R, scale);
}

extern "C" __global__ void loha_delta_bwd_f32(const float* __restrict__ g, const float* __restrict__ a1, const float* __restrict__ b1,
                                              const float* __restrict__ a2, const float* __restrict__ b2, float* __restrict__ g1,
                                              float* __restrict__ g2, int64_t M, int64_t N, int64_t R, float scale)
{
    loha_tile<true>(a1, b1, a2, b2, g, g1, g2, M, N, R, scale);
}
