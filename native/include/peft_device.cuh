// Device helpers shared by kernels/*.cu (all of which CMake compiles as one translation unit: define helpers here,
// once, not in each file).
#pragma once
#include <cstdint>
#include <cmath>

namespace peft {

constexpr int kUnroll = 4;

// True when p is a multiple of `bytes` (a power of two). Views at odd offsets are legal tensors: kernels check and
// fall back to scalar code instead of faulting on a misaligned vector access.
__device__ __forceinline__ bool aligned(const void* p, int bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

// Grid-stride over steps of V values, kUnroll independent steps loaded before any is converted and stored.
// load(step) returns the packed input; emit(step, packed) converts and stores it.
template <typename Load, typename Emit>
__device__ __forceinline__ void strided_steps(int64_t steps, Load load, Emit emit)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t s = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; s + (kUnroll - 1) * stride < steps; s += kUnroll * stride) {
        decltype(load(s)) raw[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; u++) raw[u] = load(s + u * stride);
#pragma unroll
        for (int u = 0; u < kUnroll; u++) emit(s + u * stride, raw[u]);
    }
    for (; s < steps; s += stride) emit(s, load(s));
}

// Reduction operators of reduce_rows / reduce_mid (0 sum, 1 max, 2 min). max and min keep a NaN once seen, as
// TensorPrimitives.Max/Min do on the CPU (fmaxf would drop it).
__device__ __forceinline__ float reduce_identity(int op) { return op == 0 ? 0.f : op == 1 ? -INFINITY : INFINITY; }
__device__ __forceinline__ float reduce_combine(int op, float acc, float v)
{
    if (op == 0) return acc + v;
    if (acc != acc) return acc;
    if (v != v) return v;
    return op == 1 ? fmaxf(acc, v) : fminf(acc, v);
}

// Combines one value per thread across the block (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. `scratch` holds 32 floats of shared memory; the function may be called repeatedly with the same one.
__device__ __forceinline__ float block_reduce(int op, float v, float* scratch)
{
    for (int offset = 16; offset > 0; offset >>= 1) v = reduce_combine(op, v, __shfl_xor_sync(0xffffffffu, v, offset));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();  // a previous call's readers are done with scratch
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : reduce_identity(op);
    for (int offset = 16; offset > 0; offset >>= 1) v = reduce_combine(op, v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Philox4x32-10 with Peft.Core's Generator conventions: counter (low word, high word, 0, 0), key (seed low, seed high).
__device__ __forceinline__ void philox_block(uint32_t c[4], uint32_t k0, uint32_t k1)
{
#pragma unroll
    for (int round = 0; round < 10; round++) {
        const uint64_t p0 = (uint64_t)0xD2511F53u * c[0], p1 = (uint64_t)0xCD9E8D57u * c[2];
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
        const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
        c[1] = (uint32_t)p1;
        c[3] = (uint32_t)p0;
        c[0] = n0;
        c[2] = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

// Element `index` of the inverted-dropout mask drawn from counter `first` (Tensor.DropoutMaskAt, dropout_mask_f32):
// word index % 4 of counter first + index / 4, kept (scale) where its 24-bit uniform is >= p.
__device__ __forceinline__ float dropout_keep(int64_t index, int64_t first, uint32_t k0, uint32_t k1, double p, float scale)
{
    const uint64_t counter = (uint64_t)(first + index / 4);
    uint32_t c[4] = {(uint32_t)counter, (uint32_t)(counter >> 32), 0u, 0u};
    philox_block(c, k0, k1);
    const float u = (float)(c[index % 4] >> 8) * (1.0f / 16777216.0f);
    return (double)u >= p ? scale : 0.f;
}

}  // namespace peft
