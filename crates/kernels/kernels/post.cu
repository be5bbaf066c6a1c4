// SCLIP's post-processing of dense logits on the GPU (segsweep-kernels `post`): f32, one thread
// per pixel in a grid-stride loop. Planes are rows of n = h·w pixels, so a warp reading one
// plane reads contiguous memory. The arithmetic is that of segsweep-infer's host functions
// (`class_probs`, `threshold_labels`), in the same order, so labels agree exactly and
// probabilities to the last bits of expf.

#include <math.h>
#include <stdint.h>

// probs[c, p] = max over the queries q of class c of exp(s·x[q, p] − m_p) / Σ_q exp(s·x[q, p] − m_p),
// with m_p = max_q s·x[q, p]. Each pixel's column of probs is written by its thread only.
extern "C" __global__ void class_probs_f32(const float *logits, const uint32_t *query_class,
                                           float *probs, uint32_t n, uint32_t q_n, uint32_t c_n,
                                           float scale) {
    for (uint32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += blockDim.x * gridDim.x) {
        float m = -INFINITY;
        for (uint32_t q = 0; q < q_n; ++q) {
            m = fmaxf(m, logits[(size_t)q * n + p] * scale);
        }
        for (uint32_t c = 0; c < c_n; ++c) {
            probs[(size_t)c * n + p] = 0.0f;
        }
        float sum = 0.0f;
        for (uint32_t q = 0; q < q_n; ++q) {
            const float e = expf(logits[(size_t)q * n + p] * scale - m);
            sum += e;
            float *slot = &probs[(size_t)query_class[q] * n + p];
            *slot = fmaxf(*slot, e);
        }
        for (uint32_t c = 0; c < c_n; ++c) {
            probs[(size_t)c * n + p] /= sum;
        }
    }
}

// The first class reaching the max of (zeroed[c] ? 0 : probs[c, p]): a strictly greater value
// wins, starting from −∞, so ties go to the lowest index (as the host and torch). Returns the
// class; *max_out gets the max.
__device__ __forceinline__ uint32_t first_argmax(const float *probs, const uint8_t *zeroed,
                                                 uint32_t n, uint32_t c_n, uint32_t p,
                                                 float *max_out) {
    float best = -INFINITY;
    uint32_t label = 0;
    for (uint32_t c = 0; c < c_n; ++c) {
        const float v = (zeroed != nullptr && zeroed[c]) ? 0.0f : probs[(size_t)c * n + p];
        if (v > best) {
            best = v;
            label = c;
        }
    }
    *max_out = best;
    return label;
}

// area_thd's first pass: count[c] += the pixels whose argmax is c (count zeroed by the caller).
extern "C" __global__ void area_counts_f32(const float *probs, uint32_t *count, uint32_t n,
                                           uint32_t c_n) {
    for (uint32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += blockDim.x * gridDim.x) {
        float max;
        atomicAdd(&count[first_argmax(probs, nullptr, n, c_n, p, &max)], 1u);
    }
}

// area_thd's decision from area_counts_f32's counts, on the device (segsweep-infer's host
// `area_zeroed`): zeroed[c] = 1 for a foreground class c (every class but bg when has_bg) whose
// count ≤ thd · (the foreground classes' total), with the conversions and the product rounded to
// nearest as the host's f32 arithmetic. One thread does it all (C ≤ a few hundred).
extern "C" __global__ void area_zeroed_u32(const uint32_t *count, uint8_t *zeroed, uint32_t c_n,
                                           float thd, uint32_t bg, uint32_t has_bg) {
    if (blockIdx.x != 0 || threadIdx.x != 0) {
        return;
    }
    unsigned long long total = 0;
    for (uint32_t c = 0; c < c_n; ++c) {
        if (!(has_bg && c == bg)) {
            total += count[c];
        }
    }
    const float limit = __fmul_rn(thd, __ull2float_rn(total));
    for (uint32_t c = 0; c < c_n; ++c) {
        zeroed[c] = (!(has_bg && c == bg) && __uint2float_rn(count[c]) <= limit) ? 1 : 0;
    }
}

// Labels: the argmax with zeroed classes read as 0; a pixel whose max is below prob_thd gets bg.
extern "C" __global__ void threshold_labels_f32(const float *probs, const uint8_t *zeroed,
                                                uint32_t *labels, uint32_t n, uint32_t c_n,
                                                float prob_thd, uint32_t bg) {
    for (uint32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += blockDim.x * gridDim.x) {
        float max;
        const uint32_t label = first_argmax(probs, zeroed, n, c_n, p, &max);
        labels[p] = max < prob_thd ? bg : label;
    }
}

// Bilinear resampling (torch `align_corners=False`) and SCLIP's slide stitching, one thread per
// output element. The source indices and weights come from the host (segsweep-kernels
// `post::bilinear_axis`, torch's formula), and every product and sum is rounded as written
// (`__fmul_rn`/`__fadd_rn`: no fused multiply-adds) in segsweep-infer's host order
// `(v00·wx0 + v01·wx1)·wy0 + (v10·wx0 + v11·wx1)·wy1`, so the results equal the host path's.
//
// An axis table for `o` output positions is `2·o` entries: (i0, i1) per position in `idx` and
// (w0, w1) at the same offsets in `wts`.

// One bilinear sample of a (gh × gw) plane `src` at table entries ty (rows) and tx (columns).
__device__ __forceinline__ float bilinear_at(const float *src, uint32_t gw, const uint32_t *idx,
                                             const float *wts, uint32_t ty, uint32_t tx) {
    const float *a = src + (size_t)idx[ty] * gw;
    const float *b = src + (size_t)idx[ty + 1] * gw;
    const float r0 = __fadd_rn(__fmul_rn(a[idx[tx]], wts[tx]), __fmul_rn(a[idx[tx + 1]], wts[tx + 1]));
    const float r1 = __fadd_rn(__fmul_rn(b[idx[tx]], wts[tx]), __fmul_rn(b[idx[tx + 1]], wts[tx + 1]));
    return __fadd_rn(__fmul_rn(r0, wts[ty]), __fmul_rn(r1, wts[ty + 1]));
}

// y[p, oy, ox] = x[p] resampled from (ih, iw) to (oh, ow): the y table at 0 (2·oh entries), the
// x table at 2·oh (2·ow entries).
extern "C" __global__ void resize_bilinear_f32(const float *x, const uint32_t *idx,
                                               const float *wts, float *y, uint32_t planes,
                                               uint32_t ih, uint32_t iw, uint32_t oh,
                                               uint32_t ow) {
    const uint32_t n = planes * oh * ow;
    for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += blockDim.x * gridDim.x) {
        const uint32_t ox = e % ow, oy = (e / ow) % oh, p = e / (ow * oh);
        y[e] = bilinear_at(x + (size_t)p * ih * iw, iw, idx, wts, 2 * oy, 2 * oh + 2 * ox);
    }
}

// SCLIP's slide canvas, averaged: out[q, y, x] = (Σ over the windows i covering (y, x), in
// order, of crop i's plane q upsampled to its window) / (number of such windows). `logits` is
// (b_n, q_n, gh, gw); `idx` starts with 5 entries per window (y, x, h, w, offset of its tables
// in idx/wts: the y table, 2·h entries, then the x table, 2·w entries). A pixel no window covers
// gets 0/0 (the caller checks coverage first).
extern "C" __global__ void stitch_windows_f32(const float *logits, const uint32_t *idx,
                                              const float *wts, float *out, uint32_t b_n,
                                              uint32_t q_n, uint32_t gh, uint32_t gw,
                                              uint32_t h, uint32_t w) {
    const uint32_t n = q_n * h * w;
    for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += blockDim.x * gridDim.x) {
        const uint32_t px = e % w, py = (e / w) % h, q = e / (w * h);
        float sum = 0.0f, count = 0.0f;
        for (uint32_t i = 0; i < b_n; ++i) {
            const uint32_t *win = idx + 5 * i;
            if (py < win[0] || py >= win[0] + win[2] || px < win[1] || px >= win[1] + win[3]) {
                continue;
            }
            const uint32_t ty = win[4] + 2 * (py - win[0]);
            const uint32_t tx = win[4] + 2 * win[2] + 2 * (px - win[1]);
            const float *src = logits + ((size_t)i * q_n + q) * gh * gw;
            sum = __fadd_rn(sum, bilinear_at(src, gw, idx, wts, ty, tx));
            count = __fadd_rn(count, 1.0f);
        }
        out[e] = __fdiv_rn(sum, count);
    }
}
