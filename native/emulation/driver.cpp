// driver.cpp — a stand-in for libcuda.so.1 and libcublas that runs on the host (libpeft_cuda_emulated.so), so that
// Peft.Cuda's C# launchers, its allocator and copies, and Peft.Cuda.Tests can run end to end on a machine without a
// GPU: PEFT_CUDA_DRIVER_PATH and PEFT_CUBLAS_PATH point Peft.Cuda at this library. Device memory is host memory,
// every stream is synchronous (a launch runs to completion inside cuLaunchKernel), cuModuleLoadData accepts any image
// and cuModuleGetFunction finds the kernels of kernels/*.cu compiled into this library for the host emulation
// (cuda_emulation.h). cuBLAS's GEMMs are plain loops accumulating in float (double for 64F).
//
// What this checks: that the C# side computes the right grids, packs arguments in the right order and types, orders
// copies and launches, and that the kernels compute what their CPU references say. What it does not: speed, the real
// driver's error paths, concurrency between streams, or anything that depends on GPU hardware. It reports itself as
// "host emulation (not a GPU)" so no result can be mistaken for a GPU run.
#include "cuda_emulation.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "peft_kernels.h"
#include <chrono>
#include <map>
#include <string>
#include <utility>

namespace {

using Invoker = void (*)(dim3 grid, dim3 block, void** params);

template <typename... P, size_t... I>
std::tuple<P...> unpack(void** params, std::index_sequence<I...>)
{
    return std::tuple<P...>(*static_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(params[I])...);
}

template <typename... P>
void invoke(void (*kernel)(P...), dim3 grid, dim3 block, void** params)
{
    peft_emu::launch(kernel, grid, block, unpack<P...>(params, std::index_sequence_for<P...>{}));
}

struct Function {
    const char* name;
    Invoker run;
};

#define PEFT_EMULATED_KERNEL(name) {#name, [](dim3 g, dim3 b, void** p) { invoke(&name, g, b, p); }},
const Function kFunctions[] = {
#include "emulated_kernel_table.inc"
};
#undef PEFT_EMULATED_KERNEL

constexpr int kMultiprocessors = 4;
constexpr size_t kMemory = 16ull << 30;

struct Event {
    std::chrono::steady_clock::time_point at;
};

int g_module_tag, g_context_tag, g_handle_tag;

}  // namespace

extern "C" {

// ---- driver API (the calls src/Peft.Cuda/Interop/CudaDriver.cs binds) ----
int cuInit(unsigned) { return 0; }
int cuDriverGetVersion(int* v) { *v = 12000; return 0; }
int cuDeviceGetCount(int* n) { *n = 1; return 0; }
int cuDeviceGet(int* d, int ordinal) { if (ordinal != 0) return 101; *d = 0; return 0; }  // 101: CUDA_ERROR_INVALID_DEVICE
int cuDeviceGetName(char* name, int length, int) { std::snprintf(name, (size_t)length, "host emulation (not a GPU)"); return 0; }
int cuDeviceGetAttribute(int* v, int attribute, int)
{
    switch (attribute) {
    case 16: *v = kMultiprocessors; return 0;   // multiprocessors
    case 75: *v = 9; return 0;                  // compute capability major
    case 76: *v = 0; return 0;                  // minor
    default: *v = 0; return 0;
    }
}
int cuDeviceTotalMem_v2(size_t* bytes, int) { *bytes = kMemory; return 0; }
int cuDevicePrimaryCtxRetain(void** ctx, int) { *ctx = &g_context_tag; return 0; }
int cuDevicePrimaryCtxRelease_v2(int) { return 0; }
int cuCtxSetCurrent(void*) { return 0; }
int cuCtxSynchronize() { return 0; }
int cuMemGetInfo_v2(size_t* free, size_t* total) { *free = kMemory; *total = kMemory; return 0; }
int cuMemAlloc_v2(uint64_t* p, size_t bytes)
{
    void* m = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    if (!m) return 2;  // CUDA_ERROR_OUT_OF_MEMORY
    *p = (uint64_t)(uintptr_t)m;
    return 0;
}
int cuMemFree_v2(uint64_t p) { std::free((void*)(uintptr_t)p); return 0; }
int cuMemAllocHost_v2(void** p, size_t bytes) { *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256); return *p ? 0 : 2; }
int cuMemFreeHost(void* p) { std::free(p); return 0; }
int cuMemcpyHtoDAsync_v2(uint64_t dst, const void* src, size_t bytes, void*) { std::memmove((void*)(uintptr_t)dst, src, bytes); return 0; }
int cuMemcpyDtoHAsync_v2(void* dst, uint64_t src, size_t bytes, void*) { std::memmove(dst, (const void*)(uintptr_t)src, bytes); return 0; }
int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void*) { std::memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, bytes); return 0; }
int cuMemsetD8Async(uint64_t dst, unsigned char v, size_t n, void*) { std::memset((void*)(uintptr_t)dst, v, n); return 0; }
int cuStreamCreate(void** s, unsigned) { *s = new int(0); return 0; }
int cuStreamDestroy_v2(void* s) { delete static_cast<int*>(s); return 0; }
int cuStreamSynchronize(void*) { return 0; }
int cuStreamWaitEvent(void*, void*, unsigned) { return 0; }
int cuEventCreate(void** e, unsigned) { *e = new Event(); return 0; }
int cuEventDestroy_v2(void* e) { delete static_cast<Event*>(e); return 0; }
int cuEventRecord(void* e, void*) { static_cast<Event*>(e)->at = std::chrono::steady_clock::now(); return 0; }
int cuEventSynchronize(void*) { return 0; }
int cuEventElapsedTime(float* ms, void* a, void* b)
{
    *ms = std::chrono::duration<float, std::milli>(static_cast<Event*>(b)->at - static_cast<Event*>(a)->at).count();
    return 0;
}
int cuModuleLoadData(void** m, const void*) { *m = &g_module_tag; return 0; }
int cuModuleUnload(void*) { return 0; }
int cuModuleGetFunction(void** f, void*, const char* name)
{
    for (const auto& fn : kFunctions)
        if (std::strcmp(fn.name, name) == 0) {
            *f = (void*)&fn;
            return 0;
        }
    return 500;  // CUDA_ERROR_NOT_FOUND
}
int cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared,
                   void*, void** params, void** extra)
{
    if (shared != 0 || extra != nullptr) return 1;  // CUDA_ERROR_INVALID_VALUE: no kernel here takes dynamic shared memory
    if ((long long)bx * by * bz > 1024 || bx * by * bz == 0 || (long long)gx * gy * gz == 0) return 1;
    static_cast<const Function*>(f)->run(dim3(gx, gy, gz), dim3(bx, by, bz), params);
    return 0;
}
int cuGetErrorName(int e, const char** s)
{
    *s = e == 0 ? "CUDA_SUCCESS" : e == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : e == 101 ? "CUDA_ERROR_INVALID_DEVICE" : e == 500 ? "CUDA_ERROR_NOT_FOUND" : "CUDA_ERROR_INVALID_VALUE";
    return 0;
}
int cuGetErrorString(int e, const char** s) { return cuGetErrorName(e, s); }

// ---- cuBLAS (the calls src/Peft.Cuda/Interop/CuBlas.cs binds), column-major as cuBLAS ----
int cublasCreate_v2(void** h) { *h = &g_handle_tag; return 0; }
int cublasDestroy_v2(void*) { return 0; }
int cublasGetVersion_v2(void*, int* v) { *v = 120000; return 0; }
int cublasSetStream_v2(void*, void*) { return 0; }
int cublasSetWorkspace_v2(void*, uint64_t, size_t) { return 0; }
const char* cublasGetStatusString(int s) { return s == 0 ? "CUBLAS_STATUS_SUCCESS" : s == 7 ? "CUBLAS_STATUS_INVALID_VALUE" : "CUBLAS_STATUS_NOT_SUPPORTED"; }

}  // extern "C"

namespace {

enum { R32F = 0, R64F = 1, R16F = 2, R16BF = 14 };
enum { Compute32F = 68, Compute32FPedantic = 69, Compute64F = 70, Compute32FFastTf32 = 77 };

double read(const void* base, int type, long long i)
{
    switch (type) {
    case R32F: return static_cast<const float*>(base)[i];
    case R64F: return static_cast<const double*>(base)[i];
    case R16F: return __half2float(static_cast<const __half*>(base)[i]);
    default: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    }
}

void write(void* base, int type, long long i, double v)
{
    switch (type) {
    case R32F: static_cast<float*>(base)[i] = (float)v; break;
    case R64F: static_cast<double*>(base)[i] = v; break;
    case R16F: static_cast<__half*>(base)[i] = __float2half_rn((float)v); break;
    default: static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn((float)v); break;
    }
}

bool known(int type) { return type == R32F || type == R64F || type == R16F || type == R16BF; }

// C = α·op(A)·op(B) + β·C for `batch` matrices; C is not read when β = 0 (it may hold anything, NaN included).
int gemm(int ta, int tb, int m, int n, int k, const void* alpha, uint64_t a, int at, int lda, long long sa, uint64_t b, int bt, int ldb,
         long long sb, const void* beta, uint64_t c, int ct, int ldc, long long sc, int batch, int compute)
{
    if (!known(at) || !known(bt) || !known(ct)) return 15;  // CUBLAS_STATUS_NOT_SUPPORTED
    if (m < 0 || n < 0 || k < 0 || batch < 0 || (ta != 0 && ta != 1) || (tb != 0 && tb != 1)) return 7;
    const bool wide = compute == Compute64F;
    const double al = wide ? *static_cast<const double*>(alpha) : *static_cast<const float*>(alpha);
    const double be = wide ? *static_cast<const double*>(beta) : *static_cast<const float*>(beta);
    std::vector<double> A((size_t)m * k), B((size_t)k * n);
    for (int q = 0; q < batch; q++) {
        const void* pa = (const void*)(uintptr_t)a;
        // op(A)[i, p] and op(B)[p, j], gathered once per matrix (row-major here, whatever cuBLAS's layout was).
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) A[(size_t)i * k + p] = read(pa, at, q * sa + (ta ? (long long)i * lda + p : (long long)p * lda + i));
        for (int p = 0; p < k; p++)
            for (int j = 0; j < n; j++) B[(size_t)p * n + j] = read((const void*)(uintptr_t)b, bt, q * sb + (tb ? (long long)p * ldb + j : (long long)j * ldb + p));
        void* pc = (void*)(uintptr_t)c;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double v;
                if (wide) {
                    double s = 0;
                    for (int p = 0; p < k; p++) s += A[(size_t)i * k + p] * B[(size_t)p * n + j];
                    v = al * s;
                } else {
                    float s = 0;
                    for (int p = 0; p < k; p++) s += (float)A[(size_t)i * k + p] * (float)B[(size_t)p * n + j];
                    v = (float)((float)al * s);
                }
                const long long ci = q * sc + (long long)j * ldc + i;
                if (be != 0) v = wide ? v + be * read(pc, ct, ci) : (double)((float)v + (float)be * (float)read(pc, ct, ci));
                write(pc, ct, ci, v);
            }
    }
    return 0;
}

}  // namespace

extern "C" {

int cublasGemmEx(void*, int ta, int tb, int m, int n, int k, const void* alpha, uint64_t a, int at, int lda, uint64_t b, int bt, int ldb,
                 const void* beta, uint64_t c, int ct, int ldc, int compute, int)
{
    return gemm(ta, tb, m, n, k, alpha, a, at, lda, 0, b, bt, ldb, 0, beta, c, ct, ldc, 0, 1, compute);
}

int cublasGemmStridedBatchedEx(void*, int ta, int tb, int m, int n, int k, const void* alpha, uint64_t a, int at, int lda, long long sa,
                               uint64_t b, int bt, int ldb, long long sb, const void* beta, uint64_t c, int ct, int ldc, long long sc,
                               int batch, int compute, int)
{
    return gemm(ta, tb, m, n, k, alpha, a, at, lda, sa, b, bt, ldb, sb, beta, c, ct, ldc, sc, batch, compute);
}

}  // extern "C"
