// bench_kernels — checks and times every kernel in kernels/*.cu without .NET: a GPU machine with nvcc alone can run it.
// Build: CMake target `bench_kernels` (off unless -DPEFT_BUILD_KERNEL_BENCH=ON), or by hand:
//   nvcc -std=c++17 -O3 -Inative/include -arch=native native/bench_kernels.cu build/kernels/peft_kernels_all.cu -o bench_kernels
// For each kernel: fresh random inputs (the seed is printed; pass one as argv[1] to replay), the output poisoned with
// 0xFF (NaN) before the launch, a bit-exact comparison with a CPU reference written here from the kernel's contract
// (the same float operations as Peft.Core's references), then the median of 20 CUDA-event-timed launches and the
// achieved bandwidth against the measured device-to-device copy ceiling. Exit code 1 on any mismatch or CUDA error.
#include "peft_kernels.h"
// kernel<<<grid, block>>>(args) where nvcc compiles this file; the same launch on the host emulation otherwise
// (native/emulation: CI and machines without a GPU run every check here on the CPU, with small sizes).
#ifdef PEFT_HOST_EMULATION
#define PEFT_LAUNCH(kernel, grid, block) peft_emu::launcher(kernel, grid, block)
#else
#define PEFT_LAUNCH(kernel, grid, block) kernel<<<grid, block>>>
#endif
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
#ifdef PEFT_HOST_EMULATION
    constexpr int warmups = 0, timed = 1;   // the emulation checks; its times say nothing about a GPU
#else
    constexpr int warmups = 3, timed = 20;
#endif
    for (int i = 0; i < warmups; i++) launch();
    std::vector<float> t(timed);
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

// Poisons `out` (count elements) with 0xFF, launches once and reads the output back.
template <typename Out, typename Launch>
std::vector<Out> poisoned_launch(Out* out, size_t count, Launch& launch)
{
    CHECK(cudaMemset(out, 0xFF, count * sizeof(Out)));
    launch();
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    std::vector<Out> got(count);
    CHECK(cudaMemcpy(got.data(), out, count * sizeof(Out), cudaMemcpyDeviceToHost));
    return got;
}

// Poisons `out`, launches once, compares bytes with `want`, then times. `bytes` = bytes read + written per launch.
template <typename Out, typename Launch>
void run(const char* name, long long n, Out* out, const std::vector<Out>& want, double bytes, Launch launch)
{
    const std::vector<Out> got = poisoned_launch(out, want.size(), launch);
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); i++)
        if (std::memcmp(&got[i], &want[i], sizeof(Out)) != 0 && bad++ == 0)
            std::printf("  %s: first mismatch at %zu\n", name, i);
    double ms = median_ms(launch), gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("| %-26s | %11lld | %8s | %8.1f | %6.0f | %5.0f%% |\n", name, n, bad ? "FAIL" : "exact", ms * 1e3, gbs, gbs / (copy_tbs * 10));
    if (bad) failures++;
}

// As run(), for kernels whose float sums are ordered differently from the reference: passes when
// ‖got − want‖ / ‖want‖ ≤ tol (and nothing is NaN that the reference has finite).
template <typename Launch>
void run_close(const char* name, long long n, float* out, const std::vector<float>& want, double tol, double bytes, Launch launch)
{
    const std::vector<float> got = poisoned_launch(out, want.size(), launch);
    double num = 0, den = 0;
    bool nan = false;
    for (size_t i = 0; i < got.size(); i++) {
        if (std::isnan(got[i]) != std::isnan(want[i])) nan = true;
        if (std::isnan(want[i])) continue;
        num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        den += (double)want[i] * want[i];
    }
    double err = den == 0 ? std::sqrt(num) : std::sqrt(num / den);
    bool bad = nan || !(err <= tol);
    char check[16];
    std::snprintf(check, sizeof check, "%s%.0e", bad ? "FAIL " : "", err);
    double ms = median_ms(launch), gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("| %-26s | %11lld | %8s | %8.1f | %6.0f | %5.0f%% |\n", name, n, check, ms * 1e3, gbs, gbs / (copy_tbs * 10));
    if (bad) failures++;
}

peft_strides dense_layout(long long n)
{
    peft_strides s{};
    s.rank = 1;
    s.shape[0] = n;
    s.a[0] = 1;
    s.b[0] = 1;
    return s;
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
    run("cast_f32_to_bf16", n, dout16, bf, n * 6.0, [&] { PEFT_LAUNCH(cast_f32_to_bf16, g, 256)(dx, (__nv_bfloat16*)dout16, n); });
    run("cast_bf16_to_f32", n, dout32, widened, n * 6.0, [&] { PEFT_LAUNCH(cast_bf16_to_f32, g, 256)((const __nv_bfloat16*)dbf, dout32, n); });
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
    run("dequant_nf4_f32", n, out32, nf4, nf4_in + n * 4.0, [&] { PEFT_LAUNCH(dequant_nf4_f32, g, 256)(dp, da, out32, n); });
    run("dequant_nf4_bf16", n, out16, nf4_bf, nf4_in + n * 2.0, [&] { PEFT_LAUNCH(dequant_nf4_bf16, g, 256)(dp, da, (__nv_bfloat16*)out16, n); });
    run("dequant_int8_rowwise_f32", n, out32, int8, int8_in + n * 4.0, [&] { PEFT_LAUNCH(dequant_int8_rowwise_f32, g, 256)(dq, ds, out32, rows, cols); });
    run("dequant_int8_rowwise_bf16", n, out16, int8_bf, int8_in + n * 2.0, [&] { PEFT_LAUNCH(dequant_int8_rowwise_bf16, g, 256)(dq, ds, (__nv_bfloat16*)out16, rows, cols); });
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
    run("dequant_blockwise8_f32", blocks, out, want, blocks * 5.0 + nested.size() * 4.0, [&] { PEFT_LAUNCH(dequant_blockwise8_f32, g, 256)(dc, dt, dn, offset, out, blocks); });
    CHECK(cudaFree(dc)); CHECK(cudaFree(dt)); CHECK(cudaFree(dn)); CHECK(cudaFree(out));
}

// kernels/elementwise.cu: a dense add (exact), GELU-tanh (libm tolerance), a transposing strided copy (exact),
// round half to even (exact); kernels/cast.cu's int8 widening (exact).
void elementwise(long long rows, long long cols)
{
    const long long n = rows * cols;
    std::vector<float> a(n), b(n);
    for (auto& v : a) v = normal(1.f);
    for (auto& v : b) v = normal(1.f);
    std::vector<float> sum(n), gelu(n), transposed(n);
    for (long long i = 0; i < n; i++) sum[i] = a[i] + b[i];
    for (long long i = 0; i < n; i++) {
        const double x = a[i];
        gelu[i] = (float)(0.5 * x * (1 + std::tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x))));
    }
    for (long long r = 0; r < rows; r++)
        for (long long c = 0; c < cols; c++) transposed[c * rows + r] = a[r * cols + c];
    float* da = device_copy(a);
    float* db = device_copy(b);
    float* out;
    CHECK(cudaMalloc(&out, n * 4));
    unsigned g = grid_for(n);
    peft_strides dense = dense_layout(n);
    run("binary_f32 (add)", n, out, sum, n * 12.0, [&] { PEFT_LAUNCH(binary_f32, g, 256)(0, da, db, out, n, dense); });
    run_close("unary_f32 (gelu tanh)", n, out, gelu, 1e-6, n * 8.0, [&] { PEFT_LAUNCH(unary_f32, g, 256)(10, da, out, n, 0.f, 0.f); });
    peft_strides t{};  // iterate the output [cols, rows] densely, reading the input transposed
    t.rank = 2;
    t.shape[0] = cols; t.shape[1] = rows;
    t.a[0] = 1; t.a[1] = cols;
    t.b[0] = rows; t.b[1] = 1;
    run("strided_copy_f32 (transpose)", n, out, transposed, n * 8.0, [&] {
        PEFT_LAUNCH(strided_copy_f32, g, 256)(reinterpret_cast<const uint32_t*>(da), reinterpret_cast<uint32_t*>(out), n, t);
    });
    // Round half to even (exact halves every other element) and the int8-code widening LLM.int8's product reads.
    std::vector<float> halves(n), rounded(n), codes_f(n);
    std::vector<int8_t> codes(n);
    for (long long i = 0; i < n; i++) {
        halves[i] = std::floor(a[i] * 8.f) + (i % 2 ? 0.5f : 0.25f);
        rounded[i] = std::nearbyint(halves[i]);   // the default rounding mode: to nearest, ties to even
        codes[i] = (int8_t)(i % 255 - 127);
        codes_f[i] = codes[i];
    }
    float* dh = device_copy(halves);
    int8_t* dq = device_copy(codes);
    run("unary_f32 (round)", n, out, rounded, n * 8.0, [&] { PEFT_LAUNCH(unary_f32, g, 256)(24, dh, out, n, 0.f, 0.f); });
    run("cast_i8_to_f32", n, out, codes_f, n * 5.0, [&] { PEFT_LAUNCH(cast_i8_to_f32, g, 256)(dq, out, n); });
    CHECK(cudaFree(dh)); CHECK(cudaFree(dq));
    CHECK(cudaFree(da)); CHECK(cudaFree(db)); CHECK(cudaFree(out));
}

unsigned row_block(long long n) { return (unsigned)std::min<long long>(512, std::max<long long>(32, (n + 31) / 32 * 32)); }

unsigned row_grid(long long rows)
{
    int sms;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    return (unsigned)std::min<long long>(rows, (long long)sms * 32);
}

// kernels/rows.cu: row sums, a middle-dim sum (bias gradients), softmax and LayerNorm over [rows, n].
void rows_suite(long long rows, long long n)
{
    const long long total = rows * n;
    std::vector<float> x(total), w(n), bias(n);
    for (auto& v : x) v = normal(2.f);
    for (auto& v : w) v = normal(1.f);
    for (auto& v : bias) v = normal(1.f);
    std::vector<float> sums(rows), cols(n, 0.f), soft(total), norm(total);
    std::vector<double> colAcc(n, 0.0);
    for (long long r = 0; r < rows; r++) {
        const float* xr = &x[r * n];
        double s = 0, m = -INFINITY;
        for (long long j = 0; j < n; j++) { s += xr[j]; m = std::max(m, (double)xr[j]); colAcc[j] += xr[j]; }
        sums[r] = (float)s;
        double e = 0;
        for (long long j = 0; j < n; j++) e += std::exp(xr[j] - m);
        for (long long j = 0; j < n; j++) soft[r * n + j] = (float)(std::exp(xr[j] - m) / e);
        double mu = s / n, var = 0;
        for (long long j = 0; j < n; j++) var += (xr[j] - mu) * (xr[j] - mu);
        const double rs = 1.0 / std::sqrt(var / n + 1e-5);
        for (long long j = 0; j < n; j++) norm[r * n + j] = (float)((xr[j] - mu) * rs * w[j] + bias[j]);
    }
    for (long long j = 0; j < n; j++) cols[j] = (float)colAcc[j];
    float* dx = device_copy(x);
    float* dw = device_copy(w);
    float* db = device_copy(bias);
    float *out, *mean, *rstd;
    CHECK(cudaMalloc(&out, total * 4));
    CHECK(cudaMalloc(&mean, rows * 4));
    CHECK(cudaMalloc(&rstd, rows * 4));
    const unsigned grid = row_grid(rows), block = row_block(n);
    run_close("reduce_rows_f32 (sum)", total, out, sums, 1e-5, total * 4.0, [&] { PEFT_LAUNCH(reduce_rows_f32, grid, block)(0, dx, out, rows, n); });
    run_close("reduce_mid_f32 (sum dim 0)", total, out, cols, 1e-5, total * 4.0, [&] { PEFT_LAUNCH(reduce_mid_f32, grid_for(n), 256)(0, dx, out, 1, rows, n); });
    run_close("softmax_rows_f32", total, out, soft, 1e-5, total * 8.0, [&] { PEFT_LAUNCH(softmax_rows_f32, grid, block)(dx, out, rows, n, 0); });
    run_close("norm_rows_f32 (layer norm)", total, out, norm, 1e-5, total * 8.0, [&] { PEFT_LAUNCH(norm_rows_f32, grid, block)(dx, dw, db, out, mean, rstd, rows, n, 1e-5f, 0); });
    CHECK(cudaFree(dx)); CHECK(cudaFree(dw)); CHECK(cudaFree(db)); CHECK(cudaFree(out)); CHECK(cudaFree(mean)); CHECK(cudaFree(rstd));
}

// kernels/index.cu: an embedding lookup (exact) and the fused cross-entropy forward over a GPT-2-sized vocabulary.
void index_suite(long long vocab, long long dim, long long tokens)
{
    std::vector<float> table(vocab * dim);
    for (auto& v : table) v = normal(1.f);
    std::vector<int64_t> ids(tokens);
    for (auto& i : ids) i = (int64_t)(next_u64() % (uint64_t)vocab);
    std::vector<float> rows(tokens * dim);
    for (long long t = 0; t < tokens; t++) std::memcpy(&rows[t * dim], &table[ids[t] * dim], dim * 4);
    float* dt = device_copy(table);
    int64_t* di = device_copy(ids);
    float* out;
    CHECK(cudaMalloc(&out, tokens * dim * 4));
    run("index_select_f32 (embed)", tokens * dim, out, rows, tokens * dim * 8.0, [&] {
        PEFT_LAUNCH(index_select_f32, grid_for(tokens * dim), 256)(reinterpret_cast<const uint32_t*>(dt), reinterpret_cast<uint32_t*>(out), di, 1, vocab, tokens, dim);
    });
    CHECK(cudaFree(out));
    // embedding backward: rows of a [tokens, dim] gradient summed into the table rows their ids name, in ascending
    // token order (the positions grouped by id on the host, as CudaOps does), so the sum is the host loop's exactly.
    {
        std::vector<float> grad(tokens * dim);
        for (auto& v : grad) v = normal(1.f);
        std::vector<float> acc(vocab * dim, 0.f);
        for (long long t = 0; t < tokens; t++)
            for (long long i = 0; i < dim; i++) acc[ids[t] * dim + i] += grad[t * dim + i];
        std::vector<int64_t> order(tokens);
        for (long long t = 0; t < tokens; t++) order[t] = t;
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ids[a] < ids[b]; });
        std::vector<int64_t> rows, starts;
        for (long long p = 0; p < tokens; p++)
            if (p == 0 || ids[order[p]] != ids[order[p - 1]]) { rows.push_back(ids[order[p]]); starts.push_back(p); }
        starts.push_back(tokens);
        float* dgrad = device_copy(grad);
        int64_t* drows = device_copy(rows);
        int64_t* dstarts = device_copy(starts);
        int64_t* dpos = device_copy(order);
        float* dacc;
        CHECK(cudaMalloc(&dacc, vocab * dim * 4));
        const long long unique = (long long)rows.size();
        // timed with the table clear it needs (the memset writes vocab · dim floats)
        run("index_add_f32 (embed grad)", tokens * dim, dacc, acc, tokens * dim * 8.0 + vocab * dim * 4.0, [&] {
            CHECK(cudaMemsetAsync(dacc, 0, vocab * dim * 4));
            PEFT_LAUNCH(index_add_f32, row_grid(unique), row_block(dim))(dgrad, dacc, drows, dstarts, dpos, unique, 1, vocab, tokens, dim);
        });
        CHECK(cudaFree(dgrad)); CHECK(cudaFree(drows)); CHECK(cudaFree(dstarts)); CHECK(cudaFree(dpos)); CHECK(cudaFree(dacc));
    }
    // cross-entropy: fresh logits [tokens, vocab], one row with the ignored target
    const long long n = tokens, c = vocab;
    std::vector<float> logits(n * c);
    for (auto& v : logits) v = normal(2.f);
    std::vector<int64_t> targets(n);
    for (auto& t : targets) t = (int64_t)(next_u64() % (uint64_t)c);
    targets[0] = -100;  // an ignored row
    std::vector<float> loss(n);
    for (long long r = 0; r < n; r++) {
        if (targets[r] == -100) { loss[r] = 0.f; continue; }
        const float* xr = &logits[r * c];
        double m = -INFINITY, e = 0;
        for (long long j = 0; j < c; j++) m = std::max(m, (double)xr[j]);
        for (long long j = 0; j < c; j++) e += std::exp(xr[j] - m);
        loss[r] = (float)(m + std::log(e) - xr[targets[r]]);
    }
    float* dl = device_copy(logits);
    int64_t* dtg = device_copy(targets);
    float *dloss, *dlse;
    CHECK(cudaMalloc(&dloss, n * 4));
    CHECK(cudaMalloc(&dlse, n * 4));
    run_close("cross_entropy_f32", n * c, dloss, loss, 1e-5, n * c * 4.0, [&] {
        PEFT_LAUNCH(cross_entropy_f32, row_grid(n), row_block(c))(dl, dtg, dloss, dlse, n, c, -100, 0.f);
    });
    CHECK(cudaFree(dt)); CHECK(cudaFree(di)); CHECK(cudaFree(dl)); CHECK(cudaFree(dtg)); CHECK(cudaFree(dloss)); CHECK(cudaFree(dlse));
}

// kernels/random.cu: the dropout mask against a host Philox4x32-10 written from Peft.Core's Generator contract.
void dropout(long long n)
{
    const uint64_t seed = next_u64();
    const int64_t first = (int64_t)(next_u64() >> 20);
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    const double p = 0.1;
    const float scale = (float)(1.0 / (1.0 - p));
    std::vector<float> want(n);
    for (long long q = 0; q * 4 < n; q++) {
        const uint64_t counter = (uint64_t)(first + q);
        uint32_t c[4] = {(uint32_t)counter, (uint32_t)(counter >> 32), 0u, 0u}, a = k0, b = k1;
        for (int round = 0; round < 10; round++) {
            const uint64_t p0 = (uint64_t)0xD2511F53u * c[0], p1 = (uint64_t)0xCD9E8D57u * c[2];
            const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ a, n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ b;
            c[1] = (uint32_t)p1; c[3] = (uint32_t)p0; c[0] = n0; c[2] = n2;
            a += 0x9E3779B9u; b += 0xBB67AE85u;
        }
        for (int j = 0; j < 4 && q * 4 + j < n; j++) {
            const float u = (float)(c[j] >> 8) * (1.0f / 16777216.0f);
            want[q * 4 + j] = (double)u >= p ? scale : 0.f;
        }
    }
    float* out;
    CHECK(cudaMalloc(&out, n * 4));
    run("dropout_mask_f32", n, out, want, n * 4.0, [&] { PEFT_LAUNCH(dropout_mask_f32, grid_for((n + 3) / 4), 256)(out, n, first, k0, k1, p, scale); });
    CHECK(cudaFree(out));
}

// kernels/optim.cu: one AdamW step (weight decay on) against the same F32 operations written out on the host,
// one rounding per statement (a single expression could be contracted into an FMA by the host compiler).
void adamw(long long n)
{
    std::vector<float> p(n), g(n), m(n), v(n);
    for (long long i = 0; i < n; i++) { p[i] = normal(0.5f); g[i] = normal(1.f); m[i] = normal(0.1f); v[i] = std::fabs(normal(0.01f)); }
    const float decay = (float)(1 - 1e-3 * 0.01), b1 = 0.9f, omb1 = (float)(1 - 0.9), b2 = 0.999f, omb2 = (float)(1 - 0.999);
    const float inv_sqrt_bc2 = (float)(1 / std::sqrt(1 - std::pow(0.999, 3))), eps = 1e-8f, step = (float)(-1e-3 / (1 - std::pow(0.9, 3)));
    std::vector<float> want(n);
    for (long long i = 0; i < n; i++) {
        float pi = p[i] * decay;
        float a = m[i] * b1;
        float b = g[i] * omb1;
        float mi = a + b;
        float gg = g[i] * g[i];
        float c = v[i] * b2;
        float d = gg * omb2;
        float vi = c + d;
        float root = std::sqrt(vi);
        float scaled = root * inv_sqrt_bc2;
        float denom = scaled + eps;
        float q = mi / denom;
        float delta = q * step;
        want[i] = pi + delta;
    }
    float* p0 = device_copy(p);
    float* dp = device_copy(p);
    float* dg = device_copy(g);
    float* dm = device_copy(m);
    float* dv = device_copy(v);
    // The step is in place: the checked (first) launch starts from the pristine p (run() poisons its output buffer);
    // the timed repeats then step on from whatever the moments became, which costs the same.
    bool checked = false;
    run("adamw_f32", n, dp, want, n * 28.0, [&] {
        if (!checked) { CHECK(cudaMemcpy(dp, p0, n * 4, cudaMemcpyDeviceToDevice)); checked = true; }
        PEFT_LAUNCH(adamw_f32, grid_for(n), 256)(dp, dg, dm, dv, n, decay, 1, b1, omb1, b2, omb2, inv_sqrt_bc2, eps, step);
    });
    CHECK(cudaFree(p0)); CHECK(cudaFree(dp)); CHECK(cudaFree(dg)); CHECK(cudaFree(dm)); CHECK(cudaFree(dv));
}

// kernels/lycoris.cu: LoHa's ΔW = s·(a1·b1) ⊙ (a2·b2) and its backward's G1 = s·g ⊙ (a2·b2), G2 = s·g ⊙ (a1·b1),
// against a float64 reference. Memory-bound at LoHa's ranks: the bytes are ΔW written (forward), g read and G1, G2
// written (backward).
void loha_suite(long long m, long long n, long long r)
{
    std::vector<float> a1(m * r), b1(r * n), a2(m * r), b2(r * n), g(m * n);
    for (auto* v : {&a1, &b1, &a2, &b2, &g})
        for (float& x : *v) x = normal(1.f);
    const float s = 0.625f;
    std::vector<float> delta(m * n), g1(m * n), g2(m * n);
    for (long long i = 0; i < m; i++)
        for (long long j = 0; j < n; j++) {
            double p1 = 0, p2 = 0;
            for (long long k = 0; k < r; k++) {
                p1 += (double)a1[i * r + k] * b1[k * n + j];
                p2 += (double)a2[i * r + k] * b2[k * n + j];
            }
            const long long at = i * n + j;
            delta[at] = (float)(s * p1 * p2);
            g1[at] = (float)(s * g[at] * p2);
            g2[at] = (float)(s * g[at] * p1);
        }
    float *d1 = device_copy(a1), *e1 = device_copy(b1), *d2 = device_copy(a2), *e2 = device_copy(b2), *dg = device_copy(g);
    float *out, *o1, *o2;
    CHECK(cudaMalloc(&out, m * n * 4));
    CHECK(cudaMalloc(&o1, m * n * 4));
    CHECK(cudaMalloc(&o2, m * n * 4));
    const dim3 grid((unsigned)((n + 63) / 64), (unsigned)((m + 31) / 32));
    run_close("loha_delta_f32", m * n, out, delta, 1e-6, m * n * 4.0, [&] { PEFT_LAUNCH(loha_delta_f32, grid, 256)(d1, e1, d2, e2, out, m, n, r, s); });
    auto backward = [&] { PEFT_LAUNCH(loha_delta_bwd_f32, grid, 256)(dg, d1, e1, d2, e2, o1, o2, m, n, r, s); };
    run_close("loha_delta_bwd_f32 (g1)", m * n, o1, g1, 1e-6, m * n * 12.0, backward);
    run_close("loha_delta_bwd_f32 (g2)", m * n, o2, g2, 1e-6, m * n * 12.0, backward);
    for (float* p : {d1, e1, d2, e2, dg, out, o1, o2}) CHECK(cudaFree(p));
}

// kernels/sgmv.cu: a mixed-adapter LoRA batch (rows interleaved over `adapters` adapters of rank r, every 5th row the
// base) against a float64 reference. The bytes are the least the pair must move: x and y once each, every factor once.
void sgmv_suite(long long rows, long long k, long long c, int adapters, int r)
{
    std::vector<int> adapter_of(rows);
    for (long long i = 0; i < rows; i++) adapter_of[i] = i % 5 == 4 ? -1 : (int)(i * 3 % adapters);
    std::vector<float> x(rows * k), y(rows * c);
    for (float& v : x) v = normal(1.f);
    for (float& v : y) v = normal(1.f);
    std::vector<std::vector<float>> a(adapters, std::vector<float>(r * k)), b(adapters, std::vector<float>(c * r));
    std::vector<float> scales(adapters);
    for (int i = 0; i < adapters; i++) {
        for (float& v : a[i]) v = normal(1.f);
        for (float& v : b[i]) v = normal(1.f);
        scales[i] = 0.5f + 0.25f * i;
    }
    std::vector<float> want(y);
    std::vector<double> t(r);
    for (long long i = 0; i < rows; i++) {
        const int ad = adapter_of[i];
        if (ad < 0) continue;
        for (int j = 0; j < r; j++) {
            double acc = 0;
            for (long long p = 0; p < k; p++) acc += (double)x[i * k + p] * a[ad][j * k + p];
            t[j] = acc;
        }
        for (long long col = 0; col < c; col++) {
            double acc = 0;
            for (int j = 0; j < r; j++) acc += t[j] * b[ad][col * r + j];
            want[i * c + col] = (float)(y[i * c + col] + scales[ad] * acc);
        }
    }
    // The host side of Peft.Cuda's launcher: rows sorted by adapter, tiles of <= 16 rows of one adapter.
    std::vector<int64_t> positions;
    std::vector<int32_t> tiles;
    for (int ad = 0; ad < adapters; ad++) {
        const long long start = (long long)positions.size();
        for (long long i = 0; i < rows; i++)
            if (adapter_of[i] == ad) positions.push_back(i);
        for (long long first = start; first < (long long)positions.size(); first += 16)
            tiles.insert(tiles.end(), {(int32_t)first, (int32_t)std::min<long long>(16, (long long)positions.size() - first), ad});
    }
    std::vector<int64_t> a_ptrs(adapters), b_ptrs(adapters);
    std::vector<float*> owned;
    for (int i = 0; i < adapters; i++) {
        owned.push_back(device_copy(a[i]));
        owned.push_back(device_copy(b[i]));
        a_ptrs[i] = (int64_t)(uintptr_t)owned[owned.size() - 2];
        b_ptrs[i] = (int64_t)(uintptr_t)owned.back();
    }
    std::vector<int32_t> ranks(adapters, r);
    float *dx = device_copy(x), *dy0 = device_copy(y), *dy, *dt;
    int64_t *drows = device_copy(positions), *da = device_copy(a_ptrs), *db = device_copy(b_ptrs);
    int32_t *dtiles = device_copy(tiles), *dranks = device_copy(ranks);
    float* dscales = device_copy(scales);
    CHECK(cudaMalloc(&dy, rows * c * 4));
    CHECK(cudaMalloc(&dt, positions.size() * r * 4 + 4));
    const unsigned ntiles = (unsigned)(tiles.size() / 3);
    const dim3 expand_grid(ntiles, (unsigned)((c + 255) / 256));
    // The pair updates y in place: each launch of the check starts from a fresh copy of the base output.
    auto both = [&] {
        CHECK(cudaMemcpy(dy, dy0, rows * c * 4, cudaMemcpyDeviceToDevice));
        PEFT_LAUNCH(sgmv_shrink_f32, ntiles, 256)(dx, dt, drows, dtiles, da, dranks, k, r);
        PEFT_LAUNCH(sgmv_expand_f32, expand_grid, 256)(dt, dy, drows, dtiles, db, dranks, dscales, c, r);
    };
    char name[48];
    std::snprintf(name, sizeof name, "sgmv shrink+expand (%d × r%d)", adapters, r);
    run_close(name, rows * c, dy, want, 1e-5, 4.0 * (rows * k + 2 * rows * c + (double)adapters * r * (k + c)), both);
    for (float* p : owned) CHECK(cudaFree(p));
    CHECK(cudaFree(dx)); CHECK(cudaFree(dy0)); CHECK(cudaFree(dy)); CHECK(cudaFree(dt)); CHECK(cudaFree(drows));
    CHECK(cudaFree(da)); CHECK(cudaFree(db)); CHECK(cudaFree(dtiles)); CHECK(cudaFree(dranks)); CHECK(cudaFree(dscales));
}

// kernels/attention.cu: fused causal attention, forward (o and lse) and backward (dq, dk, dv) against a float64
// reference of the same contract. Compute-bound at long sequences: the table's GB/s is the least traffic (q, k, v,
// o once), and a line after it gives the FLOP rate (4·BH·T²·D forward on the causal half: 2·BH·T²·D).
void attention_suite(long long b, long long h, long long t, long long d)
{
    const long long bh = b * h, n = bh * t * d;
    std::vector<float> q(n), k(n), v(n), g(n);
    for (auto* x : {&q, &k, &v, &g})
        for (auto& e : *x) e = normal(1.f);
    const double scale = 1.0 / std::sqrt((double)d);
    std::vector<float> o(n, 0.f), lse(bh * t), dq(n, 0.f), dk(n, 0.f), dv(n, 0.f);
    std::vector<double> p(t);
    for (long long x = 0; x < bh; x++)
        for (long long i = 0; i < t; i++) {
            double mx = -INFINITY, sum = 0;
            for (long long j = 0; j <= i; j++) {
                double s = 0;
                for (long long c = 0; c < d; c++) s += (double)q[(x * t + i) * d + c] * k[(x * t + j) * d + c];
                p[j] = s * scale;
                mx = std::max(mx, p[j]);
            }
            for (long long j = 0; j <= i; j++) sum += (p[j] = std::exp(p[j] - mx));
            lse[x * t + i] = (float)(mx + std::log(sum));
            double delta = 0;
            std::vector<double> oi(d, 0.0);
            for (long long j = 0; j <= i; j++)
                for (long long c = 0; c < d; c++) oi[c] += p[j] / sum * v[(x * t + j) * d + c];
            for (long long c = 0; c < d; c++) { o[(x * t + i) * d + c] = (float)oi[c]; delta += oi[c] * g[(x * t + i) * d + c]; }
            for (long long j = 0; j <= i; j++) {
                double dp = 0;
                for (long long c = 0; c < d; c++) dp += (double)g[(x * t + i) * d + c] * v[(x * t + j) * d + c];
                const double pj = p[j] / sum, ds = pj * (dp - delta);
                for (long long c = 0; c < d; c++) {
                    dq[(x * t + i) * d + c] += (float)(scale * ds * k[(x * t + j) * d + c]);
                    dk[(x * t + j) * d + c] += (float)(scale * ds * q[(x * t + i) * d + c]);
                    dv[(x * t + j) * d + c] += (float)(pj * g[(x * t + i) * d + c]);
                }
            }
        }
    float *dq_in = device_copy(q), *dk_in = device_copy(k), *dv_in = device_copy(v), *dg = device_copy(g);
    float *d_o, *d_lse, *d_delta, *d_dq, *d_dk, *d_dv;
    CHECK(cudaMalloc(&d_o, n * 4)); CHECK(cudaMalloc(&d_lse, bh * t * 4)); CHECK(cudaMalloc(&d_delta, bh * t * 4));
    CHECK(cudaMalloc(&d_dq, n * 4)); CHECK(cudaMalloc(&d_dk, n * 4)); CHECK(cudaMalloc(&d_dv, n * 4));
    const float s = (float)scale;
    const dim3 fwd_grid((unsigned)((t + 15) / 16), (unsigned)bh), bwd_grid((unsigned)((t + 7) / 8), (unsigned)bh);
    auto forward = [&] { PEFT_LAUNCH(attention_fwd_f32, fwd_grid, 128)(dq_in, dk_in, dv_in, nullptr, d_o, d_lse, h, t, t, d, 1, 0ll, s, 0.0, 1.f, 0u, 0u, 0ll); };
    run_close("attention_fwd_f32 (o)", n, d_o, o, 1e-5, n * 16.0, forward);
    run_close("attention_fwd_f32 (lse)", bh * t, d_lse, lse, 1e-6, n * 16.0, forward);
    const double fwd_ms = median_ms(forward);
    auto delta = [&] { PEFT_LAUNCH(attention_bwd_delta_f32, grid_for(bh * t * 32), 128)(d_o, dg, d_delta, bh * t, d); };
    delta();
    auto dq_pass = [&] { PEFT_LAUNCH(attention_bwd_dq_f32, bwd_grid, 128)(dq_in, dk_in, dv_in, nullptr, dg, d_lse, d_delta, d_dq, h, t, t, d, 1, 0ll, s, 0.0, 1.f, 0u, 0u, 0ll); };
    auto dkdv_pass = [&] { PEFT_LAUNCH(attention_bwd_dkdv_f32, bwd_grid, 128)(dq_in, dk_in, dv_in, nullptr, dg, d_lse, d_delta, d_dk, d_dv, h, t, t, d, 1, 0ll, s, 0.0, 1.f, 0u, 0u, 0ll); };
    run_close("attention_bwd_dq_f32", n, d_dq, dq, 1e-4, n * 20.0, dq_pass);
    run_close("attention_bwd_dkdv_f32 (dk)", n, d_dk, dk, 1e-4, n * 24.0, dkdv_pass);
    run_close("attention_bwd_dkdv_f32 (dv)", n, d_dv, dv, 1e-4, n * 24.0, dkdv_pass);
    const double bwd_ms = median_ms([&] { delta(); dq_pass(); dkdv_pass(); });
    const double causal_flops = 2.0 * bh * t * t * d;   // q·k and p·v over the causal half
    std::printf("| attention B·H=%lld T=%lld D=%lld (causal) | forward %.3f ms = %.1f TFLOP/s; backward %.3f ms = %.1f TFLOP/s |\n",
                bh, t, d, fwd_ms, causal_flops / (fwd_ms * 1e-3) / 1e12, bwd_ms, 2.5 * causal_flops / (bwd_ms * 1e-3) / 1e12);
    for (float* x : {dq_in, dk_in, dv_in, dg, d_o, d_lse, d_delta, d_dq, d_dk, d_dv}) CHECK(cudaFree(x));
}

double measure_copy_ceiling()
{
#ifdef PEFT_HOST_EMULATION
    const size_t bytes = 1ull << 24;
#else
    const size_t bytes = 1ull << 30;
#endif
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
#ifdef PEFT_HOST_EMULATION
    // The same checks on the host emulation, at sizes it runs in seconds: ragged tails, vector bodies, several blocks.
    casts(1003);
    casts((1 << 16) + 5);
    dequant(37, 1001);
    dequant(64, 4096);
    double_quant(701);
    elementwise(37, 101);
    elementwise(64, 640);
    rows_suite(3, 1000);
    rows_suite(40, 4096);
    index_suite(1001, 64, 37);
    dropout(1001);
    dropout(70001);
    adamw(1001);
    adamw(65537);
    attention_suite(2, 2, 37, 72);
    loha_suite(37, 70, 5);
    loha_suite(64, 300, 40);
    sgmv_suite(53, 70, 300, 3, 20);
#else
    casts(1003);               // ragged: vector body and scalar tail
    casts(1ll << 27);          // 512 MiB of f32: ten times the L2
    dequant(37, 1001);         // odd columns: the scalar path, a partial last NF4 block
    dequant(8192, 16384);
    double_quant(701);         // a partial last nested block
    double_quant(1 << 21);     // the statistics of a 128 M-weight NF4 tensor
    elementwise(37, 101);      // ragged
    elementwise(8192, 8192);   // 256 MiB per operand
    rows_suite(3, 1000);       // rows shorter than a block, a ragged last warp
    rows_suite(16384, 4096);   // a LLaMA-7B hidden state of 16k tokens
    index_suite(50257, 768, 4096);  // GPT-2's vocabulary: embedding rows and the loss over every logit
    dropout(1001);             // a partial last counter
    dropout(1ll << 27);
    adamw(1001);
    adamw(1ll << 26);          // 1 GiB of optimizer traffic per step
    attention_suite(1, 2, 100, 72);  // ragged tiles, D not a multiple of 32
    attention_suite(4, 12, 1024, 64);  // GPT-2 124M's attention at B = 4, T = 1024
    loha_suite(37, 70, 5);     // ragged tiles, one partial R chunk
    loha_suite(4096, 4096, 16);  // issue 8's 4096² weight at LoHa's r = 16
    sgmv_suite(53, 70, 300, 3, 20);      // ragged tiles, K and C off the lane and block widths
    sgmv_suite(4096, 4096, 4096, 8, 16); // 8 adapters over 4096 tokens of a 4096² layer
#endif
    std::printf("\n%s\n", failures ? "FAILED" : "all kernels match their references");
    return failures ? 1 : 0;
}
