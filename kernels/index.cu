// index.cu — gathers by index and the fused cross-entropy on CUDA tensors.
// Computes: index_select_f32   dst[o, j, i] = src[o, idx[j], i] (Embedding, IndexSelect; a 4-byte bit copy);
//           index_add_f32      acc[o, r, i] = Σ src[o, j, i] over the positions j with idx[j] = r, in ascending j
//                              (their backward): the host groups the positions by row (it reads the ids anyway), so
//                              each output element is summed by one thread in the CPU's order — no atomics, and the
//                              result is the CPU's bit for bit even where a token id repeats;
//           where_f32          out[i] = cond[i] ? a[i] : b[i] over dense, equally shaped buffers (4-byte elements);
//           cross_entropy_f32  per row r of logits [rows, c]: lse = log Σ exp(x), loss = lse − (1−ε)·x[t] − ε/c·Σx
//                              (0 for an ignored target); _backward: dx = scale[r]·(softmax(x) − (1−ε)·onehot(t) − ε/c).
// Layout: dense; indices int64, already range-checked on the host (Peft.Core reads them to validate). Cross-entropy
//   keeps only lse per row for backward, never a [rows, c] probability matrix; one block per row.
// Dtypes: f32 (indices i64, masks u8).
// Tolerance: gathers, index_add and where are bit-exact; cross-entropy ≤ 1e-5 relative against Peft.Core's
//   CrossEntropyKernel.
#include "peft_kernels.h"
#include "peft_device.cuh"

extern "C" __global__ void index_select_f32(const uint32_t* __restrict__ src, uint32_t* __restrict__ dst, const int64_t* __restrict__ idx,
                                            int64_t outer, int64_t dim, int64_t m, int64_t inner)
{
    const int64_t total = outer * m * inner, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const int64_t i = e % inner, oj = e / inner, j = oj % m, o = oj / m;
        dst[e] = src[(o * dim + idx[j]) * inner + i];
    }
}

extern "C" __global__ void index_add_f32(const float* __restrict__ src, float* __restrict__ acc, const int64_t* __restrict__ rows,
                                         const int64_t* __restrict__ starts, const int64_t* __restrict__ positions, int64_t unique,
                                         int64_t outer, int64_t dim, int64_t m, int64_t inner)
{
    // One block per (outer, distinct row) pair; its threads take the inner positions.
    for (int64_t b = blockIdx.x; b < outer * unique; b += gridDim.x) {
        const int64_t o = b / unique, u = b - o * unique, row = rows[u];
        for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
            float sum = 0.f;
            for (int64_t p = starts[u]; p < starts[u + 1]; p++) sum += src[(o * m + positions[p]) * inner + i];
            acc[(o * dim + row) * inner + i] = sum;
        }
    }
}

extern "C" __global__ void where_f32(const uint8_t* __restrict__ cond, const uint32_t* __restrict__ a, const uint32_t* __restrict__ b, uint32_t* __restrict__ out, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = cond[i] ? a[i] : b[i];
}

extern "C" __global__ void cross_entropy_f32(const float* __restrict__ x, const int64_t* __restrict__ targets, float* __restrict__ loss, float* __restrict__ lse,
                                             int64_t rows, int64_t c, int64_t ignore_index, float smoothing)
{
    __shared__ float scratch[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t t = targets[r];
        if (t == ignore_index) {  // uniform per block: every thread takes the same branch
            if (threadIdx.x == 0) { loss[r] = 0.f; lse[r] = 0.f; }
            continue;
        }
        const float* xr = x + r * c;
        float m = -INFINITY, sum_x = 0.f;
        for (int64_t j = threadIdx.x; j < c; j += blockDim.x) { m = peft::reduce_combine(1, m, xr[j]); sum_x += xr[j]; }
        m = peft::block_reduce(1, m, scratch);
        sum_x = peft::block_reduce(0, sum_x, scratch);
        float s = 0.f;
        for (int64_t j = threadIdx.x; j < c; j += blockDim.x) s += expf(xr[j] - m);
        s = peft::block_reduce(0, s, scratch);
        if (threadIdx.x == 0) {
            const float l = m + logf(s);
            lse[r] = l;
            float v = l - (1.f - smoothing) * xr[t];
            if (smoothing != 0.f) v -= smoothing / (float)c * sum_x;
            loss[r] = v;
        }
    }
}

extern "C" __global__ void cross_entropy_backward_f32(const float* __restrict__ x, const int64_t* __restrict__ targets, const float* __restrict__ lse,
                                                      const float* __restrict__ scale, float* __restrict__ dx, int64_t rows, int64_t c, int64_t ignore_index, float smoothing)
{
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t t = targets[r];
        const float* xr = x + r * c;
        float* dr = dx + r * c;
        if (t == ignore_index) {
            for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dr[j] = 0.f;
            continue;
        }
        const float l = lse[r], sc = scale[r], per_class = smoothing / (float)c, on = 1.f - smoothing;
        for (int64_t j = threadIdx.x; j < c; j += blockDim.x)
            dr[j] = sc * (expf(xr[j] - l) - (j == t ? on : 0.f) - per_class);
    }
}
