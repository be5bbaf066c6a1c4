//! The dense path on the model's device (a GPU): SCLIP's stitching, the resize to the original
//! size, the synonym softmax and the thresholds as matrix products and tensor ops, so that only
//! per-class pixel counts and the labels travel back to the host.
//!
//! Bilinear resampling with `align_corners=False` is linear in its input, so resampling a plane
//! `X (ih, iw)` to `(oh, ow)` is `Ry · X · Rxᵀ` with interpolation matrices `Ry (oh, ih)` and
//! `Rx (ow, iw)` holding torch's two weights per row (built by the same [`Axis`] as the host
//! path). Stitching a slide's crops is the same with each crop's matrices placed at its window's
//! rows: `canvas = Σᵢ Ayᵢ · Lᵢ · Axᵢᵀ`, computed for all crops of a chunk in two batched products.
//!
//! The host path (`stitch.rs`, `interp.rs`, `post.rs`) stays the reference: this one
//! computes the same function with a different summation order (relative differences ~1e-7 in
//! f32; tests below compare both on non-square planes).

use candle_core::{DType, Device, Tensor};

use crate::error::{InferError, Result};
use crate::interp::Axis;
use crate::windows::Window;

/// Interpolation matrix `(total, input)` whose rows `offset..offset + output` resample an axis
/// of length `input` to `output` (torch bilinear, `align_corners=False`); other rows are zero.
fn interp_rows(input: usize, output: usize, offset: usize, total: usize) -> Vec<f32> {
    let ax = Axis::new(input, output);
    let mut m = vec![0f32; total * input];
    for d in 0..output {
        let (i0, i1, w0, w1) = ax.at(d);
        let row = &mut m[(offset + d) * input..(offset + d + 1) * input];
        row[i0] += w0;
        row[i1] += w1;
    }
    m
}

/// Resample `(P, ih, iw)` planes to `(P, oh, ow)` on their device (bilinear,
/// `align_corners=False`), as two matrix products. f32 in, f32 out.
///
/// With segsweep's CUDA kernels enabled, one pass of `segsweep_kernels::post::resize_bilinear`
/// (equal to the host resize) instead of two dense products with mostly-zero matrices
/// (`2·P·oh·ih·(iw + ow)` flops, ~15 GFLOP for a VOC image's 56 query planes).
pub(crate) fn resize_device(x: &Tensor, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let (p, ih, iw) = x.dims3()?;
    if (ih, iw) == (oh, ow) {
        return Ok(x.clone());
    }
    if segsweep_kernels::enabled(x.device(), p * oh.max(ih) * ow.max(iw)) {
        return Ok(segsweep_kernels::post::resize_bilinear(x, (oh, ow))?);
    }
    let dev = x.device();
    let rx_t = Tensor::from_vec(interp_rows(iw, ow, 0, ow), (ow, iw), dev)?.t()?;
    let ry = Tensor::from_vec(interp_rows(ih, oh, 0, oh), (oh, ih), dev)?;
    // (P·ih, iw) · (iw, ow) → (P, ih, ow); then (oh, ih) · (P, ih, ow) → (P, oh, ow).
    let cols = x
        .reshape((p * ih, iw))?
        .matmul(&rx_t)?
        .reshape((p, ih, ow))?;
    Ok(ry.broadcast_matmul(&cols)?)
}

/// SCLIP's slide canvas on the device: the sum of upsampled crop logits `(Q, H, W)` and the
/// per-pixel window count (kept on the host: it depends only on the windows).
///
/// With segsweep's CUDA kernels enabled the crops' logits are kept as added, and
/// [`DeviceCanvas::average`] stitches them in one pass of
/// `segsweep_kernels::post::stitch_windows` (equal to the host canvas).
pub(crate) struct DeviceCanvas {
    q: usize,
    h: usize,
    w: usize,
    sum: Option<Tensor>,
    count: Vec<f32>,
    /// Kernel path: the chunks of crop logits `(B, Q, gh, gw)` and their windows, in order.
    crops: Vec<(Tensor, Vec<Window>)>,
}

impl DeviceCanvas {
    /// An empty canvas for `q` query planes at the resized size `(h, w)`.
    pub(crate) fn new(q: usize, h: usize, w: usize) -> DeviceCanvas {
        DeviceCanvas {
            q,
            h,
            w,
            sum: None,
            count: vec![0.0; h * w],
            crops: Vec::new(),
        }
    }

    /// Add a chunk of crops: `logits (B, Q, gh, gw)` f32 on the device, `wins` their `B`
    /// windows. Each crop is upsampled to its window and added in.
    pub(crate) fn add(&mut self, logits: &Tensor, wins: &[Window]) -> Result<()> {
        let (b, q, gh, gw) = logits.dims4()?;
        if q != self.q || b != wins.len() {
            return Err(InferError::Shape {
                what: "crop logits for the device canvas",
                expected: format!("({}, {}, h', w')", wins.len(), self.q),
                got: logits.dims().to_vec(),
            });
        }
        let dev = logits.device();
        let (h, w) = (self.h, self.w);
        if segsweep_kernels::enabled(dev, q * h * w) {
            // The kernel counts each pixel's windows itself, and stitch_windows checks that
            // every pixel has one.
            self.crops.push((logits.clone(), wins.to_vec()));
            return Ok(());
        }
        // Axᵢᵀ (gw, W) per crop → (B, gw, W); Ayᵢ (H, gh) side by side → (H, B·gh).
        let mut ax_t = Vec::with_capacity(b * gw * w);
        let mut ay = vec![0f32; h * b * gh];
        for (i, win) in wins.iter().enumerate() {
            let m = interp_rows(gw, win.w, win.x, w); // (W, gw)
            for k in 0..gw {
                ax_t.extend((0..w).map(|x| m[x * gw + k]));
            }
            let m = interp_rows(gh, win.h, win.y, h); // (H, gh)
            for y in 0..h {
                ay[y * b * gh + i * gh..y * b * gh + (i + 1) * gh]
                    .copy_from_slice(&m[y * gh..(y + 1) * gh]);
            }
            for y in win.y..win.y + win.h {
                for c in &mut self.count[y * w + win.x..y * w + win.x + win.w] {
                    *c += 1.0;
                }
            }
        }
        let ax_t = Tensor::from_vec(ax_t, (b, gw, w), dev)?;
        let ay = Tensor::from_vec(ay, (h, b * gh), dev)?;
        // (B, Q·gh, gw) · (B, gw, W) → (B, Q, gh, W) → (Q, B·gh, W).
        let t = logits
            .reshape((b, q * gh, gw))?
            .matmul(&ax_t)?
            .reshape((b, q, gh, w))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((q, b * gh, w))?;
        let part = ay.broadcast_matmul(&t)?; // (Q, H, W)
        self.sum = Some(match self.sum.take() {
            Some(s) => (s + part)?,
            None => part,
        });
        Ok(())
    }

    /// The average over windows, `(Q, H, W)` f32 on the device.
    pub(crate) fn average(self) -> Result<Tensor> {
        if !self.crops.is_empty() {
            let (chunks, wins): (Vec<Tensor>, Vec<Vec<Window>>) = self.crops.into_iter().unzip();
            let logits = Tensor::cat(&chunks, 0)?;
            let wins: Vec<_> = wins
                .iter()
                .flatten()
                .map(|w| (w.y, w.x, w.h, w.w))
                .collect();
            return Ok(segsweep_kernels::post::stitch_windows(
                &logits,
                &wins,
                (self.h, self.w),
            )?);
        }
        if self.count.contains(&0.0) {
            return Err(InferError::Pipeline(
                "a pixel of the resized image is in no window".into(),
            ));
        }
        let sum = self
            .sum
            .ok_or_else(|| InferError::Pipeline("no crop was added to the canvas".into()))?;
        let inv: Vec<f32> = self.count.iter().map(|c| 1.0 / c).collect();
        let inv = Tensor::from_vec(inv, (1, self.h, self.w), sum.device())?;
        // Deviation: multiplies by 1/count where the host path divides by count; the two differ
        // by at most one rounding (≤ 6e-8 relative).
        Ok(sum.broadcast_mul(&inv)?)
    }
}

/// [`crate::class_probs`] on the device: `softmax(scale · logits)` over the `Q` queries of
/// `logits (Q, h, w)` f32, then per class the max over its queries → `(C, h, w)` f32.
pub(crate) fn class_probs_device(
    logits: &Tensor,
    scale: f32,
    query_class: &[usize],
    n_classes: usize,
) -> Result<Tensor> {
    let q = logits.dim(0)?;
    if q != query_class.len() || q == 0 {
        return Err(InferError::Shape {
            what: "dense logits",
            expected: format!("({}, H, W) (one plane per query)", query_class.len()),
            got: logits.dims().to_vec(),
        });
    }
    // Each class's queries, padded to the longest synonym list by repeating the class's first
    // query (the max is unchanged by a repeated element).
    let mut members = vec![Vec::new(); n_classes];
    for (qi, &c) in query_class.iter().enumerate() {
        members
            .get_mut(c)
            .ok_or_else(|| {
                InferError::Pipeline(format!("query class {c} ≥ number of classes {n_classes}"))
            })?
            .push(qi as u32);
    }
    if let Some(c) = members.iter().position(Vec::is_empty) {
        return Err(InferError::Pipeline(format!("class {c} has no query")));
    }
    let dev: &Device = logits.device();
    let (_, h, w) = logits.dims3()?;
    if segsweep_kernels::enabled(dev, q.max(n_classes) * h * w) {
        // One kernel instead of the ops below (segsweep-kernels `post`).
        let x = logits.to_dtype(DType::F32)?;
        return Ok(segsweep_kernels::post::class_probs(
            &x,
            scale,
            query_class,
            n_classes,
        )?);
    }
    let s = members.iter().map(Vec::len).max().unwrap_or(1);
    let idx: Vec<u32> = members
        .iter()
        .flat_map(|m| (0..s).map(move |j| m[j.min(m.len() - 1)]))
        .collect();
    let idx = Tensor::from_vec(idx, n_classes * s, dev)?;
    let x = logits.to_dtype(DType::F32)?.affine(scale as f64, 0.0)?;
    let max = x.max_keepdim(0)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(0)?;
    let best = e
        .index_select(&idx, 0)?
        .reshape((n_classes, s, h, w))?
        .max(1)?;
    Ok(best.broadcast_div(&sum)?)
}

/// [`crate::threshold_labels`] on the device: `probs (C, h, w)` f32 → `h·w` labels on the host.
/// Only the per-class pixel counts (for `area_thd`) and the labels leave the device. Ties go
/// to the lowest class index as on the host (the first index reaching the max, computed with
/// max reductions, whose result does not depend on the reduction order).
pub(crate) fn threshold_labels_device(
    probs: &Tensor,
    area_thd: Option<f32>,
    prob_thd: f32,
    background: Option<usize>,
) -> Result<Vec<u32>> {
    let (c, h, w) = probs.dims3()?;
    let dev = probs.device();
    if segsweep_kernels::enabled(dev, c * h * w) {
        // Kernels (segsweep-kernels `post`) instead of the ops below; the counts and the zeroed
        // classes stay on the device, so only the labels come back (one wait per image).
        use segsweep_kernels::post;
        let p = probs.to_dtype(DType::F32)?.contiguous()?;
        let labels = match area_thd {
            Some(thd) => {
                let zeroed = post::area_zeroed(&post::area_counts(&p)?, thd, background)?;
                post::threshold_labels_masked(&p, &zeroed, prob_thd, background)?
            }
            None => post::threshold_labels(&p, &vec![false; c], prob_thd, background)?,
        };
        // Class indices below 256 come back as bytes: a quarter of the copy (one VOC image's
        // labels are 0.75 MB as u32), for one more small kernel.
        if c <= 256 {
            let bytes: Vec<u8> = labels.to_dtype(DType::U8)?.to_vec1()?;
            return Ok(bytes.into_iter().map(u32::from).collect());
        }
        return Ok(labels.to_vec1()?);
    }
    let p = probs.to_dtype(DType::F32)?.reshape((c, h * w))?;
    // (C − c) per class: the max over the classes that reach the max is C − (first such c).
    let rank: Vec<f32> = (0..c).map(|i| (c - i) as f32).collect();
    let rank = Tensor::from_vec(rank, (c, 1), dev)?;
    let first_argmax = |x: &Tensor| -> Result<(Tensor, Tensor)> {
        let max = x.max_keepdim(0)?; // (1, N)
        let hit = x.broadcast_eq(&max)?.to_dtype(DType::F32)?;
        let first = hit
            .broadcast_mul(&rank)?
            .max_keepdim(0)?
            .affine(-1.0, c as f64)?;
        Ok((first, max))
    };
    let mut zeroed = vec![false; c];
    if let Some(thd) = area_thd {
        let (labels, _) = first_argmax(&p)?;
        let classes = Tensor::arange(0u32, c as u32, dev)?
            .to_dtype(DType::F32)?
            .reshape((c, 1))?;
        let count: Vec<u32> = labels
            .broadcast_eq(&classes)?
            .to_dtype(DType::U32)?
            .sum(1)?
            .to_vec1()?;
        let count: Vec<u64> = count.into_iter().map(u64::from).collect();
        zeroed = crate::post::area_zeroed(&count, thd, background);
    }
    let p = if zeroed.contains(&true) {
        let keep: Vec<f32> = zeroed.iter().map(|&z| if z { 0.0 } else { 1.0 }).collect();
        p.broadcast_mul(&Tensor::from_vec(keep, (c, 1), dev)?)?
    } else {
        p
    };
    let (labels, max) = first_argmax(&p)?;
    let bg = labels
        .ones_like()?
        .affine(0.0, background.unwrap_or(0) as f64)?;
    let labels = max.lt(prob_thd as f64)?.where_cond(&bg, &labels)?;
    Ok(labels.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::resize_planes;
    use crate::post::class_probs;
    use crate::stitch::Canvas;
    use crate::windows::slide_windows;

    /// The kernels' `area_zeroed` (which runs on the device path, counts never leaving the
    /// device) decides as the host's `area_zeroed` on counts at and next to the limit, with and
    /// without a background class, and on totals past 2^24 where the f32 conversion rounds.
    #[test]
    fn issue_7_area_zeroed_on_the_device_equals_the_host_rule() {
        let mut cases: Vec<(Vec<u32>, f32, Option<usize>)> = vec![
            (vec![50, 10, 11, 29, 0], 0.1, None),
            (vec![900, 10, 11, 29, 50], 0.1, Some(0)),
            (vec![900, 10, 11, 29, 50], 0.1, Some(9)),
            (vec![16_777_217, 1_677_721, 1_677_722, 3, 1], 0.1, Some(4)),
            (vec![5, 5, 5, 5, 5], 0.0, Some(2)),
            (vec![5, 5, 5, 5, 5], 1.0, None),
        ];
        // Pseudo-random counts of a VOC-sized image, each threshold from 0 to 0.3.
        let mut x = 12345u64;
        for k in 0..200 {
            let counts: Vec<u32> = (0..21)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % 20_000) as u32 * ((x >> 20) % 2) as u32
                })
                .collect();
            cases.push((
                counts,
                (k % 31) as f32 / 100.0,
                (k % 3 == 0).then_some(k % 21),
            ));
        }
        let mut zeroed_any = 0;
        for (counts, thd, bg) in &cases {
            let t = Tensor::new(counts.as_slice(), &Device::Cpu).unwrap();
            let got: Vec<u8> = segsweep_kernels::post::area_zeroed(&t, *thd, *bg)
                .unwrap()
                .to_vec1()
                .unwrap();
            let wide: Vec<u64> = counts.iter().map(|&c| u64::from(c)).collect();
            let want: Vec<u8> = crate::post::area_zeroed(&wide, *thd, *bg)
                .into_iter()
                .map(u8::from)
                .collect();
            assert_eq!(got, want, "counts {counts:?}, thd {thd}, background {bg:?}");
            zeroed_any += usize::from(got.contains(&1) && got.contains(&0));
        }
        assert!(
            zeroed_any > 100,
            "too few cases zero some classes and keep others"
        );
        assert_eq!(
            segsweep_kernels::post::area_zeroed(
                &Tensor::new(&[50u32, 10, 11, 29, 0], &Device::Cpu).unwrap(),
                0.1,
                None
            )
            .unwrap()
            .to_vec1::<u8>()
            .unwrap(),
            [0, 1, 0, 0, 1]
        );
    }

    fn planes(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    #[test]
    fn device_resize_matches_the_host_resize_on_non_square_planes() {
        for (ih, iw, oh, ow) in [(14, 14, 224, 224), (5, 9, 37, 23), (40, 61, 17, 30)] {
            let src = planes(3 * ih * iw, 7);
            let host = resize_planes(&src, 3, (ih, iw), (oh, ow));
            let x = Tensor::from_vec(src, (3, ih, iw), &Device::Cpu).unwrap();
            let dev = flat(&resize_device(&x, (oh, ow)).unwrap());
            assert!(max_rel(&dev, &host) < 1e-6, "{ih}x{iw}→{oh}x{ow}");
            // segsweep-kernels' resize (its CPU implementation): the host's arithmetic exactly.
            let kernels = segsweep_kernels::forced(|| resize_device(&x, (oh, ow)).unwrap());
            assert_eq!(flat(&kernels), host, "kernels {ih}x{iw}→{oh}x{ow}");
        }
    }

    #[test]
    fn device_canvas_matches_the_host_canvas_with_clamped_windows() {
        // 150×263: 1 × 3 windows of 112 at stride 56 (the last one clamped to the border).
        let (q, h, w, g) = (4, 150, 263, 7);
        let wins = slide_windows(h, w, 112, 56);
        assert!(wins.len() > 2);
        let logits = planes(wins.len() * q * g * g, 3);
        let mut host = Canvas::new(q, h, w);
        for (i, win) in wins.iter().enumerate() {
            host.add(&logits[i * q * g * g..(i + 1) * q * g * g], (g, g), *win);
        }
        let host = host.average().unwrap();
        // Two chunks, as the batch size would split them.
        let t = Tensor::from_vec(logits, (wins.len(), q, g, g), &Device::Cpu).unwrap();
        let stitch = || {
            let mut dev = DeviceCanvas::new(q, h, w);
            dev.add(&t.narrow(0, 0, 2).unwrap(), &wins[..2]).unwrap();
            dev.add(&t.narrow(0, 2, wins.len() - 2).unwrap(), &wins[2..])
                .unwrap();
            flat(&dev.average().unwrap())
        };
        assert!(max_rel(&stitch(), &host) < 1e-6);
        // segsweep-kernels' stitch (its CPU implementation): the host's arithmetic exactly.
        assert_eq!(segsweep_kernels::forced(stitch), host);
    }

    #[test]
    fn device_canvas_with_kernels_matches_the_host_on_a_2d_slide_with_uneven_crops() {
        // 300×451 at crop 224 / stride 112: 2 × 3 windows, the last row and column clamped; a
        // 14×14 crop grid, 5 queries.
        let (q, h, w, g) = (5, 300, 451, 14);
        let wins = slide_windows(h, w, 224, 112);
        assert!(wins.len() >= 6);
        let logits = planes(wins.len() * q * g * g, 5);
        let mut host = Canvas::new(q, h, w);
        for (i, win) in wins.iter().enumerate() {
            host.add(&logits[i * q * g * g..(i + 1) * q * g * g], (g, g), *win);
        }
        let host = host.average().unwrap();
        let t = Tensor::from_vec(logits, (wins.len(), q, g, g), &Device::Cpu).unwrap();
        let kernels = segsweep_kernels::forced(|| {
            let mut dev = DeviceCanvas::new(q, h, w);
            for (i, win) in wins.iter().enumerate() {
                dev.add(&t.narrow(0, i, 1).unwrap(), std::slice::from_ref(win))
                    .unwrap();
            }
            flat(&dev.average().unwrap())
        });
        assert_eq!(kernels, host);
        // A canvas no crop covers entirely is an error, not NaNs.
        let err = segsweep_kernels::forced(|| {
            let mut dev = DeviceCanvas::new(q, h, w);
            dev.add(&t.narrow(0, 0, 1).unwrap(), &wins[..1]).unwrap();
            dev.average().unwrap_err()
        });
        assert!(err.to_string().contains("no window"), "{err}");
    }

    #[test]
    fn device_thresholds_match_the_host_with_ties_and_zeroed_classes() {
        use crate::post::threshold_labels;
        let (c, h, w) = (4, 6, 7);
        let n = h * w;
        let mut probs = vec![0f32; c * n];
        for i in 0..n {
            // Class 1 mostly, class 3 on a few pixels (zeroed by area_thd), exact ties between
            // classes 0 and 2 on some pixels, all-zero pixels on others.
            let (a, b) = match i % 7 {
                0 => (0.4, 0.4),
                1 => (0.0, 0.0),
                _ => (0.1, 0.05),
            };
            probs[i] = a;
            probs[2 * n + i] = b;
            probs[n + i] = if i % 7 >= 3 { 0.6 } else { 0.0 };
            probs[3 * n + i] = if i % 13 == 2 { 0.9 } else { 0.01 };
        }
        let t = Tensor::from_vec(probs.clone(), (c, h, w), &Device::Cpu).unwrap();
        for (area, thd, bg) in [
            (None, 0.0, Some(0)),
            (Some(0.1), 0.0, Some(0)),
            (Some(0.1), 0.3, Some(0)),
            (Some(0.5), 0.0, None),
            (None, 0.5, Some(2)),
        ] {
            let host = threshold_labels(&probs, c, area, thd, bg);
            let dev = threshold_labels_device(&t, area, thd, bg).unwrap();
            assert_eq!(dev, host, "area {area:?} prob_thd {thd} background {bg:?}");
            // The same through segsweep-kernels' ops (their CPU implementations).
            let kernels =
                segsweep_kernels::forced(|| threshold_labels_device(&t, area, thd, bg).unwrap());
            assert_eq!(
                kernels, host,
                "kernels: area {area:?} prob_thd {thd} background {bg:?}"
            );
        }
    }

    #[test]
    fn device_class_probs_match_the_host_with_synonyms() {
        let query_class = [0usize, 1, 1, 2, 1, 3, 3];
        let (h, w) = (5, 8);
        let logits = planes(query_class.len() * h * w, 11);
        let host = class_probs(&logits, 40.0, &query_class, 4).unwrap();
        let x = Tensor::from_vec(logits, (query_class.len(), h, w), &Device::Cpu).unwrap();
        let dev = flat(&class_probs_device(&x, 40.0, &query_class, 4).unwrap());
        assert!(max_rel(&dev, &host) < 1e-6);
        let kernels = segsweep_kernels::forced(|| class_probs_device(&x, 40.0, &query_class, 4));
        assert!(max_rel(&flat(&kernels.unwrap()), &host) < 1e-6);
        let err = class_probs_device(&x, 40.0, &query_class, 5).unwrap_err();
        assert!(err.to_string().contains("class 4 has no query"), "{err}");
    }
}
