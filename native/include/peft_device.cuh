// Device helpers shared by kernels/*.cu (all of which CMake compiles as one translation unit: define helpers here,
// once, not in each file).
#pragma once
#include <cstdint>

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

}  // namespace peft
