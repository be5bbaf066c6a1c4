//! SFR (semantic feedback refinement): from the coarse pass's query probabilities to the
//! attention prior A_sfr that the final pass injects (ResCLIP `clip/model.py:106-240`).
//!
//! Everything here is plain host code on small grids (one crop: at most a few thousand patches),
//! written step by step as methods.md §2 lists them, so that each step can be compared with the
//! PyTorch reference on its own. Labels and modes are exact; floats follow torch's f32 order of
//! operations where it decides a discrete outcome (the path test's sample points).

use half::f16;
use segsweep_core::{CoreError, Result};

/// How the path test rounds its sample points.
///
/// ResCLIP's `check_path` is `@torch.jit.script`. Run eagerly (CPU, and the first call on CUDA)
/// it computes `start·(1−t) + end·t` with two roundings and rounds half to even; from the second
/// call on CUDA, TorchScript fuses it into `fma(start, 1−t, end·t)` rounded half away from zero.
/// They differ only where a sample point falls on .5, which happens when the grid's largest
/// Chebyshev distance is even (whole-image inference); 14×14 slide crops are unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRounding {
    /// Separate f32 roundings, half to even (torch eager; the default).
    Eager,
    /// One fused multiply-add, half away from zero (TorchScript's fused CUDA kernel).
    Fused,
}

impl PathRounding {
    /// Parse the `path_rounding` parameter.
    pub fn parse(s: &str) -> Result<PathRounding> {
        match s {
            "eager" => Ok(PathRounding::Eager),
            "fused" => Ok(PathRounding::Fused),
            other => Err(CoreError::Param {
                plugin: "resclip".into(),
                key: "path_rounding".into(),
                msg: format!("`{other}` is not one of \"eager\", \"fused\""),
                hint: None,
            }),
        }
    }
}

/// Step 2: pixel labels `(H·W)` from coarse query probabilities `(Q, H, W)` (row-major slice):
/// the argmax query (the first one wins ties, as `torch.argmax`), replaced by query 0 where the
/// max probability is below `temp_thd`.
pub fn pixel_labels(probs: &[f32], q: usize, h: usize, w: usize, temp_thd: f32) -> Vec<u32> {
    let hw = h * w;
    let mut best = vec![0u32; hw];
    let mut max = probs[..hw].to_vec();
    for qi in 1..q {
        let plane = &probs[qi * hw..][..hw];
        for ((b, m), &p) in best.iter_mut().zip(max.iter_mut()).zip(plane) {
            if p > *m {
                *m = p;
                *b = qi as u32;
            }
        }
    }
    for (b, m) in best.iter_mut().zip(&max) {
        if *m < temp_thd {
            *b = 0;
        }
    }
    best
}

/// Step 3: the label of each patch `(gh·gw)`, the mode over its `patch × patch` pixels of a
/// `(h, w)` label map (`torch.mode` on CPU: the smallest label wins ties). Pixels beyond
/// `gh·patch` rows or `gw·patch` columns are ignored, as the reference's `unfold` does.
pub fn patch_modes(
    labels: &[u32],
    (h, w): (usize, usize),
    patch: usize,
    (gh, gw): (usize, usize),
) -> Result<Vec<u32>> {
    if gh * patch > h || gw * patch > w || labels.len() != h * w {
        return Err(CoreError::shape(
            "resclip pixel labels",
            format!(
                "at least ({}, {}) pixels for a {gh}×{gw} grid of {patch}-pixel patches",
                gh * patch,
                gw * patch
            ),
            &[h, w],
        ));
    }
    let mut out = Vec::with_capacity(gh * gw);
    let mut vals = Vec::with_capacity(patch * patch);
    for py in 0..gh {
        for px in 0..gw {
            vals.clear();
            for y in py * patch..(py + 1) * patch {
                vals.extend_from_slice(&labels[y * w + px * patch..][..patch]);
            }
            vals.sort_unstable();
            // Longest run in sorted order; a strictly longer run is needed to replace the
            // current one, so the smallest label wins ties.
            let (mut best, mut best_len) = (vals[0], 0usize);
            let mut i = 0;
            while i < vals.len() {
                let j = i + vals[i..].iter().take_while(|&&v| v == vals[i]).count();
                if j - i > best_len {
                    best = vals[i];
                    best_len = j - i;
                }
                i = j;
            }
            out.push(best);
        }
    }
    Ok(out)
}

/// `torch.linspace(0, 1, steps)` in f32, bit for bit: `step·i` below the halfway index
/// `steps/2`, `1 − step·(steps−1−i)` from it on with a single rounding (torch's kernel line is
/// compiled to an FMA, on the CPU as with nvcc's default contraction), `step = 1/(steps−1)` in
/// f32. Exact t values matter: they decide which sample points land exactly on .5 (e.g. the
/// middle of 15 steps is 0.49999997, not 0.5).
pub fn linspace01(steps: usize) -> Vec<f32> {
    if steps <= 1 {
        return vec![0.0; steps];
    }
    let step = 1.0f32 / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step * i as f32
            } else {
                (-step).mul_add((steps - 1 - i) as f32, 1.0)
            }
        })
        .collect()
}

fn sample(start: usize, end: usize, t: f32, rounding: PathRounding) -> usize {
    let (s, e) = (start as f32, end as f32);
    let v = match rounding {
        PathRounding::Eager => (s * (1.0 - t) + e * t).round_ties_even(),
        PathRounding::Fused => s.mul_add(1.0 - t, e * t).round(),
    };
    v as usize
}

/// Steps 4–5: the same-label matrix `(N, N)` (N = gh·gw, row-major, diagonal 1) after the path
/// test: a same-label pair (i, j) at Chebyshev distance s is kept if the first s+1 of the
/// s_max+1 points `i + t·(j − i)`, t = linspace(0, 1, s_max+1), all carry i's label, and
/// multiplied by exp(−s/s_max) otherwise. The quirk is deliberate: sampling the common grid but
/// checking only s+1 points covers just the fraction s/s_max of the segment (methods.md §2).
pub fn path_tested(
    patch_labels: &[u32],
    (gh, gw): (usize, usize),
    rounding: PathRounding,
) -> Vec<f32> {
    let n = gh * gw;
    let s_max = gh.max(gw).saturating_sub(1);
    let t = linspace01(s_max + 1);
    let mut m = vec![0f32; n * n];
    for i in 0..n {
        let (ir, ic) = (i / gw, i % gw);
        let li = patch_labels[i];
        for j in 0..n {
            if patch_labels[j] != li {
                continue;
            }
            let (jr, jc) = (j / gw, j % gw);
            let s = ir.abs_diff(jr).max(ic.abs_diff(jc));
            let valid = t[..=s].iter().all(|&tk| {
                let r = sample(ir, jr, tk, rounding);
                let c = sample(ic, jc, tk, rounding);
                patch_labels[r * gw + c] == li
            });
            m[i * n + j] = if valid {
                1.0
            } else {
                // torch: `exp(-steps / max_steps)`, the quotient in f32.
                (-(s as f32) / s_max as f32).exp()
            };
        }
    }
    m
}

/// The normalised 1-D Gaussian kernel of step 6: size `min(n, int(6σ+1))`, made odd by adding
/// one, taps `exp(−x²/(2σ²))` for x = −size/2..=size/2, divided by their sum (f32 as torch).
pub fn smoothing_kernel(n: usize, sigma: f64) -> Vec<f32> {
    let mut size = n.min((6.0 * sigma + 1.0) as usize);
    if size.is_multiple_of(2) {
        size += 1;
    }
    let half = (size / 2) as i64;
    let denom = (2.0 * sigma * sigma) as f32;
    let taps: Vec<f32> = (-half..=half)
        .map(|x| (-((x * x) as f32) / denom).exp())
        .collect();
    let sum: f32 = taps.iter().sum();
    taps.iter().map(|v| v / sum).collect()
}

/// Step 6: smooth every row of an `(n, n)` matrix with the 1-D Gaussian along the flattened
/// patch index (zero padding, `conv1d` with `padding = size/2`). The reference smooths along
/// the row-major index, so a row's neighbours include the end of the previous patch row.
pub fn smooth_rows(m: &[f32], n: usize, sigma: f64) -> Vec<f32> {
    let k = smoothing_kernel(n, sigma);
    let half = k.len() / 2;
    let mut out = vec![0f32; n * n];
    for (row, orow) in m.chunks(n).zip(out.chunks_mut(n)) {
        for (x, o) in orow.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (tap, &kv) in k.iter().enumerate() {
                let src = x + tap;
                if src >= half && src - half < n {
                    acc += kv * row[src - half];
                }
            }
            *o = acc;
        }
    }
    out
}

/// Step 7: ReLU, divide each row by its sum + 1e-8, and embed in `(N+1, N+1)` with a zero CLS
/// row and column.
///
/// Shapes: `m` is the `(n, n)` patch-to-patch matrix, row-major (`n = gh·gw`); the result is
/// `(n+1, n+1)` row-major, row and column 0 (the CLS token) zero, `m`'s rows at `1..=n`. An
/// all-non-positive row stays zero (the 1e-8 keeps the division finite).
pub fn normalise_with_cls(m: &[f32], n: usize) -> Vec<f32> {
    let t = n + 1;
    let mut out = vec![0f32; t * t];
    for (i, row) in m.chunks(n).enumerate() {
        let relu: Vec<f32> = row.iter().map(|v| v.max(0.0)).collect();
        let sum: f32 = relu.iter().sum();
        let orow = &mut out[(i + 1) * t + 1..][..n];
        for (o, v) in orow.iter_mut().zip(&relu) {
            *o = v / (sum + 1e-8);
        }
    }
    out
}

/// Steps 2–7 for one crop: A_sfr `(N+1, N+1)` from coarse query probabilities `(Q, H, W)`.
pub fn sfr_matrix(
    probs: &[f32],
    (q, h, w): (usize, usize, usize),
    patch: usize,
    grid: (usize, usize),
    temp_thd: f32,
    sigma: f64,
    rounding: PathRounding,
) -> Result<SfrParts> {
    let pixels = pixel_labels(probs, q, h, w, temp_thd);
    let patches = patch_modes(&pixels, (h, w), patch, grid)?;
    let n = grid.0 * grid.1;
    let tested = path_tested(&patches, grid, rounding);
    let smoothed = smooth_rows(&tested, n, sigma);
    let a_sfr = normalise_with_cls(&smoothed, n);
    Ok(SfrParts {
        pixels,
        patches,
        tested,
        a_sfr,
    })
}

/// The intermediate results of [`sfr_matrix`], kept for tests and diagnostics.
#[derive(Debug, Clone)]
pub struct SfrParts {
    /// Pixel labels `(H·W)`.
    pub pixels: Vec<u32>,
    /// Patch labels `(gh·gw)`.
    pub patches: Vec<u32>,
    /// Same-label matrix after the path test and decay, `(N, N)`.
    pub tested: Vec<f32>,
    /// A_sfr `(N+1, N+1)`: smoothed, row-normalised, CLS row/column 0.
    pub a_sfr: Vec<f32>,
}

/// Step 8's injected term λ·Â with the reference's precisions: Â = A_sfr / max(A_sfr) cast to
/// f16 (even in an f32 model, `model.py:477-478`), and λ·Â computed as torch multiplies an f16
/// tensor by a Python float (in f32, rounded back to f16).
///
/// Shapes: `a_sfr` is `(N+1, N+1)` row-major (CLS first, as [`normalise_with_cls`] returns it);
/// the result has the same shape and layout, the f16-rounded values stored as f32.
pub fn injected_term(a_sfr: &[f32], lambda: f64) -> Vec<f32> {
    let max = a_sfr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lambda = lambda as f32;
    a_sfr
        .iter()
        .map(|&v| {
            let a = f16::from_f32(v / max).to_f32();
            f16::from_f32(lambda * a).to_f32()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_prefers_the_smallest_label_on_ties() {
        // 2×4 pixels, patch 2 → grid 1×2: left patch {3,3,1,1} → 1; right {2,5,5,2} → 2.
        let px = [3, 3, 2, 5, 1, 1, 5, 2];
        assert_eq!(patch_modes(&px, (2, 4), 2, (1, 2)).unwrap(), vec![1, 2]);
        assert!(patch_modes(&px, (2, 4), 2, (2, 2)).is_err());
    }

    #[test]
    fn low_confidence_pixels_fall_back_to_query_0() {
        // Q=3, 1×3 pixels: argmax 2 (0.6), argmax 1 (0.4 < 0.45 → 0), tie 0.5/0.5 → first (1).
        let p = [0.2, 0.3, 0.0, 0.2, 0.4, 0.5, 0.6, 0.3, 0.5];
        assert_eq!(pixel_labels(&p, 3, 1, 3, 0.45), vec![2, 0, 1]);
    }

    #[test]
    fn linspace_matches_torch_values() {
        // Values printed by torch 2.15 on the CPU (`torch.linspace(0, 1, n)`).
        assert_eq!(linspace01(5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(linspace01(15)[7], 0.499_999_97);
        assert_eq!(linspace01(14)[10], 0.769_230_8);
        assert_eq!(linspace01(16)[12], 0.8);
        assert_eq!(linspace01(14)[13], 1.0);
    }

    #[test]
    fn eager_and_fused_rounding_differ_on_half_points() {
        // 0 → 4 at t = 1/8: 0.5 rounds to 0 (even) eagerly, to 1 (away) fused.
        assert_eq!(sample(0, 4, 0.125, PathRounding::Eager), 0);
        assert_eq!(sample(0, 4, 0.125, PathRounding::Fused), 1);
        // 1 → 5 at t = 1/8: 1.5 rounds to 2 either way.
        assert_eq!(sample(1, 5, 0.125, PathRounding::Eager), 2);
        assert_eq!(sample(1, 5, 0.125, PathRounding::Fused), 2);
    }

    #[test]
    fn path_test_decays_pairs_separated_by_another_label() {
        // One row of 5 patches: A B A A A. s_max = 4.
        let l = [0, 1, 0, 0, 0];
        let m = path_tested(&l, (1, 5), PathRounding::Eager);
        let at = |i: usize, j: usize| m[i * 5 + j];
        assert_eq!(at(0, 0), 1.0);
        assert_eq!(at(0, 1), 0.0);
        // 0 → 2 (s = 2): points 0, 0.5→0, 1 → patch 1 has label B: decayed by exp(-2/4).
        assert!((at(0, 2) - (-0.5f32).exp()).abs() < 1e-7);
        // 2 → 4 is clean; 4 → 0 (s = 4) passes through patch 1.
        assert_eq!(at(2, 4), 1.0);
        assert!((at(4, 0) - (-1.0f32).exp()).abs() < 1e-7);
        // The quirk: 4 → 2 (s = 2) checks only t = 0, 1/4, 2/4 of the way: 4, 3.5→4, 3.
        assert_eq!(at(4, 2), 1.0);
    }

    #[test]
    fn kernel_is_odd_normalised_and_capped_by_n() {
        assert_eq!(smoothing_kernel(196, 5.0).len(), 31);
        assert_eq!(smoothing_kernel(10, 5.0).len(), 11);
        let s: f32 = smoothing_kernel(196, 5.0).iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rows_are_normalised_and_cls_is_zero() {
        let m = vec![1.0f32; 9];
        let a = normalise_with_cls(&smooth_rows(&m, 3, 5.0), 3);
        assert!(a[..4].iter().all(|&v| v == 0.0));
        for r in 1..4 {
            assert_eq!(a[r * 4], 0.0);
            let s: f32 = a[r * 4 + 1..r * 4 + 4].iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn injected_term_is_scaled_to_max_one_and_f16_rounded() {
        let t = injected_term(&[0.0, 0.1, 0.2, 0.3], 0.7);
        assert_eq!(t[3], f16::from_f32(0.7).to_f32());
        assert_eq!(t[0], 0.0);
        let a1 = f16::from_f32(0.1 / 0.3).to_f32();
        assert_eq!(t[1], f16::from_f32(0.7 * a1).to_f32());
    }
}
