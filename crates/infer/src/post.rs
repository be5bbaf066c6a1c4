//! From dense logits to class probabilities and labels (SCLIP `postprocess_result`).

use rayon::prelude::*;

use crate::error::{InferError, Result};

/// Pixels per parallel block of the softmax.
const BLOCK: usize = 4096;

/// SCLIP's synonym merge on plain planes: `softmax(scale · logits)` over the `Q` queries, then
/// for each class the max over its queries. `(Q, N) → (C, N)` with `N = h·w`.
///
/// Same function as [`segsweep_core::tensor::class_probs`]; this one streams over blocks of
/// pixels so that a 2048×1024 image needs no `(Q, H, W)` temporaries.
pub fn class_probs(
    logits: &[f32],
    scale: f32,
    query_class: &[usize],
    n_classes: usize,
) -> Result<Vec<f32>> {
    let q = query_class.len();
    if q == 0 || !logits.len().is_multiple_of(q) {
        return Err(InferError::Shape {
            what: "dense logits",
            expected: format!("({q}, H, W) (one plane per query)"),
            got: vec![logits.len()],
        });
    }
    if let Some(c) = (0..n_classes).find(|c| !query_class.contains(c)) {
        return Err(InferError::Pipeline(format!("class {c} has no query")));
    }
    if let Some(&k) = query_class.iter().find(|&&k| k >= n_classes) {
        return Err(InferError::Pipeline(format!(
            "query class {k} ≥ number of classes {n_classes}"
        )));
    }
    let n = logits.len() / q;
    let mut out = vec![0f32; n_classes * n];
    // Blocks of pixels in parallel; each block writes a (C, len) tile, scattered afterwards.
    let tiles: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let (p0, p1) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
            let len = p1 - p0;
            let mut max = vec![f32::NEG_INFINITY; len];
            for qi in 0..q {
                let row = &logits[qi * n + p0..qi * n + p1];
                for (m, &v) in max.iter_mut().zip(row) {
                    *m = m.max(v * scale);
                }
            }
            let mut sum = vec![0f32; len];
            let mut best = vec![0f32; n_classes * len];
            for (qi, &c) in query_class.iter().enumerate() {
                let row = &logits[qi * n + p0..qi * n + p1];
                let tile = &mut best[c * len..(c + 1) * len];
                for i in 0..len {
                    let e = (row[i] * scale - max[i]).exp();
                    sum[i] += e;
                    tile[i] = tile[i].max(e);
                }
            }
            // max_i(e_i / s) == max_i(e_i) / s exactly: division by s > 0 is monotonic.
            for c in 0..n_classes {
                for (v, &s) in best[c * len..(c + 1) * len].iter_mut().zip(&sum) {
                    *v /= s;
                }
            }
            (p0, best)
        })
        .collect();
    for (p0, tile) in tiles {
        let len = tile.len() / n_classes;
        for c in 0..n_classes {
            out[c * n + p0..c * n + p0 + len].copy_from_slice(&tile[c * len..(c + 1) * len]);
        }
    }
    Ok(out)
}

/// SCLIP's thresholds and argmax on `(C, N)` probabilities → `N` labels.
///
/// 1. `area_thd`: on the argmax map, count each foreground class's pixels (the background class,
///    where there is one, is not foreground); a class with `count ≤ area_thd · total` has its
///    probability plane treated as zero.
/// 2. Argmax over classes (ties to the lowest index, as torch).
/// 3. `prob_thd`: a pixel whose max probability is below it becomes the background class
///    (class 0 without a background class, as SCLIP writes 0).
///
/// The input probabilities are not modified.
pub fn threshold_labels(
    probs: &[f32],
    n_classes: usize,
    area_thd: Option<f32>,
    prob_thd: f32,
    background: Option<usize>,
) -> Vec<u32> {
    let n = probs.len() / n_classes.max(1);
    let mut zeroed = vec![false; n_classes];
    if let Some(thd) = area_thd {
        let (labels, _) = argmax(probs, n_classes, n, &zeroed);
        let mut count = vec![0u64; n_classes];
        for &l in &labels {
            count[l as usize] += 1;
        }
        zeroed = area_zeroed(&count, thd, background);
    }
    let (mut labels, max) = argmax(probs, n_classes, n, &zeroed);
    let bg = background.unwrap_or(0) as u32;
    for (l, &m) in labels.iter_mut().zip(&max) {
        if m < prob_thd {
            *l = bg;
        }
    }
    labels
}

/// SCLIP's `area_thd` on the per-class pixel counts of the argmax map: which classes' planes
/// are treated as zero.
pub(crate) fn area_zeroed(count: &[u64], thd: f32, background: Option<usize>) -> Vec<bool> {
    // Deviation: SCLIP always treats class 0 as background here; without a background class
    // we count every class (identical for every SCLIP configuration that sets area_thd, all of
    // which have background 0).
    let fg = |c: usize| Some(c) != background;
    let total: u64 = (0..count.len()).filter(|&c| fg(c)).map(|c| count[c]).sum();
    let limit = thd * total as f32;
    (0..count.len())
        .map(|c| fg(c) && count[c] as f32 <= limit)
        .collect()
}

/// Argmax and max over classes of `(C, N)`, with `zeroed` planes read as 0. Blocks of pixels
/// in parallel; each pixel's classes in order, so ties go to the lowest index.
fn argmax(probs: &[f32], n_classes: usize, n: usize, zeroed: &[bool]) -> (Vec<u32>, Vec<f32>) {
    let mut labels = vec![0u32; n];
    let mut max = vec![f32::NEG_INFINITY; n];
    labels
        .par_chunks_mut(BLOCK)
        .zip(max.par_chunks_mut(BLOCK))
        .enumerate()
        .for_each(|(b, (labels, max))| {
            let p0 = b * BLOCK;
            for c in 0..n_classes {
                let plane = &probs[c * n + p0..c * n + p0 + labels.len()];
                for ((l, m), &p) in labels.iter_mut().zip(max.iter_mut()).zip(plane) {
                    let v = if zeroed[c] { 0.0 } else { p };
                    if v > *m {
                        *m = v;
                        *l = c as u32;
                    }
                }
            }
        });
    (labels, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_probs_agrees_with_core() {
        use candle_core::{Device, Tensor};
        let (q, h, w) = (5, 3, 7);
        let logits: Vec<f32> = (0..q * h * w)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.031)
            .collect();
        let qc = [0, 1, 1, 2, 1];
        let ours = class_probs(&logits, 40.0, &qc, 3).unwrap();
        let t = Tensor::from_vec(logits, (q, h, w), &Device::Cpu).unwrap();
        let core = segsweep_core::tensor::class_probs(&t, 40.0, &qc, 3).unwrap();
        let core: Vec<f32> = core.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in ours.iter().zip(&core) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-6), "{a} vs {b}");
        }
    }

    #[test]
    fn prob_thd_sends_uncertain_pixels_to_background() {
        // 3 classes, 2 pixels: pixel 0 confident class 2, pixel 1 max 0.4 (class 1).
        let probs = [0.05, 0.3, /* c1 */ 0.05, 0.4, /* c2 */ 0.9, 0.3];
        assert_eq!(threshold_labels(&probs, 3, None, 0.0, Some(0)), vec![2, 1]);
        assert_eq!(threshold_labels(&probs, 3, None, 0.5, Some(0)), vec![2, 0]);
    }

    #[test]
    fn area_thd_drops_small_foreground_classes_but_returns_to_the_runner_up() {
        // 4 pixels: class 1 wins 3, class 2 wins 1 → class 2 covers 1/4 of the foreground.
        // bg(0):     .1  .1  .1  .3
        // c1:        .6  .6  .5  .2
        // c2:        .3  .3  .4  .5
        let probs = [0.1, 0.1, 0.1, 0.3, 0.6, 0.6, 0.5, 0.2, 0.3, 0.3, 0.4, 0.5];
        // 0.2 · 4 = 0.8 < 1: class 2 survives.
        assert_eq!(
            threshold_labels(&probs, 3, Some(0.2), 0.0, Some(0)),
            vec![1, 1, 1, 2]
        );
        // 0.25 · 4 = 1 ≥ 1: class 2 is zeroed and pixel 3 falls back to the background (0.3).
        assert_eq!(
            threshold_labels(&probs, 3, Some(0.25), 0.0, Some(0)),
            vec![1, 1, 1, 0]
        );
    }
}
