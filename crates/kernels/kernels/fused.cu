// Fused elementwise kernels for the CLIP block on CUDA (segsweep-clip's `fused` module).
//
// candle runs a half-precision block as ~24 kernels; its broadcast `bias` add walks a generic
// strided index per element (~150 GB/s on an H100), QuickGELU is three kernels, LayerNorm with
// f32 weights needs two casts. These kernels do each of those in one pass over contiguous rows,
// with every intermediate in f32 and one rounding to the output dtype (as a GEMM epilogue does).
//
// Every kernel is a 2-D grid (x over columns or heads, y striding over rows, no per-element
// division), or one warp per row; the index formulas are the ones of the CPU transliterations
// in `src/fused.rs`, which the CPU tests check against
// candle's composed ops. All tensors are contiguous; element counts are below 2^31 (checked on
// the host before launch), so a grid-stride index never wraps in 32 bits.

#ifndef SEGSWEEP_CPU_EMULATION  // kernels/emulate.cpp supplies these on the CPU
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>
#define SEGSWEEP_DYNAMIC_SMEM(name) extern __shared__ __align__(32) unsigned char name[]
#endif
#include <math.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// act: 0 = identity, 1 = QuickGELU x·σ(1.702x), 2 = exact GELU.
__device__ __forceinline__ float activate(float v, uint32_t act) {
    if (act == 1) {
        return v / (1.0f + expf(-1.702f * v));
    }
    if (act == 2) {
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
    return v;
}

// Rows per unrolled step of the row loops below: UNROLL independent loads in flight per thread
// (a thread with one 2-byte load in flight at a time leaves an H100's memory mostly idle).
#define UNROLL 4

// out[r, c] = act(x[r, c] + bias[c]) (+ res[r, c]) for rows × cols.
// Grid: x over column chunks of blockDim.x, y strides over rows (no per-element division); the
// launch caps gridDim.y so that each thread covers many rows, UNROLL at a time.
template <typename T, bool RES>
__device__ void bias_act(const T *__restrict__ x, const T *__restrict__ bias,
                         const T *__restrict__ res, T *__restrict__ out, uint32_t rows,
                         uint32_t cols, uint32_t act) {
    const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) {
        return;
    }
    const float bc = to_f(bias[c]);
    const uint32_t gy = gridDim.y;
    uint32_t r = blockIdx.y;
    for (; r + (UNROLL - 1) * gy < rows; r += UNROLL * gy) {
        float xv[UNROLL], rv[UNROLL];
#pragma unroll
        for (uint32_t u = 0; u < UNROLL; ++u) {
            xv[u] = to_f(x[(r + u * gy) * cols + c]);
            rv[u] = RES ? to_f(res[(r + u * gy) * cols + c]) : 0.0f;
        }
#pragma unroll
        for (uint32_t u = 0; u < UNROLL; ++u) {
            float v = activate(xv[u] + bc, act);
            if (RES) {
                v += rv[u];
            }
            out[(r + u * gy) * cols + c] = from_f<T>(v);
        }
    }
    for (; r < rows; r += gy) {
        const uint32_t i = r * cols + c;
        float v = activate(to_f(x[i]) + bc, act);
        if (RES) {
            v += to_f(res[i]);
        }
        out[i] = from_f<T>(v);
    }
}

// y: (B, T, 3, H, hd), rows r = b·T + t of 3·H·hd; out: (3, B, H, T, hd), q (s = 0) times
// q_scale. Grid: x over the 3·H (s, h) pairs, y strides over rows (capped by the launch, UNROLL
// rows at a time); a block of hd threads copies one contiguous run of hd in and one out.
template <typename T>
__device__ void split_qkv(const T *__restrict__ y, const T *__restrict__ bias,
                          T *__restrict__ out, uint32_t b_n, uint32_t t_n, uint32_t heads,
                          uint32_t hd, float q_scale) {
    const uint32_t sh = blockIdx.x, e = threadIdx.x;
    const uint32_t s = sh / heads, h = sh % heads;
    const uint32_t cols = 3 * heads * hd;
    const uint32_t c = sh * hd + e;
    const float bc = to_f(bias[c]);
    const float scale = s == 0 ? q_scale : 1.0f;
    const uint32_t rows = b_n * t_n, gy = gridDim.y;
    uint32_t r = blockIdx.y;
    for (; r + (UNROLL - 1) * gy < rows; r += UNROLL * gy) {
        float v[UNROLL];
#pragma unroll
        for (uint32_t u = 0; u < UNROLL; ++u) {
            v[u] = to_f(y[(r + u * gy) * cols + c]);
        }
#pragma unroll
        for (uint32_t u = 0; u < UNROLL; ++u) {
            const uint32_t ru = r + u * gy, b = ru / t_n, t = ru % t_n;
            out[(((s * b_n + b) * heads + h) * t_n + t) * hd + e] = from_f<T>((v[u] + bc) * scale);
        }
    }
    for (; r < rows; r += gy) {
        const uint32_t b = r / t_n, t = r % t_n;
        const float v = (to_f(y[r * cols + c]) + bc) * scale;
        out[(((s * b_n + b) * heads + h) * t_n + t) * hd + e] = from_f<T>(v);
    }
}

// o: (B, H, T, hd) → out: (B, T, H·hd). Grid: x over heads, y strides over rows r = b·T + t;
// a block of hd threads.
template <typename T>
__device__ void merge_heads(const T *o, T *out, uint32_t rows, uint32_t t_n, uint32_t heads,
                            uint32_t hd) {
    const uint32_t h = blockIdx.x, e = threadIdx.x;
    for (uint32_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const uint32_t b = r / t_n, t = r % t_n;
        out[(r * heads + h) * hd + e] = o[((b * heads + h) * t_n + t) * hd + e];
    }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, off);
    }
    return v;
}

// One warp per row of `cols`: two-pass mean and variance in f32 (as PyTorch), f32 weight and
// bias, one rounding to T. The row index is the same for all 32 lanes of a warp, so a whole
// warp leaves together and the full-mask shuffles are safe.
template <typename T>
__device__ void layer_norm(const T *x, const float *w, const float *b, T *out, uint32_t rows,
                           uint32_t cols, float eps) {
    const uint32_t row = (uint32_t)(((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32);
    const uint32_t lane = threadIdx.x % 32;
    if (row >= rows) {
        return;
    }
    const T *xr = x + (size_t)row * cols;
    T *yr = out + (size_t)row * cols;
    float s = 0.0f;
    for (uint32_t c = lane; c < cols; c += 32) {
        s += to_f(xr[c]);
    }
    const float mean = warp_sum(s) / (float)cols;
    float q = 0.0f;
    for (uint32_t c = lane; c < cols; c += 32) {
        const float dv = to_f(xr[c]) - mean;
        q += dv * dv;
    }
    const float rstd = rsqrtf(warp_sum(q) / (float)cols + eps);
    for (uint32_t c = lane; c < cols; c += 32) {
        yr[c] = from_f<T>((to_f(xr[c]) - mean) * rstd * w[c] + b[c]);
    }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    }
    return v;
}

// Sequences up to ATT_MAX_KEYS tokens (ViT-B/16 crops of 224 have 197, of 336 have 442), head
// dims up to 32 · ATT_MAX_DIMS (128).
#define ATT_MAX_KEYS 1024
#define ATT_MAX_DIMS 4
// Warps per block (the launch's 256 threads) and query rows per warp: a block covers
// 8 · 4 = 32 query rows of one head.
#define ATT_WARPS 8
#define ATT_ROWS_PER_WARP 4

// One step of the scores' butterfly transpose-reduction over a warp: the lanes whose bit OFF is
// set keep the upper half of the live keys a[0 .. 2·OFF) and send the lower half to their
// partner (and vice versa), adding what they receive into a[0 .. OFF). After the steps 16, 8,
// 4, 2, 1, lane l's a[0] is the sum over all lanes of their a[l]. (OFF a template parameter so
// that every index is a constant and a[] stays in registers.)
template <uint32_t OFF>
__device__ __forceinline__ void butterfly_step(float *a, uint32_t lane) {
    const bool upper = (lane & OFF) != 0;
#pragma unroll
    for (uint32_t i = 0; i < OFF; ++i) {
        const float send = upper ? a[i] : a[i + OFF];
        const float keep = upper ? a[i + OFF] : a[i];
        a[i] = keep + __shfl_xor_sync(0xffffffffu, send, OFF);
    }
}

// softmax(q kᵀ) v for one (batch, head) per blockIdx.x and 32 query rows per blockIdx.y:
// q, k, v (B, H, T, hd) with q already scaled; out (B, T, H·hd), the heads merged. One warp per
// query row, its scores and then probabilities in a row of shared memory (f32), the max and
// the sum as warp reductions.
//
// Scores, 32 keys at a time: lane l first sums q·k over its own dims l, l + 32, … for all 32
// keys (each key row read by the whole warp at once, coalesced), then a butterfly
// transpose-reduction (31 shuffles) leaves lane l with the full score of key l. (A first version
// had each lane read a whole key row of its own: every load touched 32 cache lines.) Output:
// lane l accumulates dims l, l + 32, … over the keys in order, each key's probability read from
// shared memory by the whole warp (a broadcast) and its value row read coalesced.
template <typename T>
__device__ void attention(const T *q, const T *k, const T *v, T *out, uint32_t heads,
                          uint32_t t_n, uint32_t hd) {
    __shared__ float rows[ATT_WARPS][ATT_MAX_KEYS];
    const uint32_t bh = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint32_t b = bh / heads, h = bh % heads;
    const size_t base = (size_t)bh * t_n * hd;
    float *s = rows[warp];
    for (uint32_t i = 0; i < ATT_ROWS_PER_WARP; ++i) {
        const uint32_t t = (blockIdx.y * ATT_ROWS_PER_WARP + i) * ATT_WARPS + warp;
        if (t >= t_n) {
            break;  // the same t for the whole warp
        }
        const T *qr = q + base + (size_t)t * hd;
        float qd[ATT_MAX_DIMS];  // this lane's dims of the query row
#pragma unroll
        for (uint32_t c = 0; c < ATT_MAX_DIMS; ++c) {
            const uint32_t d = c * 32 + lane;
            qd[c] = d < hd ? to_f(qr[d]) : 0.0f;
        }
        float m = -INFINITY;
        for (uint32_t r = 0; r * 32 < t_n; ++r) {
            float a[32];  // partial scores of keys r·32 + i over this lane's dims
#pragma unroll
            for (uint32_t i = 0; i < 32; ++i) {
                const uint32_t j = r * 32 + i;
                float acc = 0.0f;
                if (j < t_n) {
                    const T *kr = k + base + (size_t)j * hd;
#pragma unroll
                    for (uint32_t c = 0; c < ATT_MAX_DIMS; ++c) {
                        const uint32_t d = c * 32 + lane;
                        if (d < hd) {
                            acc += qd[c] * to_f(kr[d]);
                        }
                    }
                }
                a[i] = acc;
            }
            butterfly_step<16>(a, lane);
            butterfly_step<8>(a, lane);
            butterfly_step<4>(a, lane);
            butterfly_step<2>(a, lane);
            butterfly_step<1>(a, lane);
            const uint32_t j = r * 32 + lane;
            if (j < t_n) {
                s[j] = a[0];
                m = fmaxf(m, a[0]);
            }
        }
        m = warp_max(m);
        float sum = 0.0f;
        for (uint32_t j = lane; j < t_n; j += 32) {
            const float e = expf(s[j] - m);
            s[j] = e;
            sum += e;
        }
        const float inv = 1.0f / warp_sum(sum);
        __syncwarp();  // every lane's probabilities visible to the whole warp
        float o[ATT_MAX_DIMS];
#pragma unroll
        for (uint32_t c = 0; c < ATT_MAX_DIMS; ++c) {
            o[c] = 0.0f;
        }
        for (uint32_t j = 0; j < t_n; ++j) {
            const float p = s[j];
            const T *vr = v + base + (size_t)j * hd;
#pragma unroll
            for (uint32_t c = 0; c < ATT_MAX_DIMS; ++c) {
                const uint32_t d = c * 32 + lane;
                if (d < hd) {
                    o[c] += p * to_f(vr[d]);
                }
            }
        }
        T *orow = out + ((size_t)b * t_n + t) * heads * hd + (size_t)h * hd;
#pragma unroll
        for (uint32_t c = 0; c < ATT_MAX_DIMS; ++c) {
            const uint32_t d = c * 32 + lane;
            if (d < hd) {
                orow[d] = from_f<T>(o[c] * inv);
            }
        }
        __syncwarp();  // the row is read before the next query row overwrites it
    }
}

// Tensor-core attention for f16 and bf16 (the same function as `attention`): one warp per
// block computes 16 query rows of one (batch, head) with WMMA 16×16×16 tiles, f32 accumulation.
// S = Q Kᵀ tile by tile into shared memory (f32); per row the max and exp(s − max) in f32,
// rounded once to T as P (as SDPA and candle's composed path round the probabilities), and the
// sum of those rounded values; O = P V, then each row times 1 / sum and rounded to T. A partial
// last tile of rows (T not a multiple of 16) is copied into shared memory with zero rows after
// T; padded keys get probability 0. Shared memory (dynamic): (16, max(Tp, hd)) f32 + (16, Tp) T
// + (16, hd) T + 16 f32, at most ~47 KB for MMA_MAX_TOKENS and hd 128. Needs hd a multiple of
// 16 and q, k, v 32-byte aligned (checked by the launch, which otherwise uses `attention`).
#define MMA_MAX_TOKENS 448
#define MMA_MAX_DIM 128

// Rows [r0, r0 + 16) of a (t_n, hd) row-major matrix as a WMMA tile source: in place when they
// are all rows of it, else copied into `stage` with zero rows from t_n on.
template <typename T>
__device__ const T *rows_tile(const T *m, uint32_t r0, uint32_t t_n, uint32_t hd, T *stage,
                              uint32_t lane) {
    if (r0 + 16 <= t_n) {
        return m + (size_t)r0 * hd;
    }
    __syncwarp();  // earlier loads from `stage` are done
    for (uint32_t e = lane; e < 16 * hd; e += 32) {
        const uint32_t r = r0 + e / hd;
        stage[e] = r < t_n ? m[(size_t)r * hd + e % hd] : from_f<T>(0.0f);
    }
    __syncwarp();
    return stage;
}

template <typename T>
__device__ void attention_mma(const T *q, const T *k, const T *v, T *out, uint32_t heads,
                              uint32_t t_n, uint32_t hd) {
    namespace wmma = nvcuda::wmma;
    SEGSWEEP_DYNAMIC_SMEM(smem);
    const uint32_t bh = blockIdx.x, t0 = blockIdx.y * 16, lane = threadIdx.x % 32;
    const uint32_t b = bh / heads, h = bh % heads;
    const uint32_t tp = (t_n + 15) / 16 * 16;  // keys padded to whole tiles
    const uint32_t sw = tp > hd ? tp : hd;     // row length of the f32 scratch
    float *S = (float *)smem;                  // (16, sw): scores, later the output
    T *P = (T *)(S + 16 * sw);                 // (16, tp): exp(s − max) rounded to T
    T *stage = P + 16 * tp;                    // (16, hd): a partial tile of rows
    float *inv = (float *)(stage + 16 * hd);   // (16,): 1 / Σ P per row
    const size_t base = (size_t)bh * t_n * hd;
    const T *qm = q + base, *km = k + base, *vm = v + base;

    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qa[MMA_MAX_DIM / 16];
    const T *qt = rows_tile(qm, t0, t_n, hd, stage, lane);
#pragma unroll
    for (uint32_t c = 0; c < MMA_MAX_DIM / 16; ++c) {
        if (c * 16 < hd) {
            wmma::load_matrix_sync(qa[c], qt + c * 16, hd);
        }
    }
    for (uint32_t kt = 0; kt < tp / 16; ++kt) {
        const T *kp = rows_tile(km, kt * 16, t_n, hd, stage, lane);
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (uint32_t c = 0; c < MMA_MAX_DIM / 16; ++c) {
            if (c * 16 < hd) {
                // Kᵀ as the (dims × keys) operand: K row-major is Kᵀ column-major.
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kb;
                wmma::load_matrix_sync(kb, kp + c * 16, hd);
                wmma::mma_sync(acc, qa[c], kb, acc);
            }
        }
        wmma::store_matrix_sync(S + kt * 16, acc, sw, wmma::mem_row_major);
    }
    __syncwarp();
    for (uint32_t r = 0; r < 16; ++r) {
        const float *sr = S + r * sw;
        float m = -INFINITY;
        for (uint32_t j = lane; j < t_n; j += 32) {
            m = fmaxf(m, sr[j]);
        }
        m = warp_max(m);
        float sum = 0.0f;
        for (uint32_t j = lane; j < tp; j += 32) {
            const T e = from_f<T>(j < t_n ? expf(sr[j] - m) : 0.0f);
            P[r * tp + j] = e;
            sum += to_f(e);
        }
        sum = warp_sum(sum);
        if (lane == 0) {
            inv[r] = 1.0f / sum;
        }
    }
    __syncwarp();
#pragma unroll
    for (uint32_t c = 0; c < MMA_MAX_DIM / 16; ++c) {
        if (c * 16 < hd) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
            wmma::fill_fragment(o, 0.0f);
            for (uint32_t kt = 0; kt < tp / 16; ++kt) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pa;
                wmma::load_matrix_sync(pa, P + kt * 16, tp);
                const T *vp = rows_tile(vm, kt * 16, t_n, hd, stage, lane);
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vb;
                wmma::load_matrix_sync(vb, vp + c * 16, hd);
                wmma::mma_sync(o, pa, vb, o);
            }
            wmma::store_matrix_sync(S + c * 16, o, sw, wmma::mem_row_major);
        }
    }
    __syncwarp();
    for (uint32_t e = lane; e < 16 * hd; e += 32) {
        const uint32_t r = e / hd, d = e % hd, t = t0 + r;
        if (t < t_n) {
            out[((size_t)b * t_n + t) * heads * hd + (size_t)h * hd + d] =
                from_f<T>(S[r * sw + d] * inv[r]);
        }
    }
}

// Tensor-core attention, the same function as `attention_mma`, written for speed (the WMMA
// kernel above took 0.82 of a 1.70 ms block on an H100, 64 crops of ViT-B/16 in f16: one warp
// per block, K and V read from global memory tile by tile, scores through shared memory).
// Here a block of FA_WARPS warps computes FA_WARPS · 16 query rows of one (batch, head):
// - the block first stages K (tp, hd) and Vᵀ (hd, tp) of its head in shared memory, keys
//   padded with zeros to tp (T rounded up to 16), rows padded by FA_PAD elements so that the
//   fragment loads below hit 32 different banks;
// - each warp holds its 16 query rows as `mma.sync.m16n8k16` A fragments in registers and runs
//   two passes over the keys: pass 1 computes the scores 8 keys at a time and keeps each row's
//   max; pass 2 recomputes them 16 keys at a time, forms P = exp(s − max) rounded to T (0 for
//   padded keys) in registers, adds the rounded values to the row sums, and multiplies P with
//   Vᵀ into f32 accumulators (the scores' accumulator layout is the A operand's layout, so P
//   never leaves the registers);
// - each row is multiplied by 1 / sum and rounded to T once.
// As in `attention_mma`: f32 scores and sums, P rounded to T before P·V. Needs hd a multiple of
// 16 up to FA_MAX_DIM (every CLIP ViT has hd 64), sm_80, and the dynamic shared memory
// (tp · (hd + FA_PAD) + hd · (tp + FA_PAD)) · sizeof(T), 57.6 KB for ViT-B/16 on 224 crops; the
// launch checks all three and otherwise uses `attention_mma`.
//
// Fragment layouts (PTX ISA, mma.m16n8k16, 16-bit inputs; g = lane / 4, q = lane % 4, the lower
// column in the low 16 bits of a register): A (16 × 16, row-major) registers 0–3 hold
// (row g, cols 2q..2q+1), (g + 8, 2q..), (g, 2q + 8..), (g + 8, 2q + 8..); B (16 × 8, k × n)
// registers 0–1 hold (k 2q..2q+1, col g), (k 2q + 8.., col g); C/D (16 × 8, f32) hold
// (row g, cols 2q, 2q + 1), then (row g + 8, cols 2q, 2q + 1).
#define FA_WARPS 8
#define FA_PAD 8
#define FA_MAX_DIM 64
#define FA_STAGE_UNROLL 2

#ifndef SEGSWEEP_CPU_EMULATION  // kernels/emulate.cpp supplies these on the CPU
template <typename T> __device__ __forceinline__ uint32_t ld2(const T *p) {
    return *reinterpret_cast<const uint32_t *>(p);
}
template <typename T> __device__ __forceinline__ void st2(T *p, uint32_t v) {
    *reinterpret_cast<uint32_t *>(p) = v;
}
template <typename T> __device__ __forceinline__ uint4 ld16(const T *p) {
    return *reinterpret_cast<const uint4 *>(p);
}
template <typename T> __device__ __forceinline__ void st16(T *p, uint4 v) {
    *reinterpret_cast<uint4 *>(p) = v;
}
template <typename T> __device__ __forceinline__ void st_bits16(T *p, uint32_t bits) {
    *reinterpret_cast<uint16_t *>(p) = (uint16_t)bits;
}
__device__ __forceinline__ uint32_t bits16(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ uint32_t bits16(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
// d += a · b for one m16n8k16 tile (the warp's 32 lanes together), T picks the input type.
__device__ __forceinline__ void mma16816(float *d, const uint32_t *a, const uint32_t *b, __half) {
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
__device__ __forceinline__ void mma16816(float *d, const uint32_t *a, const uint32_t *b,
                                         __nv_bfloat16) {
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
#endif

// Two values rounded to T, packed as one register (`lo` in the low half).
template <typename T> __device__ __forceinline__ uint32_t pack2(T lo, T hi) {
    return bits16(lo) | (bits16(hi) << 16);
}

// s += (the warp's 16 query rows) · (8 keys)ᵀ: `kp` points at this lane's key row (g) and dim
// pair (2q) in the staged K.
template <typename T>
__device__ __forceinline__ void fa_scores(const uint32_t (&qa)[FA_MAX_DIM / 16][4], const T *kp,
                                          uint32_t hd, float *s) {
#pragma unroll
    for (uint32_t c = 0; c < FA_MAX_DIM / 16; ++c) {
        if (c * 16 < hd) {
            const uint32_t kb[2] = {ld2(kp + c * 16), ld2(kp + c * 16 + 8)};
            mma16816(s, qa[c], kb, T());
        }
    }
}

template <typename T>
__device__ void attention_fa(const T *__restrict__ q, const T *__restrict__ k,
                             const T *__restrict__ v, T *__restrict__ out, uint32_t heads,
                             uint32_t t_n, uint32_t hd) {
    SEGSWEEP_DYNAMIC_SMEM(smem);
    const uint32_t bh = blockIdx.x, b = bh / heads, h = bh % heads;
    const uint32_t tp = (t_n + 15) / 16 * 16;
    const uint32_t ks_ld = hd + FA_PAD, vt_ld = tp + FA_PAD;
    T *ks = (T *)smem;        // (tp, ks_ld): K, zero rows from t_n
    T *vt = ks + tp * ks_ld;  // (hd, vt_ld): Vᵀ, zero columns from t_n
    const size_t base = (size_t)bh * t_n * hd;
    const T *qm = q + base, *km = k + base, *vm = v + base;
    // 16-byte loads (8 values of one row), FA_STAGE_UNROLL of them in flight per thread before
    // their stores: a first version moved 2 bytes per load, one load in flight, and its staging
    // took most of the kernel's time (0.37 ms of a 64-crop block on an H100).
    const uint32_t per_row = hd / 8, n_vec = tp * per_row;
    for (uint32_t e0 = threadIdx.x; e0 < n_vec; e0 += FA_STAGE_UNROLL * blockDim.x) {
        uint4 kx[FA_STAGE_UNROLL], vx[FA_STAGE_UNROLL];
#pragma unroll
        for (uint32_t u = 0; u < FA_STAGE_UNROLL; ++u) {
            const uint32_t e = e0 + u * blockDim.x, r = e / per_row, d = e % per_row * 8;
            kx[u] = vx[u] = make_uint4(0u, 0u, 0u, 0u);
            if (e < n_vec && r < t_n) {
                kx[u] = ld16(km + (size_t)r * hd + d);
                vx[u] = ld16(vm + (size_t)r * hd + d);
            }
        }
#pragma unroll
        for (uint32_t u = 0; u < FA_STAGE_UNROLL; ++u) {
            const uint32_t e = e0 + u * blockDim.x, r = e / per_row, d = e % per_row * 8;
            if (e < n_vec) {
                st16(ks + r * ks_ld + d, kx[u]);
                const uint32_t w[4] = {vx[u].x, vx[u].y, vx[u].z, vx[u].w};
#pragma unroll
                for (uint32_t i = 0; i < 4; ++i) {  // dims d + 2i (low half), d + 2i + 1
                    st_bits16(vt + (d + 2 * i) * vt_ld + r, w[i] & 0xffffu);
                    st_bits16(vt + (d + 2 * i + 1) * vt_ld + r, w[i] >> 16);
                }
            }
        }
    }
    __syncthreads();  // the only barrier: warps without rows may leave after it
    const uint32_t lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const uint32_t t0 = (blockIdx.y * FA_WARPS + threadIdx.x / 32) * 16;
    if (t0 >= t_n) {
        return;
    }
    const uint32_t r0 = t0 + g, r1 = t0 + g + 8;  // this lane's two query rows
    uint32_t qa[FA_MAX_DIM / 16][4];
#pragma unroll
    for (uint32_t c = 0; c < FA_MAX_DIM / 16; ++c) {
        if (c * 16 < hd) {
            const uint32_t d = c * 16 + 2 * tq;
            qa[c][0] = r0 < t_n ? ld2(qm + (size_t)r0 * hd + d) : 0u;
            qa[c][1] = r1 < t_n ? ld2(qm + (size_t)r1 * hd + d) : 0u;
            qa[c][2] = r0 < t_n ? ld2(qm + (size_t)r0 * hd + d + 8) : 0u;
            qa[c][3] = r1 < t_n ? ld2(qm + (size_t)r1 * hd + d + 8) : 0u;
        }
    }
    const T *kl = ks + g * ks_ld + 2 * tq;  // this lane's key row and dim pair, first tile
    // Pass 1: each row's max over its keys (lanes 4g..4g+3 hold row g's keys 2q, 2q + 1 of
    // every 8).
    float m0 = -INFINITY, m1 = -INFINITY;
    for (uint32_t n = 0; n < tp / 8; ++n) {
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        fa_scores<T>(qa, kl + n * 8 * ks_ld, hd, s);
        const uint32_t j = n * 8 + 2 * tq;
        if (j < t_n) {
            m0 = fmaxf(m0, s[0]);
            m1 = fmaxf(m1, s[2]);
        }
        if (j + 1 < t_n) {
            m0 = fmaxf(m0, s[1]);
            m1 = fmaxf(m1, s[3]);
        }
    }
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 1));
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 2));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 1));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 2));
    // Pass 2: P and P·Vᵀ, 16 keys at a time.
    float o[FA_MAX_DIM / 8][4];
#pragma unroll
    for (uint32_t nd = 0; nd < FA_MAX_DIM / 8; ++nd) {
        o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    }
    float l0 = 0.0f, l1 = 0.0f;
    const T *vl = vt + g * vt_ld + 2 * tq;  // this lane's dim row and key pair, first tile
    for (uint32_t kc = 0; kc < tp / 16; ++kc) {
        uint32_t pa[4];
#pragma unroll
        for (uint32_t u = 0; u < 2; ++u) {
            float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            fa_scores<T>(qa, kl + (2 * kc + u) * 8 * ks_ld, hd, s);
            const uint32_t j = (2 * kc + u) * 8 + 2 * tq;
            const T p0 = from_f<T>(j < t_n ? expf(s[0] - m0) : 0.0f);
            const T p1 = from_f<T>(j + 1 < t_n ? expf(s[1] - m0) : 0.0f);
            const T p2 = from_f<T>(j < t_n ? expf(s[2] - m1) : 0.0f);
            const T p3 = from_f<T>(j + 1 < t_n ? expf(s[3] - m1) : 0.0f);
            l0 += to_f(p0) + to_f(p1);
            l1 += to_f(p2) + to_f(p3);
            pa[2 * u] = pack2(p0, p1);      // row g, keys 8u + 2q..
            pa[2 * u + 1] = pack2(p2, p3);  // row g + 8
        }
#pragma unroll
        for (uint32_t nd = 0; nd < FA_MAX_DIM / 8; ++nd) {
            if (nd * 8 < hd) {
                const T *vp = vl + nd * 8 * vt_ld + kc * 16;
                const uint32_t vb[2] = {ld2(vp), ld2(vp + 8)};
                mma16816(o[nd], pa, vb, T());
            }
        }
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
    const size_t stride = (size_t)heads * hd;  // one token of the merged output
    T *o0 = out + ((size_t)b * t_n + r0) * stride + (size_t)h * hd + 2 * tq;
    T *o1 = o0 + 8 * stride;
#pragma unroll
    for (uint32_t nd = 0; nd < FA_MAX_DIM / 8; ++nd) {
        if (nd * 8 < hd) {
            if (r0 < t_n) {
                st2(o0 + nd * 8, pack2(from_f<T>(o[nd][0] * inv0), from_f<T>(o[nd][1] * inv0)));
            }
            if (r1 < t_n) {
                st2(o1 + nd * 8, pack2(from_f<T>(o[nd][2] * inv1), from_f<T>(o[nd][3] * inv1)));
            }
        }
    }
}

#define FA_OPS(T, SUFFIX)                                                                        \
    extern "C" __global__ void __launch_bounds__(FA_WARPS * 32, 3)                               \
        attention_fa_##SUFFIX(const T *q, const T *k, const T *v, T *out, uint32_t heads,        \
                              uint32_t t_n, uint32_t hd) {                                       \
        attention_fa<T>(q, k, v, out, heads, t_n, hd);                                           \
    }

#define MMA_OPS(T, SUFFIX)                                                                       \
    extern "C" __global__ void attention_mma_##SUFFIX(const T *q, const T *k, const T *v,        \
                                                      T *out, uint32_t heads, uint32_t t_n,      \
                                                      uint32_t hd) {                             \
        attention_mma<T>(q, k, v, out, heads, t_n, hd);                                          \
    }

#define FUSED_OPS(T, SUFFIX)                                                                     \
    extern "C" __global__ void bias_act_##SUFFIX(const T *x, const T *bias, T *out,              \
                                                 uint32_t rows, uint32_t cols, uint32_t act) {   \
        bias_act<T, false>(x, bias, nullptr, out, rows, cols, act);                              \
    }                                                                                            \
    extern "C" __global__ void bias_act_res_##SUFFIX(const T *x, const T *bias, const T *res,    \
                                                     T *out, uint32_t rows, uint32_t cols,       \
                                                     uint32_t act) {                             \
        bias_act<T, true>(x, bias, res, out, rows, cols, act);                                   \
    }                                                                                            \
    extern "C" __global__ void split_qkv_##SUFFIX(const T *y, const T *bias, T *out,             \
                                                  uint32_t b_n, uint32_t t_n, uint32_t heads,    \
                                                  uint32_t hd, float q_scale) {                  \
        split_qkv<T>(y, bias, out, b_n, t_n, heads, hd, q_scale);                                \
    }                                                                                            \
    extern "C" __global__ void merge_heads_##SUFFIX(const T *o, T *out, uint32_t rows,           \
                                                    uint32_t t_n, uint32_t heads, uint32_t hd) { \
        merge_heads<T>(o, out, rows, t_n, heads, hd);                                            \
    }                                                                                            \
    extern "C" __global__ void attention_##SUFFIX(const T *q, const T *k, const T *v, T *out,    \
                                                  uint32_t heads, uint32_t t_n, uint32_t hd) {   \
        attention<T>(q, k, v, out, heads, t_n, hd);                                              \
    }                                                                                            \
    extern "C" __global__ void layer_norm_##SUFFIX(const T *x, const float *w, const float *b,   \
                                                   T *out, uint32_t rows, uint32_t cols,         \
                                                   float eps) {                                  \
        layer_norm<T>(x, w, b, out, rows, cols, eps);                                            \
    }

FUSED_OPS(float, f32)
FUSED_OPS(__half, f16)
FUSED_OPS(__nv_bfloat16, bf16)
// WMMA needs sm_70 for f16 and sm_80 for bf16; on older targets the launch finds no such kernel
// and uses `attention`.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 700
MMA_OPS(__half, f16)
#endif
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
MMA_OPS(__nv_bfloat16, bf16)
#endif
// mma.sync m16n8k16 needs sm_80 (either type); below it the launch uses `attention_mma`.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
FA_OPS(__half, f16)
FA_OPS(__nv_bfloat16, bf16)
#endif
