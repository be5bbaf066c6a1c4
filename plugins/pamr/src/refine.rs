//! PAMR's pure functions: pixel affinities from an image, then propagation of a mask.
//!
//! The work runs on the host over plain `f32` slices, in two layouts chosen for the inner loop:
//! affinities are stored `(H, P, W)` and the mask `(H, K, W)` while it propagates, so that one
//! output row of every plane is a contiguous chunk (parallel over rows with rayon) and the row of
//! affinities for one neighbour is reused for all K planes while it is hot in cache.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use segsweep_core::{CoreError, Result};

/// The 8 neighbours of a 3×3 window as unit offsets `(dy, dx)`, row-major, centre excluded.
const NEIGHBOURS: [(isize, isize); 8] = [
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
];

/// Refine `mask` by pixel-adaptive propagation guided by `image` (PAMR, Araslanov & Roth 2020).
///
/// - `image`: `(C, H, W)` or `(B, C, H, W)`, any per-channel affine scale (0..=255 RGB or the
///   CLIP-normalised crop give the same result up to the 1e-8 in the denominator). A 3-D image
///   with a 4-D mask is shared by every batch item.
/// - `mask`: `(K, H, W)` or `(B, K, H, W)` logits or probabilities at the image's `(H, W)`.
/// - `steps`: propagation steps (0 returns the mask unchanged).
/// - `dilations`: neighbour offsets in pixels; each contributes 8 neighbours.
///
/// Returns a tensor of the mask's shape, dtype and device. Each step replaces every value by a
/// convex combination of its P = 8·|dilations| neighbours (replicate padding at the borders), so
/// probabilities stay probabilities.
pub fn pamr(image: &Tensor, mask: &Tensor, steps: usize, dilations: &[usize]) -> Result<Tensor> {
    if dilations.is_empty() || dilations.contains(&0) {
        return Err(CoreError::plugin(
            "pamr",
            format!(
                "dilations must be a non-empty list of positive pixel offsets, got {dilations:?}"
            ),
        ));
    }
    let (b, k, h, w, batched) = match *mask.dims() {
        [k, h, w] => (1, k, h, w, false),
        [b, k, h, w] => (b, k, h, w, true),
        _ => {
            return Err(CoreError::shape(
                "pamr mask",
                "(K, H, W) or (B, K, H, W)",
                mask.dims(),
            ))
        }
    };
    let (ib, c) = match *image.dims() {
        [c, ih, iw] if (ih, iw) == (h, w) => (1, c),
        [ib, c, ih, iw] if (ih, iw) == (h, w) && batched && ib == b => (ib, c),
        _ => {
            return Err(CoreError::shape(
                "pamr image",
                format!("(C, {h}, {w}) or (B={b}, C, {h}, {w}) (the mask's size)"),
                image.dims(),
            ))
        }
    };
    if c == 0 {
        return Err(CoreError::shape(
            "pamr image",
            "at least one channel",
            image.dims(),
        ));
    }
    if steps == 0 || k == 0 || h == 0 || w == 0 {
        return Ok(mask.clone());
    }
    let img = host_f32(image)?;
    let mut planes = host_f32(mask)?;
    let offsets = offsets(dilations);
    let mut aff = None;
    for (bi, chunk) in planes.chunks_mut(k * h * w).enumerate() {
        // One image for the whole batch needs its affinities only once.
        if ib > 1 || aff.is_none() {
            let ii = if ib > 1 { bi } else { 0 };
            aff = Some(affinity(
                &img[ii * c * h * w..][..c * h * w],
                c,
                h,
                w,
                dilations,
                &offsets,
            ));
        }
        if let Some(a) = &aff {
            propagate(a, chunk, k, h, w, steps, &offsets);
        }
    }
    let out = Tensor::from_vec(planes, mask.dims(), &Device::Cpu)?;
    Ok(out.to_device(mask.device())?.to_dtype(mask.dtype())?)
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Pixel offsets `(dy, dx)` of all P neighbours, dilation-major.
fn offsets(dilations: &[usize]) -> Vec<(isize, isize)> {
    dilations
        .iter()
        .flat_map(|&d| {
            NEIGHBOURS
                .iter()
                .map(move |&(oy, ox)| (oy * d as isize, ox * d as isize))
        })
        .collect()
}

fn clamp(i: isize, n: usize) -> usize {
    i.clamp(0, n as isize - 1) as usize
}

/// Softmax-normalised affinities `(H, P, W)` of an image `(C, H, W)`:
/// a_ij = softmax_j( mean_c −|I_c(i) − I_c(j)| / (1e-8 + 0.1·σ_c(i)) ), where σ_c(i) is the
/// unbiased std of the 9·|dilations| values of the dilated 3×3 windows around i (centre counted
/// once per dilation, as the reference's conv kernels do).
fn affinity(
    img: &[f32],
    c: usize,
    h: usize,
    w: usize,
    dilations: &[usize],
    offsets: &[(isize, isize)],
) -> Vec<f32> {
    let p = offsets.len();
    let mut aff = vec![0f32; h * p * w];
    aff.par_chunks_mut(p * w).enumerate().for_each(|(y, row)| {
        let mut logits = vec![0f32; p];
        for x in 0..w {
            logits.fill(0.0);
            for ch in 0..c {
                let plane = &img[ch * h * w..][..h * w];
                let at = |dy: isize, dx: isize| {
                    plane[clamp(y as isize + dy, h) * w + clamp(x as isize + dx, w)]
                };
                let std = window_std(dilations, &at);
                let centre = plane[y * w + x];
                let denom = 1e-8f32 + 0.1 * std;
                for (l, &(dy, dx)) in logits.iter_mut().zip(offsets) {
                    *l += -(centre - at(dy, dx)).abs() / denom;
                }
            }
            let inv_c = 1.0 / c as f32;
            let max = logits
                .iter()
                .map(|l| l * inv_c)
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for l in logits.iter_mut() {
                *l = (*l * inv_c - max).exp();
                sum += *l;
            }
            for (j, l) in logits.iter().enumerate() {
                row[j * w + x] = l / sum;
            }
        }
    });
    aff
}

/// Unbiased std over the dilated 3×3 windows (9 values per dilation, centre included each time).
fn window_std(dilations: &[usize], at: &dyn Fn(isize, isize) -> f32) -> f32 {
    let n = 9 * dilations.len();
    let mut vals = Vec::with_capacity(n);
    for &d in dilations {
        let d = d as isize;
        for oy in -1..=1 {
            for ox in -1..=1 {
                vals.push(at(oy * d, ox * d) as f64);
            }
        }
    }
    let mean = vals.iter().sum::<f64>() / n as f64;
    let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n as f64 - 1.0);
    var.sqrt() as f32
}

/// Run `steps` propagation steps on `planes` `(K, H, W)` in place.
fn propagate(
    aff: &[f32],
    planes: &mut [f32],
    k: usize,
    h: usize,
    w: usize,
    steps: usize,
    offsets: &[(isize, isize)],
) {
    // (K, H, W) → (H, K, W) so that one output row of all planes is one contiguous chunk.
    let mut src = vec![0f32; k * h * w];
    for c in 0..k {
        for y in 0..h {
            src[(y * k + c) * w..][..w].copy_from_slice(&planes[(c * h + y) * w..][..w]);
        }
    }
    let mut dst = vec![0f32; k * h * w];
    let p = offsets.len();
    for _ in 0..steps {
        dst.par_chunks_mut(k * w).enumerate().for_each(|(y, out)| {
            out.fill(0.0);
            for (j, &(dy, dx)) in offsets.iter().enumerate() {
                let ny = clamp(y as isize + dy, h);
                let a = &aff[(y * p + j) * w..][..w];
                for c in 0..k {
                    let s = &src[(ny * k + c) * w..][..w];
                    accumulate_shifted(&mut out[c * w..][..w], a, s, dx);
                }
            }
        });
        std::mem::swap(&mut src, &mut dst);
    }
    for c in 0..k {
        for y in 0..h {
            planes[(c * h + y) * w..][..w].copy_from_slice(&src[(y * k + c) * w..][..w]);
        }
    }
}

/// `out[x] += a[x] · src[clamp(x + dx)]`, split so that the interior is a plain shifted
/// multiply-add the compiler vectorises.
fn accumulate_shifted(out: &mut [f32], a: &[f32], src: &[f32], dx: isize) {
    let w = out.len();
    let wi = w as isize;
    let lo = (-dx).clamp(0, wi) as usize;
    let hi = (wi - dx).clamp(lo as isize, wi) as usize;
    for x in 0..lo {
        out[x] += a[x] * src[0];
    }
    if hi > lo {
        let s = &src[(lo as isize + dx) as usize..][..hi - lo];
        for ((o, &ai), &si) in out[lo..hi].iter_mut().zip(&a[lo..hi]).zip(s) {
            *o += ai * si;
        }
    }
    for x in hi..w {
        out[x] += a[x] * src[w - 1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_accumulate_clamps_like_replicate_padding() {
        let src = [1f32, 2., 3., 4., 5.];
        let a = [1f32; 5];
        for dx in -7isize..=7 {
            let mut out = [0f32; 5];
            accumulate_shifted(&mut out, &a, &src, dx);
            for x in 0..5 {
                assert_eq!(out[x], src[clamp(x as isize + dx, 5)], "dx {dx} x {x}");
            }
        }
    }

    #[test]
    fn one_step_on_a_flat_image_is_the_mean_of_the_eight_neighbours() {
        // A flat image gives all-zero affinity logits, hence uniform weights 1/8.
        let img = Tensor::zeros((3, 3, 4), DType::F32, &Device::Cpu).unwrap();
        let m: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mask = Tensor::from_vec(m.clone(), (1, 3, 4), &Device::Cpu).unwrap();
        let out = pamr(&img, &mask, 1, &[1]).unwrap();
        let out: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        for y in 0..3isize {
            for x in 0..4isize {
                let mut want = 0.0;
                for (dy, dx) in NEIGHBOURS {
                    want += m[clamp(y + dy, 3) * 4 + clamp(x + dx, 4)] / 8.0;
                }
                let got = out[(y * 4 + x) as usize];
                assert!((got - want).abs() < 1e-5, "({y},{x}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn zero_steps_and_bad_inputs() {
        let img = Tensor::zeros((3, 5, 6), DType::F32, &Device::Cpu).unwrap();
        let mask = Tensor::ones((2, 5, 6), DType::F32, &Device::Cpu).unwrap();
        let same = pamr(&img, &mask, 0, &[1]).unwrap();
        assert_eq!(
            same.to_vec3::<f32>().unwrap(),
            mask.to_vec3::<f32>().unwrap()
        );
        assert!(pamr(&img, &mask, 1, &[]).is_err());
        assert!(pamr(&img, &mask, 1, &[0]).is_err());
        let wrong = Tensor::ones((2, 6, 5), DType::F32, &Device::Cpu).unwrap();
        let e = pamr(&img, &wrong, 1, &[1]).unwrap_err().to_string();
        assert!(e.contains("pamr image"), "{e}");
    }
}
