// attention.cu — fused scaled-dot-product attention, flash-style: the [Tq, Tk] scores are never stored.
// Computes, for each head bh = b·H + h and query row i (F32 in, F32 out, F32 arithmetic):
//   s_ij = scale · q_i·k_j, −∞ where the key is padding (mask[b, j] == 0) or, when causal, where j > i + offset;
//   o_i = Σ_j softmax_j(s_i) v_j and lse_i = log Σ_j exp(s_ij) (online softmax over key tiles of 32);
//   a fully masked row gives o_i = 0 and lse_i = −∞, as the CPU softmax's zero row.
// Backward from lse (no probabilities kept): delta_i = do_i·o_i; p_ij = exp(s_ij − lse_i); dp_ij = do_i·v_j;
//   ds_ij = p_ij (dp_ij − delta_i); dq_i = scale Σ_j ds_ij k_j; dk_j = scale Σ_i ds_ij q_i; dv_j = Σ_i p_ij do_i.
//   Two passes without atomics: one over query rows (dq), one over key rows (dk, dv).
// Dropout on the probabilities (drop_p > 0): pair (i, j) is kept with factor keep_ij = peft::dropout_keep of element
//   (bh·Tq + i)·Tk + j of the Philox stream from counter drop_first — the mask the composite's Dropout draws over
//   [B, H, Tq, Tk] — so o_i = Σ_j p_ij·keep_ij·v_j / (l unchanged), ds = p·(keep·dp − delta), dv = Σ_i p·keep·do.
// Layout: q/o/do [BH, Tq, D], k/v [BH, Tk, D], dense; mask U8 [B, Tk] (1 = attend) or null; lse/delta [BH, Tq].
//   D ≤ 128 (kMaxD): the front-end uses the composite (matmul + softmax + matmul) otherwise.
// Work split: a warp owns a few rows; lane t computes the score of key (or query) t of the current tile, the warp
//   combines them with shuffles, and each lane accumulates the output dims t, t + 32, … Tiles sit in shared memory
//   with rows padded to D + 1 where lanes read different rows (no bank conflicts).
// Tolerance: ≤ 1e-5 relative against the CPU composite (sums in another order; expf vs the host's exp).
#include "peft_kernels.h"
#include "peft_device.cuh"

namespace {

constexpr int kKeyTile = 32, kMaxD = 128, kDimsPerLane = kMaxD / 32, kWarpsPerBlock = 4;

__device__ __forceinline__ float attn_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float attn_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ bool attn_visible(const uint8_t* mask, int64_t b, int64_t tk, int64_t j, int32_t causal, int64_t row, int64_t offset)
{
    return j < tk && (mask == nullptr || mask[b * tk + j] != 0) && (!causal || j <= row + offset);
}

// The backward's per-pair terms from shared-memory rows: p = exp(scale·q·k − lse), ds = p·(keep·do·v − delta), and
// p comes back multiplied by keep (the dropped probability dv accumulates; keep = 1 without dropout).
__device__ __forceinline__ void attn_p_ds(const float* qrow, const float* grow, const float* krow, const float* vrow, int64_t d,
                                          float scale, float row_lse, float row_delta, float keep, float& p, float& ds)
{
    float dot = 0.f, dp = 0.f;
    for (int c = 0; c < d; c++) {
        dot += qrow[c] * krow[c];
        dp += grow[c] * vrow[c];
    }
    p = expf(dot * scale - row_lse);
    ds = p * (keep * dp - row_delta);
    p *= keep;
}

// The dropout factor of pair (row, j) of head bh: 1 without dropout.
__device__ __forceinline__ float attn_keep(int64_t bh, int64_t row, int64_t j, int64_t tq, int64_t tk, double drop_p, float drop_scale,
                                           uint32_t k0, uint32_t k1, int64_t drop_first)
{
    return drop_p > 0.0 ? peft::dropout_keep((bh * tq + row) * tk + j, drop_first, k0, k1, drop_p, drop_scale) : 1.f;
}

// One past the last key any of the query rows [row0, row0 + rows) may see: all Tk, or with the causal mask the last
// row's i + offset (key tiles past it are never loaded: the upper half of the causal triangle).
__device__ __forceinline__ int64_t attn_key_end(int32_t causal, int64_t row0, int64_t rows, int64_t offset, int64_t tk)
{
    return causal && row0 + rows + offset < tk ? row0 + rows + offset : tk;
}

// Rows [row0, row0 + rows) of a [T, D] matrix into shared memory (zeros past T), by the whole block.
template <int Rows, int Stride>
__device__ __forceinline__ void attn_load(float (&dst)[Rows][Stride], const float* src, int64_t row0, int64_t t, int64_t d)
{
    for (int64_t i = threadIdx.x; i < Rows * d; i += blockDim.x) {
        const int r = (int)(i / d), c = (int)(i % d);
        dst[r][c] = row0 + r < t ? src[(row0 + r) * d + c] : 0.f;
    }
}

}  // namespace

// grid (ceil(Tq / 16), BH), block 128: each warp owns 4 query rows.
extern "C" __global__ void attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                             const uint8_t* __restrict__ mask, float* __restrict__ o, float* __restrict__ lse,
                                             int64_t heads, int64_t tq, int64_t tk, int64_t d, int32_t causal, int64_t offset, float scale,
                                             double drop_p, float drop_scale, uint32_t k0, uint32_t k1, int64_t drop_first)
{
    constexpr int RowsPerWarp = 4, Rows = kWarpsPerBlock * RowsPerWarp;
    __shared__ float qs[Rows][kMaxD];
    __shared__ float ks[kKeyTile][kMaxD + 1];
    __shared__ float vs[kKeyTile][kMaxD];
    const int64_t bh = blockIdx.y, b = bh / heads, row0 = (int64_t)blockIdx.x * Rows;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    attn_load(qs, q + bh * tq * d, row0, tq, d);
    float m[RowsPerWarp], l[RowsPerWarp], acc[RowsPerWarp][kDimsPerLane];
    for (int r = 0; r < RowsPerWarp; r++) {
        m[r] = -INFINITY;
        l[r] = 0.f;
        for (int e = 0; e < kDimsPerLane; e++) acc[r][e] = 0.f;
    }
    const int64_t key_end = attn_key_end(causal, row0, Rows, offset, tk);
    for (int64_t j0 = 0; j0 < key_end; j0 += kKeyTile) {
        __syncthreads();  // the previous tile's readers are done (and the query rows are in place)
        attn_load(ks, k + bh * tk * d, j0, tk, d);
        attn_load(vs, v + bh * tk * d, j0, tk, d);
        __syncthreads();
        const int64_t j = j0 + lane;
        for (int rr = 0; rr < RowsPerWarp; rr++) {
            const int r = warp * RowsPerWarp + rr;
            float s = -INFINITY;
            if (attn_visible(mask, b, tk, j, causal, row0 + r, offset)) {
                float dot = 0.f;
                for (int c = 0; c < d; c++) dot += qs[r][c] * ks[lane][c];
                s = dot * scale;
            }
            const float m_new = fmaxf(m[rr], attn_warp_max(s));
            if (m_new == -INFINITY) continue;  // nothing visible to this row yet (the same on every lane)
            const float p = s == -INFINITY ? 0.f : expf(s - m_new);
            const float correction = m[rr] == -INFINITY ? 0.f : expf(m[rr] - m_new);
            l[rr] = l[rr] * correction + attn_warp_sum(p);   // the normaliser counts every pair, dropped or not
            const float kept = p == 0.f ? 0.f : p * attn_keep(bh, row0 + r, j, tq, tk, drop_p, drop_scale, k0, k1, drop_first);
            for (int e = 0; e < kDimsPerLane; e++) acc[rr][e] *= correction;
            for (int jj = 0; jj < kKeyTile; jj++) {
                const float pj = __shfl_sync(0xffffffffu, kept, jj);
                if (pj == 0.f) continue;
                for (int e = 0; e < kDimsPerLane; e++) {
                    const int c = lane + 32 * e;
                    if (c < d) acc[rr][e] += pj * vs[jj][c];
                }
            }
            m[rr] = m_new;
        }
    }
    for (int rr = 0; rr < RowsPerWarp; rr++) {
        const int64_t row = row0 + warp * RowsPerWarp + rr;
        if (row >= tq) continue;
        const float inv = l[rr] > 0.f ? 1.f / l[rr] : 0.f;
        for (int e = 0; e < kDimsPerLane; e++) {
            const int c = lane + 32 * e;
            if (c < d) o[(bh * tq + row) * d + c] = acc[rr][e] * inv;
        }
        if (lane == 0) lse[bh * tq + row] = l[rr] > 0.f ? m[rr] + logf(l[rr]) : -INFINITY;
    }
}

// delta_i = do_i·o_i over `rows` rows of length d: a warp per row, grid-strided.
extern "C" __global__ void attention_bwd_delta_f32(const float* __restrict__ o, const float* __restrict__ g, float* __restrict__ delta, int64_t rows, int64_t d)
{
    const int lane = threadIdx.x % 32;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
        float s = 0.f;
        for (int64_t c = lane; c < d; c += 32) s += o[row * d + c] * g[row * d + c];
        s = attn_warp_sum(s);
        if (lane == 0) delta[row] = s;
    }
}

// dq: grid (ceil(Tq / 8), BH), block 128: each warp owns 2 query rows and walks the key tiles.
extern "C" __global__ void attention_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                                const uint8_t* __restrict__ mask, const float* __restrict__ g, const float* __restrict__ lse,
                                                const float* __restrict__ delta, float* __restrict__ dq,
                                                int64_t heads, int64_t tq, int64_t tk, int64_t d, int32_t causal, int64_t offset, float scale,
                                                double drop_p, float drop_scale, uint32_t k0, uint32_t k1, int64_t drop_first)
{
    constexpr int RowsPerWarp = 2, Rows = kWarpsPerBlock * RowsPerWarp;
    __shared__ float qs[Rows][kMaxD];
    __shared__ float gs[Rows][kMaxD];
    __shared__ float ks[kKeyTile][kMaxD + 1];
    __shared__ float vs[kKeyTile][kMaxD + 1];
    const int64_t bh = blockIdx.y, b = bh / heads, row0 = (int64_t)blockIdx.x * Rows;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    attn_load(qs, q + bh * tq * d, row0, tq, d);
    attn_load(gs, g + bh * tq * d, row0, tq, d);
    float acc[RowsPerWarp][kDimsPerLane], row_lse[RowsPerWarp], row_delta[RowsPerWarp];
    for (int rr = 0; rr < RowsPerWarp; rr++) {
        const int64_t row = row0 + warp * RowsPerWarp + rr;
        row_lse[rr] = row < tq ? lse[bh * tq + row] : -INFINITY;
        row_delta[rr] = row < tq ? delta[bh * tq + row] : 0.f;
        for (int e = 0; e < kDimsPerLane; e++) acc[rr][e] = 0.f;
    }
    const int64_t key_end = attn_key_end(causal, row0, Rows, offset, tk);
    for (int64_t j0 = 0; j0 < key_end; j0 += kKeyTile) {
        __syncthreads();
        attn_load(ks, k + bh * tk * d, j0, tk, d);
        attn_load(vs, v + bh * tk * d, j0, tk, d);
        __syncthreads();
        const int64_t j = j0 + lane;
        for (int rr = 0; rr < RowsPerWarp; rr++) {
            const int r = warp * RowsPerWarp + rr;
            float p = 0.f, ds = 0.f;
            if (row_lse[rr] != -INFINITY && attn_visible(mask, b, tk, j, causal, row0 + r, offset))
                attn_p_ds(qs[r], gs[r], ks[lane], vs[lane], d, scale, row_lse[rr], row_delta[rr],
                          attn_keep(bh, row0 + r, j, tq, tk, drop_p, drop_scale, k0, k1, drop_first), p, ds);
            for (int jj = 0; jj < kKeyTile; jj++) {
                const float dsj = __shfl_sync(0xffffffffu, ds, jj);
                if (dsj == 0.f) continue;
                for (int e = 0; e < kDimsPerLane; e++) {
                    const int c = lane + 32 * e;
                    if (c < d) acc[rr][e] += dsj * ks[jj][c];
                }
            }
        }
    }
    for (int rr = 0; rr < RowsPerWarp; rr++) {
        const int64_t row = row0 + warp * RowsPerWarp + rr;
        if (row >= tq) continue;
        for (int e = 0; e < kDimsPerLane; e++) {
            const int c = lane + 32 * e;
            if (c < d) dq[(bh * tq + row) * d + c] = acc[rr][e] * scale;
        }
    }
}

// dk, dv: grid (ceil(Tk / 8), BH), block 128: each warp owns 2 key rows and walks the query tiles.
extern "C" __global__ void attention_bwd_dkdv_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                                  const uint8_t* __restrict__ mask, const float* __restrict__ g, const float* __restrict__ lse,
                                                  const float* __restrict__ delta, float* __restrict__ dk, float* __restrict__ dv,
                                                  int64_t heads, int64_t tq, int64_t tk, int64_t d, int32_t causal, int64_t offset, float scale,
                                                  double drop_p, float drop_scale, uint32_t k0, uint32_t k1, int64_t drop_first)
{
    constexpr int KeysPerWarp = 2, Keys = kWarpsPerBlock * KeysPerWarp;
    __shared__ float ks[Keys][kMaxD];
    __shared__ float vs[Keys][kMaxD];
    __shared__ float qs[kKeyTile][kMaxD + 1];
    __shared__ float gs[kKeyTile][kMaxD + 1];
    __shared__ float tile_lse[kKeyTile], tile_delta[kKeyTile];
    const int64_t bh = blockIdx.y, b = bh / heads, key0 = (int64_t)blockIdx.x * Keys;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    attn_load(ks, k + bh * tk * d, key0, tk, d);
    attn_load(vs, v + bh * tk * d, key0, tk, d);
    float dk_acc[KeysPerWarp][kDimsPerLane], dv_acc[KeysPerWarp][kDimsPerLane];
    for (int kk = 0; kk < KeysPerWarp; kk++)
        for (int e = 0; e < kDimsPerLane; e++) dk_acc[kk][e] = dv_acc[kk][e] = 0.f;
    // Query rows before the first that sees key0 (causal) contribute nothing: start at the tile holding it.
    int64_t first = causal ? key0 - offset : 0;
    first = first < 0 ? 0 : first / kKeyTile * kKeyTile;
    for (int64_t i0 = first; i0 < tq; i0 += kKeyTile) {
        __syncthreads();
        attn_load(qs, q + bh * tq * d, i0, tq, d);
        attn_load(gs, g + bh * tq * d, i0, tq, d);
        if (threadIdx.x < kKeyTile) {
            const int64_t i = i0 + threadIdx.x;
            tile_lse[threadIdx.x] = i < tq ? lse[bh * tq + i] : -INFINITY;
            tile_delta[threadIdx.x] = i < tq ? delta[bh * tq + i] : 0.f;
        }
        __syncthreads();
        const int64_t i = i0 + lane;
        for (int kk = 0; kk < KeysPerWarp; kk++) {
            const int r = warp * KeysPerWarp + kk;
            const int64_t j = key0 + r;
            float p = 0.f, ds = 0.f;
            if (i < tq && tile_lse[lane] != -INFINITY && attn_visible(mask, b, tk, j, causal, i, offset))
                attn_p_ds(qs[lane], gs[lane], ks[r], vs[r], d, scale, tile_lse[lane], tile_delta[lane],
                          attn_keep(bh, i, j, tq, tk, drop_p, drop_scale, k0, k1, drop_first), p, ds);
            for (int ii = 0; ii < kKeyTile; ii++) {
                const float pi = __shfl_sync(0xffffffffu, p, ii), dsi = __shfl_sync(0xffffffffu, ds, ii);
                if (pi == 0.f && dsi == 0.f) continue;
                for (int e = 0; e < kDimsPerLane; e++) {
                    const int c = lane + 32 * e;
                    if (c < d) {
                        dv_acc[kk][e] += pi * gs[ii][c];
                        dk_acc[kk][e] += dsi * qs[ii][c];
                    }
                }
            }
        }
    }
    for (int kk = 0; kk < KeysPerWarp; kk++) {
        const int64_t j = key0 + warp * KeysPerWarp + kk;
        if (j >= tk) continue;
        for (int e = 0; e < kDimsPerLane; e++) {
            const int c = lane + 32 * e;
            if (c < d) {
                dk[(bh * tk + j) * d + c] = dk_acc[kk][e] * scale;
                dv[(bh * tk + j) * d + c] = dv_acc[kk][e];
            }
        }
    }
}
