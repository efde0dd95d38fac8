// random.cu — random numbers drawn on the device with the CPU's exact stream.
// Computes: dropout_mask_f32  out[i] = u_i ≥ p ? scale : 0, the inverted-dropout mask, where u_i is element i of the
//   Philox4x32-10 stream Peft.Core's Generator defines: counter first + i/4 (low word, high word, 0, 0), key (seed
//   low, seed high), output word i % 4, u = (word >> 8) · 2⁻²⁴. So a seeded run drops the same elements on CPU and GPU
//   (and a checkpoint's recomputation replays them).
// Layout: one thread per counter (four elements), grid-stride; the last counter may cover fewer than four.
// Dtypes: f32 out; p is compared in double precision, as the CPU compares its float draw with a double p.
// Tolerance: bit-exact against Tensor.DropoutMask.
#include "peft_kernels.h"
#include "peft_device.cuh"

using peft::philox_block;  // shared with the attention kernels' in-kernel dropout (peft_device.cuh)

extern "C" __global__ void dropout_mask_f32(float* __restrict__ out, int64_t n, int64_t first, uint32_t k0, uint32_t k1, double p, float scale)
{
    const int64_t counters = (n + 3) / 4, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; q < counters; q += stride) {
        const uint64_t counter = (uint64_t)(first + q);
        uint32_t c[4] = {(uint32_t)counter, (uint32_t)(counter >> 32), 0u, 0u};
        philox_block(c, k0, k1);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int64_t i = q * 4 + j;
            if (i >= n) break;
            const float u = (float)(c[j] >> 8) * (1.0f / 16777216.0f);
            out[i] = (double)u >= p ? scale : 0.f;
        }
    }
}
