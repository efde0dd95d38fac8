// rows.cu — reductions and fused row ops over the last dim of dense f32 data.
// Computes: reduce_rows_f32 (sum / max / min of each row), reduce_mid_f32 (the middle dim of [outer, r, inner]),
//   softmax_rows_f32 (+ _backward), norm_rows_f32 (LayerNorm / RMSNorm, + _backward).
// Layout: x is [rows, n] row-major (dense); one block of blockDim.x threads (a multiple of 32, ≤ 1024) per row,
//   rows grid-strided over blocks, so any grid size is correct. reduce_mid: one thread per (outer, inner) output,
//   adjacent threads on adjacent inner positions, so every read of the r loop is coalesced.
// Dtypes: f32 in, f32 out, f32 accumulation (the CPU references accumulate in f32 too, in a different order).
// Tolerance: ≤ 1e-5 relative against Peft.Core (Reduce, RowSoftmax, Norms); max / min are exact.
#include "peft_kernels.h"
#include "peft_device.cuh"

namespace {

// Sum of f(j) over j < n by the block; every thread gets the total.
template <typename F>
__device__ __forceinline__ float row_sum(int64_t n, float* scratch, F f)
{
    float acc = 0.f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) acc += f(j);
    return peft::block_reduce(0, acc, scratch);
}

}  // namespace

extern "C" __global__ void reduce_rows_f32(int32_t op, const float* __restrict__ x, float* __restrict__ out, int64_t rows, int64_t n)
{
    __shared__ float scratch[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = x + r * n;
        float acc = peft::reduce_identity(op);
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) acc = peft::reduce_combine(op, acc, row[j]);
        acc = peft::block_reduce(op, acc, scratch);
        if (threadIdx.x == 0) out[r] = acc;
    }
}

extern "C" __global__ void reduce_mid_f32(int32_t op, const float* __restrict__ x, float* __restrict__ out, int64_t outer, int64_t r, int64_t inner)
{
    const int64_t total = outer * inner, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += stride) {
        const int64_t po = o / inner, pi = o - po * inner;
        const float* p = x + po * r * inner + pi;
        float acc = peft::reduce_identity(op);
        for (int64_t k = 0; k < r; k++) acc = peft::reduce_combine(op, acc, p[k * inner]);
        out[o] = acc;
    }
}

extern "C" __global__ void softmax_rows_f32(const float* __restrict__ x, float* __restrict__ y, int64_t rows, int64_t n, int32_t log)
{
    __shared__ float scratch[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * n;
        float* yr = y + r * n;
        float m = -INFINITY;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = peft::reduce_combine(1, m, xr[j]);
        m = peft::block_reduce(1, m, scratch);
        const float s = row_sum(n, scratch, [&](int64_t j) { return expf(xr[j] - m); });
        if (log) {
            const float shift = m + logf(s);
            for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = xr[j] - shift;
        } else {
            const float inv = 1.f / s;
            for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = expf(xr[j] - m) * inv;
        }
    }
}

// softmax: dx = y ⊙ (g − Σ g⊙y); log-softmax: dx = g − exp(y) · Σ g.
extern "C" __global__ void softmax_rows_backward_f32(const float* __restrict__ y, const float* __restrict__ g, float* __restrict__ dx, int64_t rows, int64_t n, int32_t log)
{
    __shared__ float scratch[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* yr = y + r * n;
        const float* gr = g + r * n;
        float* dr = dx + r * n;
        if (log) {
            const float s = row_sum(n, scratch, [&](int64_t j) { return gr[j]; });
            for (int64_t j = threadIdx.x; j < n; j += blockDim.x) dr[j] = gr[j] - expf(yr[j]) * s;
        } else {
            const float dot = row_sum(n, scratch, [&](int64_t j) { return gr[j] * yr[j]; });
            for (int64_t j = threadIdx.x; j < n; j += blockDim.x) dr[j] = yr[j] * (gr[j] - dot);
        }
    }
}

// y = (x − μ)·rstd·w + b (RMSNorm: μ = 0, no b); rstd = 1/√(mean((x − μ)²) + ε), two passes as the CPU computes it.
extern "C" __global__ void norm_rows_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
                                         float* __restrict__ mean, float* __restrict__ rstd, int64_t rows, int64_t n, float eps, int32_t rms)
{
    __shared__ float scratch[32];
    const float inv_n = 1.f / (float)n;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * n;
        float* yr = y + r * n;
        const float mu = rms ? 0.f : row_sum(n, scratch, [&](int64_t j) { return xr[j]; }) * inv_n;
        const float var = row_sum(n, scratch, [&](int64_t j) { const float c = xr[j] - mu; return c * c; }) * inv_n;
        const float rs = 1.f / sqrtf(var + eps);
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
            float v = (xr[j] - mu) * rs;
            if (w) v *= w[j];
            if (b) v += b[j];
            yr[j] = v;
        }
        if (threadIdx.x == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
    }
}

// x̂ = (x − μ)·rstd; ĝ = g⊙w; dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)) (no mean(ĝ) term for RMSNorm).
extern "C" __global__ void norm_rows_backward_f32(const float* __restrict__ x, const float* __restrict__ g, const float* __restrict__ mean, const float* __restrict__ rstd,
                                                  const float* __restrict__ w, float* __restrict__ dx, float* __restrict__ xhat, int64_t rows, int64_t n, int32_t rms)
{
    __shared__ float scratch[32];
    const float inv_n = 1.f / (float)n;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * n;
        const float* gr = g + r * n;
        float* dr = dx + r * n;
        float* hr = xhat + r * n;
        const float mu = mean[r], rs = rstd[r];
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) hr[j] = (xr[j] - mu) * rs;
        const float mean_g = rms ? 0.f : row_sum(n, scratch, [&](int64_t j) { return w ? gr[j] * w[j] : gr[j]; }) * inv_n;
        const float mean_gx = row_sum(n, scratch, [&](int64_t j) { return (w ? gr[j] * w[j] : gr[j]) * (xr[j] - mu) * rs; }) * inv_n;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
            const float gw = w ? gr[j] * w[j] : gr[j];
            dr[j] = rs * (gw - mean_g - hr[j] * mean_gx);
        }
    }
}
