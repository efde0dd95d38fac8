// elementwise.cu — the element-wise ops behind Tensor's front-ends on CUDA tensors.
// Computes: binary_f32   out[i] = op(a[·], b[·]) with broadcasting (strides 0 along broadcast dims);
//           unary_f32    y[i] = op(x[i]; p0, p1) (the derivative ops of backward passes included);
//           strided_copy dst[·] = src[·] between any two strided layouts of one shape (Contiguous, CopyFrom, Expand
//                        materialised), a bit copy by element width.
// Vector path: dense operands (and dense a with a single b, x·scalar) move 16 bytes per access, four values per
//   thread-step with four steps in flight (peft::strided_steps, as the casts); misaligned views and ragged ends run
//   one value at a time.
// Layout: `out`/`y` dense; strided operands described by peft_strides (offsets in elements from the pointer, which
//   is the address of element [0, …, 0]; negative strides are fine). The host merges dims first, so dense
//   same-shape operands are rank 1 and the index arithmetic is one division per element.
// Op numbers (CudaOps maps Peft.Core's enums to these explicitly):
//   binary: 0 add, 1 sub, 2 mul, 3 div, 4 pow, 5 maximum, 6 minimum, 7 greater, 8 less, 9 equal (1.0 / 0.0);
//   unary:  0 neg, 1 exp, 2 log, 3 sqrt, 4 rsqrt, 5 abs, 6 tanh, 7 sigmoid, 8 relu, 9 gelu (erf), 10 gelu (tanh),
//           11 silu, 12 sign, 13 sin, 14 cos, 15 relu', 16 gelu' (erf), 17 gelu' (tanh), 18 silu', 19 clamp(p0, p1),
//           20 clamp mask, 21 x^p0, 22 x + p0, 23 x · p0, 24 round (half to even).
// Dtypes: f32 (16-bit operands are widened to f32 by the host first, as the CPU backend does).
// Tolerance: ≤ 1e-6 relative per element against Peft.Core's CPU kernels (different libm: expf, tanhf, erff);
//   add/sub/mul/div, comparisons, abs, neg, relu, round and copies are bit-exact.
#include "peft_kernels.h"
#include "peft_device.cuh"

namespace {

// Offsets of linear index i (row-major over s.shape) in the a and b stride sets.
__device__ __forceinline__ void strided_offsets(const peft_strides& s, int64_t i, int64_t& oa, int64_t& ob)
{
    oa = 0;
    ob = 0;
#pragma unroll
    for (int d = 7; d >= 0; d--) {
        if (d >= s.rank) continue;
        const int64_t q = i / s.shape[d], r = i - q * s.shape[d];
        oa += r * s.a[d];
        ob += r * s.b[d];
        i = q;
    }
}

__device__ __forceinline__ float nan_max(float x, float y) { return (x != x || y != y) ? x + y : fmaxf(x, y); }
__device__ __forceinline__ float nan_min(float x, float y) { return (x != x || y != y) ? x + y : fminf(x, y); }

__device__ __forceinline__ float binary_op(int op, float x, float y)
{
    switch (op) {
    case 0: return x + y;
    case 1: return x - y;
    case 2: return x * y;
    case 3: return x / y;
    case 4: return powf(x, y);
    case 5: return nan_max(x, y);
    case 6: return nan_min(x, y);
    case 7: return x > y ? 1.f : 0.f;
    case 8: return x < y ? 1.f : 0.f;
    default: return x == y ? 1.f : 0.f;
    }
}

constexpr float kSqrt2OverPi = 0.79788456080286535588f, kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f, kGeluC = 0.044715f;

__device__ __forceinline__ float unary_op(int op, float x, float p0, float p1)
{
    switch (op) {
    case 0: return -x;
    case 1: return expf(x);
    case 2: return logf(x);
    case 3: return sqrtf(x);
    case 4: return 1.f / sqrtf(x);
    case 5: return fabsf(x);
    case 6: return tanhf(x);
    case 7: return 1.f / (1.f + expf(-x));
    case 8: return x > 0.f ? x : (x != x ? x : 0.f);
    case 9: return 0.5f * x * (1.f + erff(x * kInvSqrt2));
    case 10: return 0.5f * x * (1.f + tanhf(kSqrt2OverPi * (x + kGeluC * x * x * x)));
    case 11: return x / (1.f + expf(-x));
    case 12: return x != x ? x : x > 0.f ? 1.f : x < 0.f ? -1.f : 0.f;
    case 13: return sinf(x);
    case 14: return cosf(x);
    case 15: return x > 0.f ? 1.f : 0.f;
    case 16: return 0.5f * (1.f + erff(x * kInvSqrt2)) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
    case 17: {
        const float t = tanhf(kSqrt2OverPi * (x + kGeluC * x * x * x));
        const float du = kSqrt2OverPi * (1.f + 3.f * kGeluC * x * x);
        return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * du;
    }
    case 18: {
        const float s = 1.f / (1.f + expf(-x));
        return s * (1.f + x * (1.f - s));
    }
    case 19: return nan_min(nan_max(x, p0), p1);
    case 20: return x >= p0 && x <= p1 ? 1.f : 0.f;
    case 21: return powf(x, p0);
    case 22: return x + p0;
    case 23: return x * p0;
    default: return rintf(x);  // 24: round half to even
    }
}

template <typename T>
__device__ __forceinline__ void strided_copy(const T* __restrict__ src, T* __restrict__ dst, int64_t n, const peft_strides& s)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        int64_t os, od;
        strided_offsets(s, i, os, od);
        dst[od] = src[os];
    }
}

struct Float4Pair {
    float4 a, b;
};

__device__ __forceinline__ float4 binary4(int op, float4 a, float4 b)
{
    return make_float4(binary_op(op, a.x, b.x), binary_op(op, a.y, b.y), binary_op(op, a.z, b.z), binary_op(op, a.w, b.w));
}

__device__ __forceinline__ float4 unary4(int op, float4 x, float p0, float p1)
{
    return make_float4(unary_op(op, x.x, p0, p1), unary_op(op, x.y, p0, p1), unary_op(op, x.z, p0, p1), unary_op(op, x.w, p0, p1));
}

}  // namespace

extern "C" __global__ void binary_f32(int32_t op, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, int64_t n, peft_strides s)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    if (s.rank == 1 && s.a[0] == 1 && (s.b[0] == 1 || s.b[0] == 0)) {
        // Dense a with dense b, or with one value of b for every element (x·scalar): no index arithmetic, and 16-byte
        // accesses (four values per thread-step, four steps in flight) where the pointers allow.
        const bool dense_b = s.b[0] == 1;
        const int64_t steps = peft::aligned(a, 16) && peft::aligned(out, 16) && (!dense_b || peft::aligned(b, 16)) ? n / 4 : 0;
        if (dense_b)
            peft::strided_steps(steps,
                [&](int64_t q) { return Float4Pair{reinterpret_cast<const float4*>(a)[q], reinterpret_cast<const float4*>(b)[q]}; },
                [&](int64_t q, Float4Pair v) { reinterpret_cast<float4*>(out)[q] = binary4(op, v.a, v.b); });
        else {
            const float bv = b[0];
            const float4 b4 = make_float4(bv, bv, bv, bv);
            peft::strided_steps(steps, [&](int64_t q) { return reinterpret_cast<const float4*>(a)[q]; },
                [&](int64_t q, float4 v) { reinterpret_cast<float4*>(out)[q] = binary4(op, v, b4); });
        }
        for (int64_t i = steps * 4 + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
            out[i] = binary_op(op, a[i], dense_b ? b[i] : b[0]);
        return;
    }
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        int64_t oa, ob;
        strided_offsets(s, i, oa, ob);
        out[i] = binary_op(op, a[oa], b[ob]);
    }
}

extern "C" __global__ void unary_f32(int32_t op, const float* __restrict__ x, float* __restrict__ y, int64_t n, float p0, float p1)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t steps = peft::aligned(x, 16) && peft::aligned(y, 16) ? n / 4 : 0;   // 16-byte accesses where aligned
    peft::strided_steps(steps, [&](int64_t q) { return reinterpret_cast<const float4*>(x)[q]; },
        [&](int64_t q, float4 v) { reinterpret_cast<float4*>(y)[q] = unary4(op, v, p0, p1); });
    for (int64_t i = steps * 4 + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = unary_op(op, x[i], p0, p1);
}

extern "C" __global__ void strided_copy_u8(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t n, peft_strides s) { strided_copy(src, dst, n, s); }
extern "C" __global__ void strided_copy_f16(const uint16_t* __restrict__ src, uint16_t* __restrict__ dst, int64_t n, peft_strides s) { strided_copy(src, dst, n, s); }
extern "C" __global__ void strided_copy_f32(const uint32_t* __restrict__ src, uint32_t* __restrict__ dst, int64_t n, peft_strides s) { strided_copy(src, dst, n, s); }
extern "C" __global__ void strided_copy_f64(const uint64_t* __restrict__ src, uint64_t* __restrict__ dst, int64_t n, peft_strides s) { strided_copy(src, dst, n, s); }
