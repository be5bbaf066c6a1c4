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
