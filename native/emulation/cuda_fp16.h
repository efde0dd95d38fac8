// cuda_fp16.h for the host emulation (see cuda_emulation.h): __half and its conversions, IEEE binary16 with rounding
// to nearest even (subnormals kept; NaN becomes the canonical 0x7FFF, as cvt.rn.f16.f32).
#pragma once
#include "cuda_emulation.h"

struct __half {
    unsigned short __x;
};
struct alignas(4) __half2 {
    __half x, y;
};

inline __half __float2half_rn(float f)
{
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    __half h;
    if (ax > 0x7f800000u) { h.__x = 0x7fff; return h; }
    const int e = (int)(ax >> 23) - 127;
    uint32_t q;
    if (e > 15) q = 0x7c00u;                              // beyond the largest finite half (also ±∞)
    else if (ax < 0x33000000u) q = 0;                     // below half the smallest subnormal: ±0
    else if (e < -14) {                                   // a subnormal half: value / 2^-24, rounded
        const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
        const int shift = -e - 1;
        q = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
    } else {
        q = ((uint32_t)(e + 15) << 10) | ((ax >> 13) & 0x3ffu);
        const uint32_t rem = ax & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;  // a carry may reach the exponent, or ∞: both right
    }
    h.__x = (unsigned short)(sign | q);
    return h;
}

inline float __half2float(__half h)
{
    const uint32_t sign = (uint32_t)(h.__x & 0x8000u) << 16;
    const int exp = (h.__x >> 10) & 0x1f;
    uint32_t mant = h.__x & 0x3ffu, out;
    if (exp == 0) {
        if (mant == 0) out = sign;
        else {  // subnormal: normalise
            int shifts = 0;
            while (!(mant & 0x400u)) { mant <<= 1; shifts++; }
            out = sign | ((uint32_t)(127 - 15 - shifts + 1) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) out = sign | 0x7f800000u | (mant << 13);
    else out = sign | ((uint32_t)(exp - 15 + 127) << 23) | (mant << 13);
    float f;
    std::memcpy(&f, &out, 4);
    return f;
}

inline __half __float2half(float f) { return __float2half_rn(f); }
