// bench_kernels — checks and times every kernel in kernels/*.cu without .NET: a GPU machine with nvcc alone can run it.
// Build: CMake target `bench_kernels` (off unless -DPEFT_BUILD_KERNEL_BENCH=ON), or by hand:
//   nvcc -std=c++17 -O3 -Inative/include -arch=native native/bench_kernels.cu build/kernels/peft_kernels_all.cu -o bench_kernels
// For each kernel: fresh random inputs (the seed is printed; pass one as argv[1] to replay), the output poisoned with
// 0xFF (NaN) before the launch, a bit-exact comparison with a CPU reference written here from the kernel's contract
// (the same float operations as Peft.Core's references), then the median of 20 CUDA-event-timed launches and the
// achieved bandwidth against the measured device-to-device copy ceiling. Exit code 1 on any mismatch or CUDA error.
#include "peft_kernels.h"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(call)                                                                                    \
    do {                                                                                               \
        cudaError_t e_ = (call);                                                                       \
        if (e_ != cudaSuccess) {                                                                       \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            std::exit(1);                                                                              \
        }                                                                                              \
    } while (0)

namespace {

const float kNf4Host[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
                            -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
                            0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                            0.7229568362236023f, 1.0f};

uint16_t to_bf16_bits(float f)  // round to nearest even; NaN stays NaN (as Peft.Core's BFloat16)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

float from_bf16_bits(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// splitmix64: <random> does not compile under CUDA 11.8 + clang-14 with libstdc++ 12, and any decent generator will do.
uint64_t rng_state;
uint64_t next_u64()
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next_u64() >> 40) * (1.0 / (1ull << 24))); }
float normal(float std)  // Box–Muller
{
    float u = uniform(1e-7f, 1.f), v = uniform(0.f, 1.f);
    return std * std::sqrt(-2.f * std::log(u)) * std::cos(6.2831853f * v);
}
int failures = 0;
double copy_tbs = 0;

template <typename T> T* device_copy(const std::vector<T>& host)
{
    T* d;
    CHECK(cudaMalloc(&d, host.size() * sizeof(T) + 16));
    CHECK(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

template <typename Launch> double median_ms(Launch launch)
{
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) launch();
    std::vector<float> t(20);
    for (float& ms : t) {
        CHECK(cudaEventRecord(a));
        launch();
        CHECK(cudaEventRecord(b));
        CHECK(cudaEventSynchronize(b));
        CHECK(cudaEventElapsedTime(&ms, a, b));
    }
    CHECK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    CHECK(cudaEventDestroy(a));
    CHECK(cudaEventDestroy(b));
    return t[t.size() / 2];
}

// Poisons `out`, launches once, compares bytes with `want`, then times. `bytes` = bytes read + written per launch.
template <typename Out, typename Launch>
void run(const char* name, long long n, Out* out, const std::vector<Out>& want, double bytes, Launch launch)
{
    CHECK(cudaMemset(out, 0xFF, want.size() * sizeof(Out)));
    launch();
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    std::vector<Out> got(want.size());
    CHECK(cudaMemcpy(got.data(), out, got.size() * sizeof(Out), cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); i++)
        if (std::memcmp(&got[i], &want[i], sizeof(Out)) != 0 && bad++ == 0)
            std::printf("  %s: first mismatch at %zu\n", name, i);
    double ms = median_ms(launch), gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("| %-26s | %11lld | %8s | %8.1f | %6.0f | %5.0f%% |\n", name, n, bad ? "FAIL" : "exact", ms * 1e3, gbs, gbs / (copy_tbs * 10));
    if (bad) failures++;
}

unsigned grid_for(long long work)
{
    int sms;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    return (unsigned)std::min<long long>((work + 255) / 256, (long long)sms * 8);
}

void casts(long long n)
{
    std::vector<float> x(n);
    for (auto& v : x) v = normal(3.f);
    std::vector<uint16_t> bf(n);
    for (long long i = 0; i < n; i++) bf[i] = to_bf16_bits(x[i]);
    std::vector<float> widened(n);
    for (long long i = 0; i < n; i++) widened[i] = from_bf16_bits(bf[i]);
    float* dx = device_copy(x);
    uint16_t* dbf = device_copy(bf);
    uint16_t* dout16;
    float* dout32;
    CHECK(cudaMalloc(&dout16, n * 2));
    CHECK(cudaMalloc(&dout32, n * 4));
    unsigned g = grid_for((n + 3) / 4);
    run("cast_f32_to_bf16", n, dout16, bf, n * 6.0, [&] { cast_f32_to_bf16<<<g, 256>>>(dx, (__nv_bfloat16*)dout16, n); });
    run("cast_bf16_to_f32", n, dout32, widened, n * 6.0, [&] { cast_bf16_to_f32<<<g, 256>>>((const __nv_bfloat16*)dbf, dout32, n); });
    CHECK(cudaFree(dx)); CHECK(cudaFree(dbf)); CHECK(cudaFree(dout16)); CHECK(cudaFree(dout32));
}

void dequant(long long rows, long long cols)
{
    const long long n = rows * cols;
    std::vector<uint8_t> packed((n + 1) / 2);
    for (auto& b : packed) b = (uint8_t)(next_u64() >> 56);
    std::vector<float> absmax((n + 63) / 64);
    for (auto& a : absmax) a = uniform(0.01f, 0.2f);
    std::vector<int8_t> q(n);
    for (auto& v : q) v = (int8_t)(uint8_t)(next_u64() >> 56);
    std::vector<float> scb(rows);
    for (auto& s : scb) s = uniform(0.1f, 2.f);

    std::vector<float> nf4(n), int8(n);
    for (long long k = 0; k < n; k++) {
        uint8_t b = packed[k / 2];
        nf4[k] = kNf4Host[k % 2 == 0 ? b >> 4 : b & 0xF] * absmax[k / 64];
        int8[k] = (float)q[k] * (scb[k / cols] / 127.0f);
    }
    std::vector<uint16_t> nf4_bf(n), int8_bf(n);
    for (long long k = 0; k < n; k++) { nf4_bf[k] = to_bf16_bits(nf4[k]); int8_bf[k] = to_bf16_bits(int8[k]); }

    uint8_t* dp = device_copy(packed);
    float* da = device_copy(absmax);
    int8_t* dq = device_copy(q);
    float* ds = device_copy(scb);
    float* out32;
    uint16_t* out16;
    CHECK(cudaMalloc(&out32, n * 4));
    CHECK(cudaMalloc(&out16, n * 2));
    unsigned g = grid_for((n + 1) / 2);
    double nf4_in = packed.size() + absmax.size() * 4.0, int8_in = n + rows * 4.0;
    run("dequant_nf4_f32", n, out32, nf4, nf4_in + n * 4.0, [&] { dequant_nf4_f32<<<g, 256>>>(dp, da, out32, n); });
    run("dequant_nf4_bf16", n, out16, nf4_bf, nf4_in + n * 2.0, [&] { dequant_nf4_bf16<<<g, 256>>>(dp, da, (__nv_bfloat16*)out16, n); });
    run("dequant_int8_rowwise_f32", n, out32, int8, int8_in + n * 4.0, [&] { dequant_int8_rowwise_f32<<<g, 256>>>(dq, ds, out32, rows, cols); });
    run("dequant_int8_rowwise_bf16", n, out16, int8_bf, int8_in + n * 2.0, [&] { dequant_int8_rowwise_bf16<<<g, 256>>>(dq, ds, (__nv_bfloat16*)out16, rows, cols); });
    CHECK(cudaFree(dp)); CHECK(cudaFree(da)); CHECK(cudaFree(dq)); CHECK(cudaFree(ds)); CHECK(cudaFree(out32)); CHECK(cudaFree(out16));
}

// bitsandbytes' signed dynamic map (create_dynamic_map(signed=True)), built as torch builds it in float32.
std::vector<float> dynamic_map()
{
    std::vector<float> data;
    for (int i = 0; i < 7; i++) {
        const int items = (1 << i) + 1;
        std::vector<float> bounds(items);
        const float step = (1.0f - 0.1f) / (items - 1);
        for (int k = 0; k < items; k++) bounds[k] = k < items / 2 ? 0.1f + step * k : 1.0f - step * (items - k - 1);
        const float scale = (float)std::pow(10.0, -6 + i);
        for (int k = 0; k + 1 < items; k++) {
            const float mean = (bounds[k] + bounds[k + 1]) / 2.0f;
            data.push_back(scale * mean);
            data.push_back(-(scale * mean));
        }
    }
    data.push_back(0.0f);
    data.push_back(1.0f);
    std::sort(data.begin(), data.end());
    return data;
}

// QLoRA's double quantization: decoding 8-bit absmax codes (one per 64 weights) back to floats.
void double_quant(long long blocks)
{
    const std::vector<float> table = dynamic_map();
    std::vector<uint8_t> codes(blocks);
    for (auto& c : codes) c = (uint8_t)(next_u64() >> 56);
    std::vector<float> nested((blocks + 255) / 256);
    for (auto& a : nested) a = uniform(0.01f, 0.1f);
    const float offset = 0.05f;
    std::vector<float> want(blocks);
    for (long long b = 0; b < blocks; b++) {
        volatile float product = table[codes[b]] * nested[b / 256];   // two roundings, as the reference
        want[b] = product + offset;
    }
    uint8_t* dc = device_copy(codes);
    float* dt = device_copy(table);
    float* dn = device_copy(nested);
    float* out;
    CHECK(cudaMalloc(&out, blocks * 4));
    unsigned g = grid_for(blocks);
    run("dequant_blockwise8_f32", blocks, out, want, blocks * 5.0 + nested.size() * 4.0, [&] { dequant_blockwise8_f32<<<g, 256>>>(dc, dt, dn, offset, out, blocks); });
    CHECK(cudaFree(dc)); CHECK(cudaFree(dt)); CHECK(cudaFree(dn)); CHECK(cudaFree(out));
}

double measure_copy_ceiling()
{
    const size_t bytes = 1ull << 30;
    void *a, *b;
    CHECK(cudaMalloc(&a, bytes));
    CHECK(cudaMalloc(&b, bytes));
    CHECK(cudaMemset(a, 0x3C, bytes));
    double ms = median_ms([&] { CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
    return 2.0 * bytes / (ms * 1e-3) / 1e12;
}

}  // namespace

int main(int argc, char** argv)
{
    unsigned long long seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10)
                                       : (unsigned long long)std::chrono::high_resolution_clock::now().time_since_epoch().count();
    rng_state = seed;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    copy_tbs = measure_copy_ceiling();
    std::printf("bench_kernels: %s (sm_%d%d), seed %llu, copy ceiling %.2f TB/s (read + write)\n\n", prop.name, prop.major, prop.minor, seed, copy_tbs);
    std::printf("| %-26s | %11s | %8s | %8s | %6s | %6s |\n", "kernel", "elements", "check", "µs", "GB/s", "% copy");
    std::printf("| --- | ---: | --- | ---: | ---: | ---: |\n");
    casts(1003);               // ragged: vector body and scalar tail
    casts(1ll << 27);          // 512 MiB of f32: ten times the L2
    dequant(37, 1001);         // odd columns: the scalar path, a partial last NF4 block
    dequant(8192, 16384);
    double_quant(701);         // a partial last nested block
    double_quant(1 << 21);     // the statistics of a 128 M-weight NF4 tensor
    std::printf("\n%s\n", failures ? "FAILED" : "all kernels match their references");
    return failures ? 1 : 0;
}
