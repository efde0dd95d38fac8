// sgmv.cu — a mixed-adapter LoRA batch in two launches whatever the number of adapters (SGMV, as punica/S-LoRA), F32:
//   sgmv_shrink_f32:  t[p, j] = Σ_k x[rows[p], k] · A_a[j, k]           (j < r_a; t is [positions, r_stride])
//   sgmv_expand_f32:  y[rows[p], c] += s_a · Σ_j t[p, j] · B_a[c, j]     (in place on a copy of the base output)
// The host sorts the rows that have an adapter by adapter (positions p; rows[p] = the row in the batch) and cuts each
// adapter's run into tiles of ≤ 16 positions: tiles[3i..3i+2] = (first position, count, adapter). Adapter a's factors
// are dense row-major A [r_a, K] and B [C, r_a] at a_ptrs[a], b_ptrs[a]; r_a ≤ 64. Rows are read and written where
// they are: nothing is gathered or copied per adapter. CPU reference: Peft.Core.Cpu.SegmentedLora (sums in order;
// here lane-strided and tree-reduced: tolerance-equal).
// Shrink: a block of 8 warps per tile, a warp per 2 positions; lanes stride K (coalesced x and A rows) and keep 16
// of the r outputs at a time, then reduce them across the warp. Expand: a block per (tile, 256 columns), a thread per
// column; the tile's t in shared memory 16 ranks at a time, B's row for the column in registers.
#include "peft_kernels.h"
#include "peft_device.cuh"

namespace {
constexpr int kSgmvTile = 16, kSgmvChunk = 16;
}

extern "C" __global__ void sgmv_shrink_f32(const float* __restrict__ x, float* __restrict__ t, const int64_t* __restrict__ rows,
                                           const int32_t* __restrict__ tiles, const int64_t* __restrict__ a_ptrs,
                                           const int32_t* __restrict__ ranks, int64_t K, int32_t r_stride)
{
    const int32_t first = tiles[3 * blockIdx.x], count = tiles[3 * blockIdx.x + 1], adapter = tiles[3 * blockIdx.x + 2];
    const float* __restrict__ a = reinterpret_cast<const float*>(a_ptrs[adapter]);
    const int r = ranks[adapter];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int q = warp; q < count; q += blockDim.x / 32) {
        const int64_t p = first + q;
        const float* __restrict__ xr = x + rows[p] * K;
        for (int j0 = 0; j0 < r; j0 += kSgmvChunk) {
            float acc[kSgmvChunk];
#pragma unroll
            for (int jj = 0; jj < kSgmvChunk; jj++) acc[jj] = 0.f;
            for (int64_t k = lane; k < K; k += 32) {
                const float xv = xr[k];
#pragma unroll
                for (int jj = 0; jj < kSgmvChunk; jj++)
                    if (j0 + jj < r) acc[jj] = fmaf(xv, a[(int64_t)(j0 + jj) * K + k], acc[jj]);
            }
#pragma unroll
            for (int jj = 0; jj < kSgmvChunk; jj++) {
                float v = acc[jj];
                for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
                if (lane == 0 && j0 + jj < r) t[p * r_stride + j0 + jj] = v;
            }
        }
    }
}

extern "C" __global__ void sgmv_expand_f32(const float* __restrict__ t, float* __restrict__ y, const int64_t* __restrict__ rows,
                                           const int32_t* __restrict__ tiles, const int64_t* __restrict__ b_ptrs,
                                           const int32_t* __restrict__ ranks, const float* __restrict__ scales, int64_t C, int32_t r_stride)
{
    __shared__ float ts[kSgmvTile][kSgmvChunk];
    const int32_t first = tiles[3 * blockIdx.x], count = tiles[3 * blockIdx.x + 1], adapter = tiles[3 * blockIdx.x + 2];
    const float* __restrict__ b = reinterpret_cast<const float*>(b_ptrs[adapter]);
    const int r = ranks[adapter];
    const int64_t col = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    float acc[kSgmvTile];
#pragma unroll
    for (int q = 0; q < kSgmvTile; q++) acc[q] = 0.f;
    for (int j0 = 0; j0 < r; j0 += kSgmvChunk) {
        __syncthreads();   // the previous chunk's readers are done
        for (int e = threadIdx.x; e < kSgmvTile * kSgmvChunk; e += blockDim.x) {
            const int q = e / kSgmvChunk, jj = e % kSgmvChunk;
            ts[q][jj] = q < count && j0 + jj < r ? t[(first + q) * (int64_t)r_stride + j0 + jj] : 0.f;
        }
        __syncthreads();
        if (col < C) {
            float bv[kSgmvChunk];
#pragma unroll
            for (int jj = 0; jj < kSgmvChunk; jj++) bv[jj] = j0 + jj < r ? b[col * r + j0 + jj] : 0.f;
#pragma unroll
            for (int q = 0; q < kSgmvTile; q++)   // rows past count multiply the zeros loaded for them
#pragma unroll
                for (int jj = 0; jj < kSgmvChunk; jj++) acc[q] = fmaf(ts[q][jj], bv[jj], acc[q]);
        }
    }
    if (col >= C) return;
    const float s = scales[adapter];
#pragma unroll
    for (int q = 0; q < kSgmvTile; q++)
        if (q < count) y[rows[first + q] * C + col] += s * acc[q];
}
