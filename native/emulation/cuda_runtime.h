// cuda_runtime.h for the host emulation (see cuda_emulation.h): the runtime calls native/bench_kernels.cu makes, on
// host memory. Everything is synchronous; events read the host clock.
#pragma once
#include <chrono>
#include "cuda_emulation.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"

enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
using cudaStream_t = void*;

struct cudaDeviceProp {
    char name[256];
    int major, minor, multiProcessorCount;
};

struct CUevent_emulated {
    std::chrono::steady_clock::time_point at;
};
using cudaEvent_t = CUevent_emulated*;

// Four "multiprocessors": grids sized by the SM count stay small, so a launch runs few blocks one after another.
constexpr int kEmulatedMultiprocessors = 4;

inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "out of memory (host emulation)"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

inline cudaError_t cudaMalloc(void** p, size_t bytes)
{
    *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
template <typename T> cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) { std::memmove(dst, src, bytes); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t = nullptr) { return cudaMemcpy(dst, src, bytes, kind); }
inline cudaError_t cudaMemset(void* p, int v, size_t bytes) { std::memset(p, v, bytes); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t = nullptr) { return cudaMemset(p, v, bytes); }

inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int)
{
    std::snprintf(p->name, sizeof p->name, "host emulation (not a GPU)");
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = kEmulatedMultiprocessors;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) { *v = kEmulatedMultiprocessors; return cudaSuccess; }

inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new CUevent_emulated(); return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr) { e->at = std::chrono::steady_clock::now(); return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
    return cudaSuccess;
}
