// kernels/fused.cu and kernels/post.cu executed on the CPU, for tests
// (crates/kernels/tests/kernels_emulated.rs).
//
// The kernel source itself is compiled by a C++20 compiler with a shim for the CUDA features it
// uses: blockIdx/threadIdx/blockDim/gridDim, __shfl_xor_sync and __shfl_sync (a warp's 32 lanes run as
// std::threads meeting at a barrier, so the shuffle-based reductions run as written), the
// fp16/bf16 types and conversions (round to nearest even), expf/erff/rsqrtf, atomicAdd (serial
// launches only), static and dynamic shared memory, __syncwarp, and nvcuda::wmma's 16×16×16
// tiles (whole tiles in every lane, CUDA's alignment rules checked). Each kernel then
// runs on small, deliberately awkward shapes (columns that do not fill a block, fewer grid rows
// than data rows so the row loop strides, a partial last block of warps) and is compared with a
// naive reference written in plain nested loops in the natural index order, in double.
//
// What this cannot check is CUDA itself: launch limits, memory coalescing, and the Rust side's
// argument passing, which bench/gpu.sh checks on a GPU (tests/cuda_ops.rs).
//
// By hand (exit status 1 on a mismatch):
//   c++ -std=c++20 -O1 -pthread -ffp-contract=off -DSEGSWEEP_CPU_EMULATION -I crates/kernels/kernels
//       crates/kernels/kernels/emulate.cpp -o emulate && ./emulate

#include <algorithm>
#include <array>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <type_traits>
#include <thread>
#include <vector>

struct dim3 {
    uint32_t x = 1, y = 1, z = 1;
};
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

#define __global__
// Blocks run one at a time and each warp uses its own part of the block's shared memory.
#define __shared__ static
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct __half {
    _Float16 v;
};
inline float __half2float(__half h) { return (float)h.v; }
inline __half __float2half_rn(float f) { return __half{(_Float16)f}; }

struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return {(uint16_t)((u >> 16) | 0x40)};  // NaN stays NaN
    }
    u += 0x7fffu + ((u >> 16) & 1);
    return {(uint16_t)(u >> 16)};
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// One warp: 32 lanes exchanging through `buf`, two barrier phases per shuffle.
struct Warp {
    float buf[32];
    uint32_t ma[32][4], mb[32][2];  // mma16816's operands, lane by lane
    std::barrier<> bar{32};
};
thread_local Warp *warp_ctx = nullptr;
// The block's threads (launch_block): __syncthreads meets here.
thread_local std::barrier<> *block_ctx = nullptr;
inline void __syncthreads() { block_ctx->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int off) {
    const unsigned lane = threadIdx.x % 32;
    warp_ctx->buf[lane] = v;
    warp_ctx->bar.arrive_and_wait();
    const float r = warp_ctx->buf[lane ^ (unsigned)off];
    warp_ctx->bar.arrive_and_wait();
    return r;
}

inline void __syncwarp() { warp_ctx->bar.arrive_and_wait(); }

// Serial launches only: no two threads run at once.
inline uint32_t atomicAdd(uint32_t *p, uint32_t v) {
    const uint32_t old = *p;
    *p += v;
    return old;
}

inline float __shfl_sync(unsigned, float v, int src) {
    const unsigned lane = threadIdx.x % 32;
    warp_ctx->buf[lane] = v;
    warp_ctx->bar.arrive_and_wait();
    const float r = warp_ctx->buf[(unsigned)src % 32];
    warp_ctx->bar.arrive_and_wait();
    return r;
}

// Dynamic shared memory: one buffer (blocks run one at a time).
alignas(32) static unsigned char emu_dynamic_smem[256 * 1024];
#define SEGSWEEP_DYNAMIC_SMEM(name) unsigned char *name = emu_dynamic_smem

inline float emu_f(__half h) { return (float)h.v; }
inline float emu_f(__nv_bfloat16 b) { return __bfloat162float(b); }

// Register-level helpers of `attention_fa`: two 16-bit values as one 32-bit register (the
// first in the low half), and mma.sync.m16n8k16 with the fragment layouts of the PTX ISA
// (written out in fused.cu): every lane publishes its A and B registers, then computes its own
// four accumulators from the whole tiles (f32 sums; the order of the 16 products may differ
// from the hardware's).
template <class T> inline uint32_t ld2(const T *p) {
    uint32_t u;
    std::memcpy(&u, p, 4);
    return u;
}
template <class T> inline void st2(T *p, uint32_t u) { std::memcpy(p, &u, 4); }
struct uint4 {
    uint32_t x, y, z, w;
};
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return {x, y, z, w}; }
// 16-byte accesses: CUDA needs them 16-byte aligned; checked here.
inline void check16(const void *p) {
    if ((uintptr_t)p % 16 != 0) {
        std::fprintf(stderr, "16-byte access at %p, not 16-byte aligned\n", p);
        std::abort();
    }
}
template <class T> inline uint4 ld16(const T *p) {
    check16(p);
    uint4 v;
    std::memcpy(&v, p, 16);
    return v;
}
template <class T> inline void st16(T *p, uint4 v) {
    check16(p);
    std::memcpy(p, &v, 16);
}
template <class T> inline void st_bits16(T *p, uint32_t bits) {
    const uint16_t u = (uint16_t)bits;
    std::memcpy(p, &u, 2);
}
template <class T> inline uint32_t bits16(T x) {
    static_assert(sizeof(T) == 2);
    uint16_t u;
    std::memcpy(&u, &x, 2);
    return u;
}
template <class T> inline float half_of(uint32_t r, unsigned k) {
    const uint16_t u = (k & 1) ? (uint16_t)(r >> 16) : (uint16_t)(r & 0xffffu);
    T x;
    std::memcpy(&x, &u, 2);
    return emu_f(x);
}
template <class T> void mma16816(float *d, const uint32_t *a, const uint32_t *b, T) {
    const unsigned lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
    Warp &w = *warp_ctx;
    std::memcpy(w.ma[lane], a, sizeof w.ma[lane]);
    std::memcpy(w.mb[lane], b, sizeof w.mb[lane]);
    w.bar.arrive_and_wait();
    float out[4];
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = g + (i >= 2 ? 8 : 0), col = 2 * q + (i & 1);
        float s = d[i];
        for (unsigned kk = 0; kk < 16; ++kk) {
            // A (row, kk): lane (row % 8)·4 + (kk % 8)/2, register (row ≥ 8) + 2·(kk ≥ 8).
            const float x = half_of<T>(w.ma[(row % 8) * 4 + (kk % 8) / 2][(row >= 8) + 2 * (kk >= 8)], kk);
            // B (kk, col): lane col·4 + (kk % 8)/2, register (kk ≥ 8).
            const float y = half_of<T>(w.mb[col * 4 + (kk % 8) / 2][kk >= 8], kk);
            s += x * y;
        }
        out[i] = s;
    }
    w.bar.arrive_and_wait();  // every lane has read the operands
    std::memcpy(d, out, sizeof out);
}

// nvcuda::wmma with the documented semantics of its 16×16×16 shapes: every lane of the warp
// holds (and computes) whole tiles; a store is written by lane 0 and the warp meets at the
// barrier after it. Loads and stores check CUDA's requirements (32-byte aligned pointers, ldm a
// multiple of 8 elements for 16-bit types and of 4 for f32) and abort otherwise.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    float x[M * N];
};
inline void check(const void *p, unsigned ldm, unsigned mult) {
    if ((uintptr_t)p % 32 != 0 || ldm % mult != 0) {
        std::fprintf(stderr, "wmma: pointer %p not 32-byte aligned or ldm %u\n", p, ldm);
        std::abort();
    }
}
template <class Use, class T, class L>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    check(p, ldm, 8);
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c)
            f.x[r * 16 + c] = emu_f(std::is_same_v<L, row_major> ? p[r * ldm + c] : p[c * ldm + r]);
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float> &f, float v) {
    for (float &x : f.x) x = v;
}
template <class T, class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
              const fragment<matrix_a, 16, 16, 16, T, LA> &a,
              const fragment<matrix_b, 16, 16, 16, T, LB> &b,
              const fragment<accumulator, 16, 16, 16, float> &c) {
    float t[256];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
            float s = c.x[i * 16 + j];
            for (int kk = 0; kk < 16; ++kk) s += a.x[i * 16 + kk] * b.x[kk * 16 + j];
            t[i * 16 + j] = s;
        }
    std::memcpy(d.x, t, sizeof t);
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f,
                              unsigned ldm, layout_t l) {
    check(p, ldm, 4);
    if (threadIdx.x % 32 == 0) {
        for (int r = 0; r < 16; ++r)
            for (int c = 0; c < 16; ++c)
                p[l == mem_row_major ? r * ldm + c : c * ldm + r] = f.x[r * 16 + c];
    }
    warp_ctx->bar.arrive_and_wait();
}
}  // namespace wmma
}  // namespace nvcuda

// Correctly rounded float arithmetic: what the host computes without contraction (the test
// builds with -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
// Integer to float, rounded to nearest (what x86 and the host's `as f32` do).
inline float __uint2float_rn(uint32_t a) { return (float)a; }
inline float __ull2float_rn(unsigned long long a) { return (float)a; }

#include "fused.cu"
#include "post.cu"

// Every (block, thread) in turn: for kernels without communication between threads.
template <class F> void launch_serial(dim3 grid, dim3 block, F f) {
    gridDim = grid;
    blockDim = block;
    for (uint32_t by = 0; by < grid.y; ++by)
        for (uint32_t bx = 0; bx < grid.x; ++bx)
            for (uint32_t tx = 0; tx < block.x; ++tx) {
                blockIdx = {bx, by, 1};
                threadIdx = {tx, 0, 0};
                f();
            }
}

// Each warp's 32 lanes concurrently (std::threads), warps in turn.
template <class F> void launch_warps(dim3 grid, dim3 block, F f) {
    gridDim = grid;
    blockDim = block;
    for (uint32_t by = 0; by < grid.y; ++by)
        for (uint32_t bx = 0; bx < grid.x; ++bx)
            for (uint32_t w = 0; w < block.x / 32; ++w) {
                Warp warp;
                std::vector<std::thread> lanes;
                for (uint32_t lane = 0; lane < 32; ++lane) {
                    lanes.emplace_back([&, bx, by, w, lane] {
                        blockIdx = {bx, by, 1};
                        threadIdx = {w * 32 + lane, 0, 0};
                        warp_ctx = &warp;
                        f();
                    });
                }
                for (auto &t : lanes) t.join();
            }
}

// Every thread of a block concurrently (std::threads; __syncthreads works), blocks in turn.
template <class F> void launch_block(dim3 grid, dim3 block, F f) {
    gridDim = grid;
    blockDim = block;
    for (uint32_t by = 0; by < grid.y; ++by)
        for (uint32_t bx = 0; bx < grid.x; ++bx) {
            std::unique_ptr<Warp[]> warps(new Warp[block.x / 32]);
            std::barrier<> bar((std::ptrdiff_t)block.x);
            std::vector<std::thread> threads;
            for (uint32_t t = 0; t < block.x; ++t) {
                threads.emplace_back([&, bx, by, t] {
                    blockIdx = {bx, by, 1};
                    threadIdx = {t, 0, 0};
                    warp_ctx = &warps[t / 32];
                    block_ctx = &bar;
                    f();
                });
            }
            for (auto &t : threads) t.join();
        }
}

static int failures = 0;

static void check(const char *what, const char *dtype, double err, double tol) {
    const bool ok = err <= tol;
    std::printf("%-28s %-5s max relative error %.3g (tolerance %.3g) %s\n", what, dtype, err, tol,
                ok ? "ok" : "FAIL");
    if (!ok) ++failures;
}

static std::vector<float> values(size_t n, uint32_t seed, float scale = 2.0f) {
    std::vector<float> v(n);
    uint32_t s = seed * 2654435761u + 12345u;
    for (auto &x : v) {
        s = s * 1664525u + 1013904223u;
        x = ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
    }
    return v;
}

template <typename T> static std::vector<T> as(const std::vector<float> &v) {
    std::vector<T> out;
    for (float x : v) out.push_back(from_f<T>(x));
    return out;
}

// max |got − want| / max |want|.
template <typename T>
static double rel_err(const std::vector<T> &got, const std::vector<double> &want) {
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < want.size(); ++i) {
        d = std::fmax(d, std::fabs((double)to_f(got[i]) - want[i]));
        m = std::fmax(m, std::fabs(want[i]));
    }
    return d / m;
}

template <typename T> static void test_all(const char *dtype, double tol) {
    // bias + activation (+ residual): 300 columns (two blocks of 256, the second partial), 35
    // rows over a grid of 3 rows (the row loop strides: unrolled steps, then the rest; 35 mod 12
    // lies in [9, 12), so one thread's last unrolled step ends exactly at the last row and a
    // `<=` in the loop bound would step past it).
    {
        const uint32_t rows = 35, cols = 300;
        auto xf = values(rows * cols, 1), bf = values(cols, 2), rf = values(rows * cols, 3);
        auto x = as<T>(xf), b = as<T>(bf), r = as<T>(rf);
        for (uint32_t act = 0; act < 3; ++act)
            for (int res = 0; res < 2; ++res) {
                std::vector<T> out(rows * cols, from_f<T>(-999.0f));
                launch_serial({(cols + 255) / 256, 3}, {256}, [&] {
                    if (res)
                        bias_act<T, true>(x.data(), b.data(), r.data(), out.data(), rows, cols, act);
                    else
                        bias_act<T, false>(x.data(), b.data(), nullptr, out.data(), rows, cols, act);
                });
                std::vector<double> want(rows * cols);
                for (uint32_t i = 0; i < rows; ++i)
                    for (uint32_t j = 0; j < cols; ++j) {
                        double v = (double)to_f(x[i * cols + j]) + (double)to_f(b[j]);
                        if (act == 1) v = v / (1.0 + std::exp(-1.702 * v));
                        if (act == 2) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
                        if (res) v += (double)to_f(r[i * cols + j]);
                        want[i * cols + j] = v;
                    }
                char what[64];
                std::snprintf(what, sizeof what, "bias_act act=%u%s", act, res ? " +res" : "");
                check(what, dtype, rel_err(out, want), tol);
            }
    }
    // q/k/v split: B 2, T 15, 3 heads of 4; 4 grid rows for 30 data rows (unrolled steps,
    // then the rest; 30 mod 16 lies in [12, 16), as above).
    {
        const uint32_t B = 2, Tn = 15, H = 3, hd = 4, D = H * hd;
        auto y = as<T>(values(B * Tn * 3 * D, 4)), bias = as<T>(values(3 * D, 5));
        std::vector<T> out(y.size(), from_f<T>(-999.0f));
        launch_serial({3 * H, 4}, {hd}, [&] {
            split_qkv<T>(y.data(), bias.data(), out.data(), B, Tn, H, hd, 0.125f);
        });
        std::vector<double> want(y.size());
        for (uint32_t s = 0; s < 3; ++s)
            for (uint32_t b = 0; b < B; ++b)
                for (uint32_t h = 0; h < H; ++h)
                    for (uint32_t t = 0; t < Tn; ++t)
                        for (uint32_t e = 0; e < hd; ++e) {
                            const size_t src = (((size_t)b * Tn + t) * 3 + s) * D + h * hd + e;
                            double v = (double)to_f(y[src]) + (double)to_f(bias[s * D + h * hd + e]);
                            if (s == 0) v *= 0.125;
                            want[(((s * B + b) * H + h) * Tn + t) * hd + e] = (double)to_f(from_f<T>((float)v));
                        }
        check("split_qkv", dtype, rel_err(out, want), 0.0);
    }
    // Head merge: (B, H, T, hd) → (B, T, H·hd); 4 grid rows for 10 data rows.
    {
        const uint32_t B = 2, Tn = 5, H = 3, hd = 4;
        auto o = as<T>(values(B * H * Tn * hd, 6));
        std::vector<T> out(o.size(), from_f<T>(-999.0f));
        launch_serial({H, 4}, {hd}, [&] { merge_heads<T>(o.data(), out.data(), B * Tn, Tn, H, hd); });
        std::vector<double> want(o.size());
        for (uint32_t b = 0; b < B; ++b)
            for (uint32_t t = 0; t < Tn; ++t)
                for (uint32_t h = 0; h < H; ++h)
                    for (uint32_t e = 0; e < hd; ++e)
                        want[((b * Tn + t) * H + h) * hd + e] = to_f(o[((b * H + h) * Tn + t) * hd + e]);
        check("merge_heads", dtype, rel_err(out, want), 0.0);
    }
    // LayerNorm: one warp per row, 8 warps per block; 20 rows (3 blocks, the last partial) of 33
    // (a lane loop that does not divide evenly), and 9 rows of 768 (ViT-B/16's width).
    for (auto [rows, cols] : {std::pair<uint32_t, uint32_t>{20, 33}, {9, 768}}) {
        auto x = as<T>(values(rows * cols, 7, 6.0f));
        for (auto &v : x) v = from_f<T>(to_f(v) + 3.0f);  // a mean far from 0
        auto w = values(cols, 8), b = values(cols, 9);
        std::vector<T> out(x.size(), from_f<T>(-999.0f));
        launch_warps({(rows + 7) / 8}, {256}, [&] {
            layer_norm<T>(x.data(), w.data(), b.data(), out.data(), rows, cols, 1e-5f);
        });
        std::vector<double> want(x.size());
        for (uint32_t i = 0; i < rows; ++i) {
            double mean = 0, var = 0;
            for (uint32_t j = 0; j < cols; ++j) mean += to_f(x[i * cols + j]);
            mean /= cols;
            for (uint32_t j = 0; j < cols; ++j) {
                const double d = to_f(x[i * cols + j]) - mean;
                var += d * d;
            }
            var /= cols;
            for (uint32_t j = 0; j < cols; ++j)
                want[i * cols + j] = (to_f(x[i * cols + j]) - mean) / std::sqrt(var + 1e-5) * w[j] + b[j];
        }
        char what[64];
        std::snprintf(what, sizeof what, "layer_norm %ux%u", rows, cols);
        check(what, dtype, rel_err(out, want), tol);
    }
}

// Attention: softmax(q kᵀ) v per (batch, head), heads merged in the output. T 37 (two keys per
// lane for some lanes, a partial last block of rows), hd 24 (lanes without a dim), 2 × 2
// heads; T 70, hd 64 (two dims per lane), one head; T 21, hd 32; and T 130, hd 64 (the
// mma.sync kernel: two blocks of rows, warps without rows in the second, keys padded 130 →
// 144, two rounds of staging loads).
template <typename T> static void test_attention(const char *dtype, double tol) {
    for (auto [B, H, Tn, hd] :
         {std::array<uint32_t, 4>{2, 2, 37, 24}, {1, 1, 70, 64}, {2, 1, 21, 32}, {1, 1, 130, 64}}) {
        const size_t n = (size_t)B * H * Tn * hd;
        auto q = as<T>(values(n, 11, 0.5f)), k = as<T>(values(n, 12)), v = as<T>(values(n, 13));
        std::vector<T> out(n, from_f<T>(-999.0f));
        launch_warps({B * H, (Tn + 31) / 32}, {256}, [&] {
            attention<T>(q.data(), k.data(), v.data(), out.data(), H, Tn, hd);
        });
        std::vector<double> want(n);
        for (uint32_t b = 0; b < B; ++b)
            for (uint32_t h = 0; h < H; ++h) {
                const size_t base = ((size_t)b * H + h) * Tn * hd;
                for (uint32_t t = 0; t < Tn; ++t) {
                    std::vector<double> s(Tn);
                    double m = -INFINITY, z = 0;
                    for (uint32_t j = 0; j < Tn; ++j) {
                        double a = 0;
                        for (uint32_t d = 0; d < hd; ++d)
                            a += (double)to_f(q[base + t * hd + d]) * to_f(k[base + j * hd + d]);
                        s[j] = a;
                        m = std::fmax(m, a);
                    }
                    for (uint32_t j = 0; j < Tn; ++j) z += s[j] = std::exp(s[j] - m);
                    for (uint32_t d = 0; d < hd; ++d) {
                        double o = 0;
                        for (uint32_t j = 0; j < Tn; ++j) o += s[j] / z * to_f(v[base + j * hd + d]);
                        want[((b * Tn + t) * H + h) * hd + d] = o;
                    }
                }
            }
        char what[64];
        std::snprintf(what, sizeof what, "attention T%u hd%u", Tn, hd);
        check(what, dtype, rel_err(out, want), tol);
        if constexpr (!std::is_same_v<T, float>) {
            if (hd % 16 == 0) {
                // The tensor-core kernel: 16 query rows per warp, dynamic shared memory.
                // WMMA loads need 32-byte aligned operands (std::vector gives 16).
                auto aligned = [](const std::vector<T> &x) {
                    T *p = static_cast<T *>(std::aligned_alloc(32, (x.size() * sizeof(T) + 31) / 32 * 32));
                    std::memcpy(p, x.data(), x.size() * sizeof(T));
                    return p;
                };
                T *qa = aligned(q), *ka = aligned(k), *va = aligned(v);
                std::vector<T> out2(n, from_f<T>(-999.0f));
                launch_warps({B * H, (Tn + 15) / 16}, {32}, [&] {
                    attention_mma<T>(qa, ka, va, out2.data(), H, Tn, hd);
                });
                std::snprintf(what, sizeof what, "attention_mma T%u hd%u", Tn, hd);
                check(what, dtype, rel_err(out2, want), tol);
                if (hd <= FA_MAX_DIM) {
                    // The mma.sync kernel: blocks of FA_WARPS warps, K and Vᵀ staged in
                    // shared memory, one barrier.
                    std::vector<T> out3(n, from_f<T>(-999.0f));
                    launch_block({B * H, (Tn + 16 * FA_WARPS - 1) / (16 * FA_WARPS)}, {32 * FA_WARPS}, [&] {
                        attention_fa<T>(qa, ka, va, out3.data(), H, Tn, hd);
                    });
                    std::snprintf(what, sizeof what, "attention_fa T%u hd%u", Tn, hd);
                    check(what, dtype, rel_err(out3, want), tol);
                }
                std::free(qa);
                std::free(ka);
                std::free(va);
            }
        }
    }
}

// Post-processing (f32 only): 7 queries of 4 classes over 5×37 pixels, one block of 64
// threads (the pixel loop strides).
static void test_post() {
    const uint32_t q_n = 7, c_n = 4, n = 5 * 37;
    const uint32_t qc[q_n] = {0, 1, 1, 2, 1, 3, 3};
    auto logits = values(q_n * n, 10, 0.1f);
    std::vector<float> probs(c_n * n, -1.0f);
    launch_serial({1}, {64}, [&] {
        class_probs_f32(logits.data(), qc, probs.data(), n, q_n, c_n, 40.0f);
    });
    std::vector<double> want(c_n * n, 0.0);
    for (uint32_t p = 0; p < n; ++p) {
        double m = -INFINITY, s = 0;
        for (uint32_t q = 0; q < q_n; ++q) m = std::fmax(m, (double)logits[q * n + p] * 40.0);
        for (uint32_t q = 0; q < q_n; ++q) s += std::exp((double)logits[q * n + p] * 40.0 - m);
        for (uint32_t q = 0; q < q_n; ++q) {
            const double e = std::exp((double)logits[q * n + p] * 40.0 - m) / s;
            want[qc[q] * n + p] = std::fmax(want[qc[q] * n + p], e);
        }
    }
    check("class_probs", "f32", rel_err(probs, want), 2e-6);

    // Counts and labels on probabilities with exact ties (multiples of 1/8) and all-zero pixels.
    std::vector<float> pr(c_n * n);
    for (uint32_t i = 0; i < c_n * n; ++i) pr[i] = (float)((i * 7 + i / 11) % 5) / 8.0f;
    for (uint32_t c = 0; c < c_n; ++c) pr[c * n + 3] = 0.0f;
    auto argmax = [&](uint32_t p, const uint8_t *z, float *mx) {
        float best = -INFINITY;
        uint32_t l = 0;
        for (uint32_t c = 0; c < c_n; ++c) {
            const float v = z && z[c] ? 0.0f : pr[c * n + p];
            if (v > best) best = v, l = c;
        }
        *mx = best;
        return l;
    };
    std::vector<uint32_t> count(c_n, 0), want_count(c_n, 0);
    launch_serial({1}, {64}, [&] { area_counts_f32(pr.data(), count.data(), n, c_n); });
    for (uint32_t p = 0; p < n; ++p) {
        float mx;
        ++want_count[argmax(p, nullptr, &mx)];
    }
    check("area_counts", "f32", count == want_count ? 0.0 : 1.0, 0.0);
    const uint8_t zeroed[c_n] = {0, 1, 0, 0};
    std::vector<uint32_t> labels(n, 999), want_labels(n);
    launch_serial({1}, {64}, [&] {
        threshold_labels_f32(pr.data(), zeroed, labels.data(), n, c_n, 0.3f, 2);
    });
    for (uint32_t p = 0; p < n; ++p) {
        float mx;
        const uint32_t l = argmax(p, zeroed, &mx);
        want_labels[p] = mx < 0.3f ? 2 : l;
    }
    check("threshold_labels", "f32", labels == want_labels ? 0.0 : 1.0, 0.0);

    // area_thd's flags: the host rule (segsweep-infer `area_zeroed`, in f32) on counts with a
    // count exactly at the limit (10 ≤ 0.1 · 100), one just over it, the background class's
    // count left out of the total, and a total above 2^24 where the conversion rounds.
    struct Case {
        std::vector<uint32_t> count;
        float thd;
        uint32_t bg, has_bg;
    };
    const std::vector<Case> cases = {
        {{50, 10, 11, 29, 0}, 0.1f, 0, 0},        // total 100: 10 and 0 zeroed, 11 not
        {{900, 10, 11, 29, 50}, 0.1f, 0, 1},      // background 0 out of the total (100)
        {{900, 10, 11, 29, 50}, 0.1f, 7, 1},      // a background index past C: no background
        {{16777217u, 1677721u, 1677722u, 3, 1}, 0.1f, 4, 1},
        {{5, 5, 5, 5, 5}, 0.0f, 2, 1},            // thd 0: nothing but zero counts
    };
    bool same = true;
    for (const Case &k : cases) {
        const uint32_t c_n = k.count.size();
        std::vector<uint8_t> got(c_n, 7), want(c_n);
        launch_serial({1}, {1}, [&] {
            area_zeroed_u32(k.count.data(), got.data(), c_n, k.thd, k.bg, k.has_bg);
        });
        unsigned long long total = 0;
        for (uint32_t c = 0; c < c_n; ++c)
            if (!(k.has_bg && c == k.bg)) total += k.count[c];
        const float limit = k.thd * (float)total;
        for (uint32_t c = 0; c < c_n; ++c)
            want[c] = !(k.has_bg && c == k.bg) && (float)k.count[c] <= limit;
        same = same && got == want;
    }
    // The first case by hand: classes 1 and 4 (count 10 = 0.1 · 100, and 0) are zeroed.
    std::vector<uint8_t> first(5);
    launch_serial({1}, {1}, [&] {
        area_zeroed_u32(cases[0].count.data(), first.data(), 5, 0.1f, 0, 0);
    });
    same = same && first == std::vector<uint8_t>{0, 1, 0, 0, 1};
    check("area_zeroed", "f32", same ? 0.0 : 1.0, 0.0);
}

// torch's bilinear axis (align_corners=False) as segsweep-kernels `post::bilinear_axis` builds
// it in f32, appended to the kernels' tables.
static void axis_table(uint32_t in, uint32_t out, std::vector<uint32_t> &idx,
                       std::vector<float> &wts) {
    const float scale = (float)in / (float)out;
    for (uint32_t d = 0; d < out; ++d) {
        const float src = std::fmax(scale * ((float)d + 0.5f) - 0.5f, 0.0f);
        const uint32_t i0 = std::min((uint32_t)std::floor(src), in - 1);
        const float l1 = std::fmin(std::fmax(src - (float)i0, 0.0f), 1.0f);
        idx.push_back(i0);
        idx.push_back(i0 < in - 1 ? i0 + 1 : i0);
        wts.push_back(1.0f - l1);
        wts.push_back(l1);
    }
}

// torch's bilinear sample of an (ih, iw) plane resized to (oh, ow) at (oy, ox), from the formula
// in double.
static double bilinear_ref(const float *src, uint32_t ih, uint32_t iw, uint32_t oh, uint32_t ow,
                           uint32_t oy, uint32_t ox) {
    auto axis = [](uint32_t in, uint32_t out, uint32_t d, uint32_t &i0, uint32_t &i1, double &l) {
        const double s = std::fmax((double)in / out * (d + 0.5) - 0.5, 0.0);
        i0 = std::min((uint32_t)std::floor(s), in - 1);
        i1 = std::min(i0 + 1, in - 1);
        l = std::fmin(s - i0, 1.0);
    };
    uint32_t y0, y1, x0, x1;
    double ly, lx;
    axis(ih, oh, oy, y0, y1, ly);
    axis(iw, ow, ox, x0, x1, lx);
    auto v = [&](uint32_t y, uint32_t x) { return (double)src[y * iw + x]; };
    return (1 - ly) * ((1 - lx) * v(y0, x0) + lx * v(y0, x1)) +
           ly * ((1 - lx) * v(y1, x0) + lx * v(y1, x1));
}

// Resize (3 planes, 5×7 → 11×4: up along y, down along x) and a slide canvas (3 queries, 3×4
// crop grids, 9×13 canvas, 5 windows: 4 overlapping corners and one inside them all, so pixels
// have 1 to 5 windows), one block of 64 threads (the element loop strides).
static void test_resample() {
    const uint32_t P = 3, ih = 5, iw = 7, oh = 11, ow = 4;
    auto x = values(P * ih * iw, 21);
    std::vector<uint32_t> idx;
    std::vector<float> wts;
    axis_table(ih, oh, idx, wts);
    axis_table(iw, ow, idx, wts);
    std::vector<float> y(P * oh * ow, -1.0f);
    launch_serial({2}, {64}, [&] {
        resize_bilinear_f32(x.data(), idx.data(), wts.data(), y.data(), P, ih, iw, oh, ow);
    });
    std::vector<double> want(P * oh * ow);
    for (uint32_t p = 0; p < P; ++p)
        for (uint32_t oy = 0; oy < oh; ++oy)
            for (uint32_t ox = 0; ox < ow; ++ox)
                want[(p * oh + oy) * ow + ox] =
                    bilinear_ref(x.data() + p * ih * iw, ih, iw, oh, ow, oy, ox);
    check("resize_bilinear", "f32", rel_err(y, want), 1e-6);

    const uint32_t Q = 3, gh = 3, gw = 4, H = 9, W = 13, B = 5;
    const uint32_t win[B][4] = {{0, 0, 6, 8}, {0, 5, 6, 8}, {3, 0, 6, 8}, {3, 5, 6, 8}, {2, 3, 5, 7}};
    auto logits = values(B * Q * gh * gw, 22);
    std::vector<uint32_t> sidx(5 * B);
    std::vector<float> swts(5 * B, 0.0f);
    for (uint32_t i = 0; i < B; ++i) {
        for (uint32_t k = 0; k < 4; ++k) sidx[5 * i + k] = win[i][k];
        // Tables appended in window order; the offset is where this window's start.
        sidx[5 * i + 4] = (uint32_t)sidx.size();
        axis_table(gh, win[i][2], sidx, swts);
        axis_table(gw, win[i][3], sidx, swts);
    }
    std::vector<float> canvas(Q * H * W, -1.0f);
    launch_serial({3}, {64}, [&] {
        stitch_windows_f32(logits.data(), sidx.data(), swts.data(), canvas.data(), B, Q, gh, gw,
                           H, W);
    });
    std::vector<double> cwant(Q * H * W);
    for (uint32_t q = 0; q < Q; ++q)
        for (uint32_t py = 0; py < H; ++py)
            for (uint32_t px = 0; px < W; ++px) {
                double s = 0;
                int c = 0;
                for (uint32_t i = 0; i < B; ++i) {
                    const auto &r = win[i];
                    if (py < r[0] || py >= r[0] + r[2] || px < r[1] || px >= r[1] + r[3]) continue;
                    s += bilinear_ref(logits.data() + (i * Q + q) * gh * gw, gh, gw, r[2], r[3],
                                      py - r[0], px - r[1]);
                    ++c;
                }
                cwant[(q * H + py) * W + px] = s / c;
            }
    check("stitch_windows", "f32", rel_err(canvas, cwant), 1e-6);
}

int main() {
    test_all<float>("f32", 2e-6);
    test_all<__half>("f16", 1e-3);
    test_all<__nv_bfloat16>("bf16", 8e-3);
    test_attention<float>("f32", 2e-6);
    test_attention<__half>("f16", 1e-3);
    test_attention<__nv_bfloat16>("bf16", 8e-3);
    test_post();
    test_resample();
    std::printf("%s\n", failures ? "FAILED" : "all kernels match");
    return failures ? 1 : 0;
}
