//! Mean-field inference of the fully connected CRF, as pydensecrf's `DenseCRF::inference`
//! computes it (`densecrf.cpp`, `pairwise.cpp`, `labelcompatibility.cpp`), in f32.
//!
//! Public inputs and outputs are planar `(C, H, W)`; inside, every map is pixel-major `(N, C)`
//! (N = H·W), the layout of the reference's column-major `(C, N)` Eigen matrices, so each
//! pixel's label vector is contiguous for the lattice and the softmax.

use rayon::prelude::*;
use segsweep_core::RgbImage;

use crate::error::{CrfError, Result};
use crate::lattice::{lanes, lanes_mut, multiversion, padded, Lattice, LANES, PIXEL_BLOCK};
use crate::params::CrfParams;

/// Lower clip of the probabilities before the log (pydensecrf `unary_from_softmax(clip=1e-5)`).
pub const PROB_CLIP: f32 = 1e-5;

/// Refine class probabilities with the fully connected CRF.
///
/// - `image`: the original RGB image, `(h, w, 3)` u8.
/// - `probs`: class probabilities `(c, h, w)` row-major f32 (need not sum to one; values are
///   clipped to `[1e-5, 1]` before the log, as `unary_from_softmax` does).
/// - returns Q `(c, h, w)`: the approximate marginals after `params.iterations` mean-field
///   steps, each pixel summing to one.
///
/// The unary is U = −log(clip(P, 1e-5, 1)); the result equals pydensecrf's
/// `DenseCRF2D(w, h, c)` + `setUnaryEnergy(unary_from_softmax(P))` + `addPairwiseGaussian` +
/// `addPairwiseBilateral` + `inference(n)` to ~1e-6 (see the parity test).
pub fn refine_probs(
    image: &RgbImage,
    probs: &[f32],
    c: usize,
    h: usize,
    w: usize,
    params: &CrfParams,
) -> Result<Vec<f32>> {
    check_shapes(image, probs.len(), c, h, w, "probabilities")?;
    // −U = −(−log p) = log p exactly, so store the log directly.
    let neg_u = pixel_major(probs, c, h * w, |k, i, p| {
        if !(p.is_finite() && p >= 0.0) {
            return Err(CrfError::BadProbability {
                value: p,
                c: k,
                y: i / w,
                x: i % w,
            });
        }
        Ok(p.clamp(PROB_CLIP, 1.0).ln())
    })?;
    let q = mean_field(image, &neg_u, c, params)?;
    Ok(to_planar(&q, c, h * w))
}

/// `(c, n)` planes → `−U` stored pixel-major with rows padded to [`padded`]`(c)`, each value
/// mapped by `f(class, pixel, value)`.
fn pixel_major(
    planes: &[f32],
    c: usize,
    n: usize,
    mut f: impl FnMut(usize, usize, f32) -> Result<f32>,
) -> Result<Vec<f32>> {
    let cp = padded(c);
    let mut out = vec![0f32; n * cp];
    for (k, plane) in planes.chunks_exact(n).enumerate() {
        for (i, &v) in plane.iter().enumerate() {
            out[i * cp + k] = f(k, i, v)?;
        }
    }
    Ok(out)
}

/// Mean-field inference from a unary energy you computed yourself.
///
/// - `unary`: U `(c, h, w)` row-major f32 (an energy: lower is more likely).
/// - returns Q `(c, h, w)`.
pub fn refine_unary(
    image: &RgbImage,
    unary: &[f32],
    c: usize,
    h: usize,
    w: usize,
    params: &CrfParams,
) -> Result<Vec<f32>> {
    check_shapes(image, unary.len(), c, h, w, "unary")?;
    let neg_u = pixel_major(unary, c, h * w, |_, _, u| Ok(-u))?;
    let q = mean_field(image, &neg_u, c, params)?;
    Ok(to_planar(&q, c, h * w))
}

fn check_shapes(
    image: &RgbImage,
    len: usize,
    c: usize,
    h: usize,
    w: usize,
    what: &str,
) -> Result<()> {
    if image.h != h || image.w != w || image.data.len() != h * w * 3 {
        return Err(CrfError::Shape {
            what: "image".into(),
            expected: format!("(h, w, 3) = ({h}, {w}, 3) to match the {what}"),
            got: format!(
                "({}, {}, 3) with {} bytes",
                image.h,
                image.w,
                image.data.len()
            ),
        });
    }
    if c == 0 || h == 0 || w == 0 || len != c * h * w {
        return Err(CrfError::Shape {
            what: what.into(),
            expected: format!("(c, h, w) = ({c}, {h}, {w}) with c, h, w ≥ 1"),
            got: format!("{len} values"),
        });
    }
    Ok(())
}

/// `(n, padded(c))` pixel-major → `(c, n)` planar.
fn to_planar(q: &[f32], c: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * n];
    for (i, row) in q.chunks_exact(padded(c)).enumerate() {
        for (k, &v) in row[..c].iter().enumerate() {
            out[k * n + i] = v;
        }
    }
    out
}

/// One pairwise term: a lattice over its features, the symmetric normalisation D^-½ and the
/// Potts weight.
struct Kernel {
    lattice: Lattice,
    /// `(n)`: 1 / sqrt(K·1 + 1e-20), the reference's `NORMALIZE_SYMMETRIC`.
    norm: Vec<f32>,
    compat: f32,
}

impl Kernel {
    fn new(features: &[f32], d: usize, compat: f32) -> Kernel {
        let lattice = Lattice::new(features, d);
        let n = lattice.n();
        // K·1 through the one-value (`seqCompute`) path; only lane 0 carries the ones.
        let mut ones = vec![0f32; n * LANES];
        ones.iter_mut().step_by(LANES).for_each(|v| *v = 1.0);
        let mut values = vec![0f32; lattice.values_len(LANES)];
        let mut scratch = values.clone();
        lattice.splat(LANES, &ones, &vec![1.0; n], &mut values, &mut scratch);
        let blurred = lattice.blur(LANES, &mut values, &mut scratch);
        let mut norm = vec![0f32; n];
        norm.par_chunks_mut(PIXEL_BLOCK)
            .enumerate()
            .for_each(|(blk, out)| {
                for (r, o) in out.iter_mut().enumerate() {
                    let mut s = [0f32; LANES];
                    lattice.slice(blk * PIXEL_BLOCK + r, LANES, true, blurred, &mut s);
                    // Computed in double in the reference (`1.0 / sqrt(norm + 1e-20)`).
                    *o = (1.0 / (s[0] as f64 + 1e-20).sqrt()) as f32;
                }
            });
        Kernel {
            lattice,
            norm,
            compat,
        }
    }

    /// Splat D^-½ Q onto the lattice and blur it; returns the blurred values (the start of
    /// one of the two buffers) for [`Kernel::slice_into`].
    ///
    /// `q` is `(n, cp)` with `cp = padded(c)`.
    fn splat_blur<'a>(
        &self,
        q: &[f32],
        cp: usize,
        values: &'a mut [f32],
        scratch: &'a mut [f32],
    ) -> &'a [f32] {
        let len = self.lattice.values_len(cp);
        let (values, scratch) = (&mut values[..len], &mut scratch[..len]);
        self.lattice.splat(cp, q, &self.norm, values, scratch);
        self.lattice.blur(cp, values, scratch)
    }

    /// t ← base − (−compat · D^-½ K D^-½ Q), the reference's `PairwisePotential::apply`
    /// followed by `tmp1 -= tmp2`, with K Q sliced from `blurred`; then `out` ← t, or
    /// `out` ← softmax(t) with `softmax` (the last kernel of an iteration, which saves a pass
    /// over memory). `base` is `out` itself when `None`.
    ///
    /// `base` and `out` are `(n, cp)` with `cp = padded(c)`.
    fn slice_into(
        &self,
        blurred: &[f32],
        c: usize,
        base: Option<&[f32]>,
        out: &mut [f32],
        softmax: bool,
    ) {
        let block = PIXEL_BLOCK * padded(c);
        out.par_chunks_mut(block)
            .enumerate()
            .for_each(|(blk, rows)| {
                let base = base.map(|b| &b[blk * block..blk * block + rows.len()]);
                slice_rows(self, blk * PIXEL_BLOCK, c, blurred, base, rows, softmax)
            });
    }
}

multiversion! {
    fn slice_rows(
        k: &Kernel,
        first: usize,
        c: usize,
        blurred: &[f32],
        base: Option<&[f32]>,
        rows: &mut [f32],
        softmax: bool,
    ) {
        // Up to 32 labels, keep each pixel's values in registers.
        match padded(c) / LANES {
            1 => return slice_rows_fixed::<1>(k, first, c, blurred, base, rows, softmax),
            2 => return slice_rows_fixed::<2>(k, first, c, blurred, base, rows, softmax),
            3 => return slice_rows_fixed::<3>(k, first, c, blurred, base, rows, softmax),
            4 => return slice_rows_fixed::<4>(k, first, c, blurred, base, rows, softmax),
            _ => {}
        }
        let cp = padded(c);
        let neg_w = -k.compat;
        if let Some(b) = base {
            rows.copy_from_slice(b);
        }
        let mut acc = vec![0f32; cp];
        let mut t = vec![0f32; cp];
        for (r, row) in rows.chunks_exact_mut(cp).enumerate() {
            let i = first + r;
            k.lattice.slice(i, cp, c <= 2, blurred, &mut acc);
            let ni = k.norm[i];
            for (tk, &a) in row.iter_mut().zip(&acc) {
                *tk -= neg_w * (a * ni);
            }
            if softmax {
                t.copy_from_slice(row);
                softmax_row(c, &t, row);
            }
        }
    }
}

/// [`slice_rows`] for `padded(c) = G·LANES`.
#[inline(always)]
fn slice_rows_fixed<const G: usize>(
    k: &Kernel,
    first: usize,
    c: usize,
    blurred: &[f32],
    base: Option<&[f32]>,
    rows: &mut [f32],
    softmax: bool,
) {
    let (neg_w, cp) = (-k.compat, G * LANES);
    for (r, row) in rows.chunks_exact_mut(cp).enumerate() {
        let i = first + r;
        let mut t = [[0f32; LANES]; G];
        let src = base.map_or(&*row, |b| &b[r * cp..(r + 1) * cp]);
        for (tg, s) in t.iter_mut().zip(lanes(src)) {
            *tg = *s;
        }
        let acc = k.lattice.slice_lanes::<G>(i, c <= 2, blurred);
        let ni = k.norm[i];
        for (tg, a) in t.iter_mut().zip(&acc) {
            for l in 0..LANES {
                tg[l] -= neg_w * (a[l] * ni);
            }
        }
        if softmax {
            softmax_row(c, t.as_flattened(), row);
        } else {
            row.copy_from_slice(t.as_flattened());
        }
    }
}

/// Pixel features of the Gaussian kernel, `(n, 2)`: (x/sxy, y/sxy).
fn gaussian_features(h: usize, w: usize, sxy: f32) -> Vec<f32> {
    let mut f = Vec::with_capacity(h * w * 2);
    for y in 0..h {
        for x in 0..w {
            f.push(x as f32 / sxy);
            f.push(y as f32 / sxy);
        }
    }
    f
}

/// Pixel features of the bilateral kernel, `(n, 5)`: (x/sxy, y/sxy, r/srgb, g/srgb, b/srgb).
fn bilateral_features(image: &RgbImage, sxy: f32, srgb: f32) -> Vec<f32> {
    let mut f = Vec::with_capacity(image.h * image.w * 5);
    for y in 0..image.h {
        for x in 0..image.w {
            let px = &image.data[(y * image.w + x) * 3..(y * image.w + x) * 3 + 3];
            f.extend_from_slice(&[
                x as f32 / sxy,
                y as f32 / sxy,
                px[0] as f32 / srgb,
                px[1] as f32 / srgb,
                px[2] as f32 / srgb,
            ]);
        }
    }
    f
}

/// The mean-field loop on −U `(n, padded(c))` pixel-major (zero padding); returns Q, same layout.
fn mean_field(image: &RgbImage, neg_u: &[f32], c: usize, params: &CrfParams) -> Result<Vec<f32>> {
    params.validate()?;
    let (h, w) = (image.h, image.w);
    let mut kernels = Vec::with_capacity(2);
    if params.iterations > 0 && params.gauss_compat != 0.0 {
        let f = gaussian_features(h, w, params.gauss_sxy);
        kernels.push(Kernel::new(&f, 2, params.gauss_compat));
    }
    if params.iterations > 0 && params.bilateral_compat != 0.0 {
        let f = bilateral_features(image, params.bilateral_sxy, params.bilateral_srgb);
        kernels.push(Kernel::new(&f, 5, params.bilateral_compat));
    }

    let mut q = vec![0f32; neg_u.len()];
    exp_normalize(neg_u, &mut q, c);
    if kernels.is_empty() {
        return Ok(q);
    }
    let len = kernels
        .iter()
        .map(|k| k.lattice.values_len(padded(c)))
        .max()
        .unwrap_or(0);
    let mut values = vec![0f32; len];
    let mut scratch = vec![0f32; len];
    let mut tmp = vec![0f32; neg_u.len()];
    let (cp, last) = (padded(c), kernels.len() - 1);
    for _ in 0..params.iterations {
        // tmp ← −U − Σ pairwise, kernel by kernel; the first kernel reads −U directly and the
        // last one writes softmax(tmp) straight into Q (its splat has read Q already).
        for (j, k) in kernels.iter().enumerate() {
            let blurred = k.splat_blur(&q, cp, &mut values, &mut scratch);
            let base = (j == 0).then_some(neg_u);
            if j == last {
                k.slice_into(blurred, c, base.or(Some(&tmp)), &mut q, true);
            } else {
                k.slice_into(blurred, c, base, &mut tmp, false);
            }
        }
    }
    Ok(q)
}

/// Per-pixel softmax of the first `c` values of each `(n, padded(c))` row of `input` into
/// `out`, as the reference's `expAndNormalize`: subtract the max, exponentiate, divide by the sum.
fn exp_normalize(input: &[f32], out: &mut [f32], c: usize) {
    let cp = padded(c);
    out.par_chunks_mut(PIXEL_BLOCK * cp)
        .zip(input.par_chunks(PIXEL_BLOCK * cp))
        .for_each(|(o, x)| softmax_rows(c, x, o));
}

multiversion! {
    fn softmax_rows(c: usize, x: &[f32], o: &mut [f32]) {
        let cp = padded(c);
        for (ob, xb) in o.chunks_exact_mut(cp).zip(x.chunks_exact(cp)) {
            softmax_row(c, xb, ob);
        }
    }
}

/// Softmax of the first `c` values of a padded row, mirroring Eigen 3.3's SSE evaluation in
/// pydensecrf: the first ⌊c/4⌋·4 values go through the vectorised Cephes `pexp`, the rest
/// through libm `exp`, and the sum is Eigen's packet reduction. Padding lanes are left at 0.
#[inline(always)]
fn softmax_row(c: usize, x: &[f32], out: &mut [f32]) {
    // The max is order-independent, so take it lane-wise (vectorised) and then reduce.
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    for v in lanes(&x[..c / LANES * LANES]) {
        for l in 0..LANES {
            lane_max[l] = if v[l] > lane_max[l] {
                v[l]
            } else {
                lane_max[l]
            };
        }
    }
    let max = x[c / LANES * LANES..c]
        .iter()
        .chain(&lane_max)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    // Whole lanes at once (lanes are independent, so this changes no value), then fix up the
    // tail that Eigen evaluates with scalar `exp` and the padding.
    for (o, v) in lanes_mut(out).zip(lanes(x)) {
        for l in 0..LANES {
            o[l] = cephes_exp(v[l] - max);
        }
    }
    for k in c / 4 * 4..c {
        out[k] = (x[k] - max).exp();
    }
    out[c..].fill(0.0);
    let s = eigen_sum(&out[..c]);
    // Whole lanes again: the padding stays 0 / s = 0.
    for o in lanes_mut(out) {
        for v in o {
            *v /= s;
        }
    }
}

/// Sum in the order of Eigen 3.3's `redux` with 4-float packets on an aligned vector: two packet
/// accumulators over 8-float strides, one optional extra packet, a (0+2)+(1+3) horizontal add,
/// then the scalar tail.
#[inline(always)]
fn eigen_sum(b: &[f32]) -> f32 {
    let n = b.len();
    let size = n / 4 * 4;
    if size == 0 {
        return b.iter().skip(1).fold(b[0], |a, &v| a + v);
    }
    let size2 = n / 8 * 8;
    let mut p0 = [b[0], b[1], b[2], b[3]];
    if size > 4 {
        let mut p1 = [b[4], b[5], b[6], b[7]];
        let mut i = 8;
        while i < size2 {
            for l in 0..4 {
                p0[l] += b[i + l];
                p1[l] += b[i + 4 + l];
            }
            i += 8;
        }
        for l in 0..4 {
            p0[l] += p1[l];
        }
        if size > size2 {
            for l in 0..4 {
                p0[l] += b[size2 + l];
            }
        }
    }
    let mut res = (p0[0] + p0[2]) + (p0[1] + p0[3]);
    for &v in &b[size..] {
        res += v;
    }
    res
}

/// exp(x) by the Cephes single-precision method that Eigen's SSE `pexp<Packet4f>` uses
/// (range reduction by n·ln 2 split in two constants, degree-5 polynomial, 2ⁿ built in the
/// exponent bits), with the same operation order and no fused multiply-add.
#[inline(always)]
#[allow(clippy::excessive_precision)]
fn cephes_exp(x0: f32) -> f32 {
    // Cephes `expf` constants, spelled as in Eigen so that they can be compared.
    const HI: f32 = 88.3762626647950;
    const LO: f32 = -88.3762626647949;
    const LOG2EF: f32 = std::f32::consts::LOG2_E; // Cephes: 1.44269504088896341
    const C1: f32 = 0.693359375;
    const C2: f32 = -2.12194440e-4;
    const P: [f32; 6] = [
        1.9875691500e-4,
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    ];
    // Not `clamp`: min/max map NaN into the range, which the unchecked truncation needs.
    #[allow(clippy::manual_clamp)]
    let x = x0.min(HI).max(LO);
    let fx = x * LOG2EF + 0.5;
    // |fx| ≤ 128 after the clamp (Rust's min/max also map NaN into the range), so the plain
    // truncation of `t_int` is in range; unlike `as`, it lets the loop vectorise.
    let t = t_int(fx) as f32;
    let fx = if t > fx { t - 1.0 } else { t };
    let x = x - fx * C1;
    let x = x - fx * C2;
    let z = x * x;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y * x + p;
    }
    let y = y * z + x + 1.0;
    let pow2n = f32::from_bits(((t_int(fx) + 127) as u32) << 23);
    (y * pow2n).max(x0)
}

/// `fx` (a float in [-128, 129]) truncated to i32, as SSE's `cvttps_epi32`.
#[inline(always)]
fn t_int(fx: f32) -> i32 {
    // SAFETY: callers pass finite values far inside i32's range (see `cephes_exp`).
    unsafe { fx.to_int_unchecked::<i32>() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cephes_exp_is_close_to_libm() {
        for i in -2000..=100 {
            let x = i as f32 * 0.037;
            let (a, b) = (cephes_exp(x), x.exp());
            assert!(((a - b) / b).abs() < 3e-7, "exp({x}): {a} vs {b}");
        }
        assert_eq!(cephes_exp(-200.0), 0.0);
    }

    #[test]
    fn eigen_sum_matches_plain_sum_up_to_rounding() {
        for n in 1..40 {
            let b: Vec<f32> = (0..n).map(|i| 1.0 / (i as f32 + 1.0)).collect();
            let plain: f64 = b.iter().map(|&v| v as f64).sum();
            assert!((eigen_sum(&b) as f64 - plain).abs() < 1e-5, "n = {n}");
        }
        // (0+2)+(1+3), then the tail: a hand-checked order on 5 values.
        assert_eq!(eigen_sum(&[1.0, 2.0, 3.0, 4.0, 5.0]), 15.0);
    }

    #[test]
    fn zero_iterations_return_the_renormalised_clipped_input() {
        let (c, h, w) = (3, 2, 5);
        let img = RgbImage::new(h, w, vec![7u8; h * w * 3]).unwrap();
        let mut p = vec![0f32; c * h * w];
        for i in 0..h * w {
            p[i] = 0.5;
            p[h * w + i] = 0.5;
        }
        let params = CrfParams {
            iterations: 0,
            ..CrfParams::default()
        };
        let q = refine_probs(&img, &p, c, h, w, &params).unwrap();
        let z = 1.0 + 1e-5;
        assert!((q[0] - 0.5 / z).abs() < 1e-7);
        assert!((q[2 * h * w] - 1e-5 / z).abs() < 1e-9);
    }

    #[test]
    fn rejects_mismatched_shapes_and_bad_values() {
        let img = RgbImage::new(2, 3, vec![0u8; 18]).unwrap();
        let p = CrfParams::default();
        assert!(matches!(
            refine_probs(&img, &[0.5; 12], 2, 3, 2, &p),
            Err(CrfError::Shape { .. })
        ));
        assert!(matches!(
            refine_probs(&img, &[0.5; 10], 2, 2, 3, &p),
            Err(CrfError::Shape { .. })
        ));
        let mut bad = vec![0.5f32; 12];
        bad[7] = f32::NAN;
        let e = refine_probs(&img, &bad, 2, 2, 3, &p).unwrap_err();
        assert!(
            matches!(
                e,
                CrfError::BadProbability {
                    c: 1,
                    y: 0,
                    x: 1,
                    ..
                }
            ),
            "{e}"
        );
    }
}
