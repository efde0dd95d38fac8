// cuda_emulation.h — the CUDA C++ the kernels in kernels/*.cu use, emulated on the host, so that a machine without a
// GPU (CI, the developer VM) can run every kernel against its CPU reference and the C# launchers against the kernels
// (native/emulation/driver.cpp: a stand-in libcuda + cuBLAS). It checks what a kernel computes — indexing, grid and
// block strides, reductions, barriers, warp shuffles, ragged tails, bf16/f16 rounding — and nothing of how fast it
// runs or of the GPU's memory model: it is not a GPU and its results do not count as GPU verification.
//
// How a launch runs: every thread of a block is an OS thread (a persistent pool of up to 1024); blocks run one after
// another, so `__shared__` variables are plain statics (one copy per kernel, shared by the block that runs).
// __syncthreads and the warp operations are barriers over the threads still running (an exited thread leaves them, as
// on sm_70+). Float arithmetic is the host's IEEE single precision without contraction (-ffp-contract=off): a real
// GPU fuses a·b + c into one FMA where nvcc sees fit, so results that depend on that rounding are compared with a
// tolerance (the _rn intrinsics, which forbid the fusion, are exact here and there).
#pragma once
#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <type_traits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <semaphore>
#include <thread>
#include <tuple>
#include <vector>

#ifndef PEFT_HOST_EMULATION
#define PEFT_HOST_EMULATION 1
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __constant__
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// Vector types with CUDA's sizes and alignments (kernels reinterpret memory through them).
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// Correctly rounded single operations; the volatile store keeps the compiler from fusing them into an FMA.
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __fsqrt_rn(float a) { volatile float r = std::sqrt(a); return r; }
inline float __frcp_rn(float a) { volatile float r = 1.f / a; return r; }
inline float __expf(float a) { return std::exp(a); }
inline float __logf(float a) { return std::log(a); }

namespace peft_emu {

// A barrier over the threads of a group that are still running: a thread leaving the kernel drops out of it.
struct Group {
    std::unique_ptr<std::barrier<>> bar;
    void reset(int n) { bar = std::make_unique<std::barrier<>>(n); }
};

struct Block {
    Group all;
    std::vector<Group> warps;
    std::vector<std::array<uint64_t, 32>> lanes;  // the values a warp exchanges in a shuffle
    void reset(int threads)
    {
        all.reset(threads);
        const int count = (threads + 31) / 32;
        warps.resize(count);
        lanes.resize(count);
        for (int w = 0; w < count; w++) warps[w].reset(std::min(32, threads - 32 * w));
    }
};

inline Block g_block;
inline thread_local int t_rank = 0;  // the thread's linear index in its block

inline int lane() { return t_rank & 31; }
inline int warp_size_of(int w) { return std::min(32, (int)(blockDim.x * blockDim.y * blockDim.z) - 32 * w); }

// Persistent workers: worker t runs thread t of every block of a launch. One launch at a time (the emulated streams
// are synchronous).
class Pool {
public:
    static Pool& get()
    {
        static Pool* pool = new Pool();  // never destroyed: its workers stay parked on it until the process ends
        return *pool;
    }

    void run(int threads, const std::function<void(int)>& body)
    {
        std::lock_guard<std::mutex> one_launch(launch_);
        while ((int)workers_.size() < threads) spawn();
        {
            std::lock_guard<std::mutex> l(m_);
            job_ = &body;
            remaining_ = threads;
        }
        for (int t = 0; t < threads; t++) workers_[t]->go.release();
        std::unique_lock<std::mutex> l(m_);
        done_.wait(l, [&] { return remaining_ == 0; });
    }

private:
    struct Worker {
        std::binary_semaphore go{0};
    };

    void spawn()
    {
        const int index = (int)workers_.size();
        workers_.push_back(std::make_unique<Worker>());
        Worker* w = workers_.back().get();
        std::thread([this, index, w] {
            for (;;) {
                w->go.acquire();
                (*job_)(index);
                std::lock_guard<std::mutex> l(m_);
                if (--remaining_ == 0) done_.notify_one();
            }
        }).detach();
    }

    std::vector<std::unique_ptr<Worker>> workers_;
    const std::function<void(int)>* job_ = nullptr;
    int remaining_ = 0;
    std::mutex m_, launch_;
    std::condition_variable done_;
};

// Runs kernel<<<grid, block>>>(args...) to completion.
template <typename... P>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, const std::tuple<P...>& args)
{
    const long long threads = (long long)block.x * block.y * block.z;
    const long long blocks = (long long)grid.x * grid.y * grid.z;
    if (threads < 1 || threads > 1024 || blocks < 1) {
        std::fprintf(stderr, "peft_emu: invalid launch configuration (%lld blocks of %lld threads)\n", blocks, threads);
        std::abort();
    }
    gridDim = grid;
    blockDim = block;
    const int n = (int)threads;
    g_block.reset(n);
    // Between two blocks every thread waits here; the completion step (all threads parked) gives the next block fresh
    // barriers, since the threads of this one dropped out of them as they left the kernel.
    std::barrier next(n, [n]() noexcept { g_block.reset(n); });
    std::function<void(int)> body = [&](int t) {
        t_rank = t;
        threadIdx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
        for (long long b = 0; b < blocks; b++) {
            blockIdx = dim3((unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / ((long long)grid.x * grid.y)));
            std::apply(kernel, args);
            g_block.warps[t >> 5].bar->arrive_and_drop();
            g_block.all.bar->arrive_and_drop();
            next.arrive_and_wait();
        }
    };
    Pool::get().run(n, body);
}

// kernel<<<grid, block>>> as a callable: peft_emu::launcher(kernel, grid, block)(args...).
template <typename... P>
auto launcher(void (*kernel)(P...), dim3 grid, dim3 block)
{
    return [=](auto&&... a) { launch(kernel, grid, block, std::tuple<P...>(static_cast<P>(a)...)); };
}

template <typename T>
T exchange(T v, int source)
{
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    const int w = t_rank >> 5;
    uint64_t raw = 0;
    std::memcpy(&raw, &v, sizeof(T));
    g_block.lanes[w][lane()] = raw;
    g_block.warps[w].bar->arrive_and_wait();
    const uint64_t got = g_block.lanes[w][source >= 0 && source < warp_size_of(w) ? source : lane()];
    g_block.warps[w].bar->arrive_and_wait();  // everyone has read before the next shuffle overwrites
    T r;
    std::memcpy(&r, &got, sizeof(T));
    return r;
}

}  // namespace peft_emu

inline void __syncthreads() { peft_emu::g_block.all.bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { peft_emu::g_block.warps[peft_emu::t_rank >> 5].bar->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T> T __shfl_xor_sync(unsigned, T v, int mask, int = 32) { return peft_emu::exchange(v, peft_emu::lane() ^ mask); }
template <typename T> T __shfl_sync(unsigned, T v, int src, int = 32) { return peft_emu::exchange(v, src); }
template <typename T> T __shfl_down_sync(unsigned, T v, unsigned delta, int = 32) { return peft_emu::exchange(v, peft_emu::lane() + (int)delta); }
template <typename T> T __shfl_up_sync(unsigned, T v, unsigned delta, int = 32) { return peft_emu::exchange(v, peft_emu::lane() - (int)delta); }

template <typename T> T atomicAdd(T* address, T v) { return std::atomic_ref<T>(*address).fetch_add(v); }
