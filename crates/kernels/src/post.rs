//! SCLIP's post-processing of dense logits as kernels (`kernels/post.cu`): the slide canvas
//! ([`stitch_windows`]), the bilinear resize to the image size ([`resize_bilinear`]), the synonym
//! softmax, the per-class argmax counts for `area_thd`, and the thresholded argmax.
//!
//! On a GPU, segsweep-infer's device path composes these steps from ~35 candle ops (broadcast
//! subtractions and divisions, reductions over the class axis, an index select, comparisons),
//! each a pass over `(Q, h, w)` or `(C, h, w)`; measured on an H100 they cost 3.4 ms per image
//! and configuration, which a 16-configuration sweep pays 16 times. Here each step is one pass,
//! one thread per pixel, with the host functions' arithmetic in the same order.
//!
//! All tensors are f32 and contiguous; `(Q, h, w)` logits, `(C, h, w)` probabilities.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};

/// `softmax(scale · logits)` over the `Q` queries, then for each class the max over its queries:
/// `logits: (Q, h, w)` f32 → `(C, h, w)` f32. `query_class[q]` is query `q`'s class; every class
/// in `0..n_classes` must have a query.
pub fn class_probs(
    logits: &Tensor,
    scale: f32,
    query_class: &[usize],
    n_classes: usize,
) -> Result<Tensor> {
    let (q, _, _) = logits.dims3()?;
    if q != query_class.len() || q == 0 || logits.dtype() != DType::F32 {
        bail!(
            "class_probs: logits {:?} {:?} for {} queries (expected f32 (Q, h, w))",
            logits.dims(),
            logits.dtype(),
            query_class.len()
        );
    }
    if let Some(&c) = query_class.iter().find(|&&c| c >= n_classes) {
        bail!("class_probs: query class {c} ≥ number of classes {n_classes}");
    }
    if let Some(c) = (0..n_classes).find(|c| !query_class.contains(c)) {
        bail!("class_probs: class {c} has no query");
    }
    let qc: Vec<u32> = query_class.iter().map(|&c| c as u32).collect();
    let qc = crate::tables::upload(&qc, logits.device())?;
    logits
        .contiguous()?
        .apply_op2_no_bwd(&qc, &ClassProbs { n_classes, scale })
}

/// Pixels per class of the argmax map of `probs: (C, h, w)` f32 (ties to the lowest class):
/// `(C,)` u32 on the same device. SCLIP's `area_thd` decides from these which classes to zero.
pub fn area_counts(probs: &Tensor) -> Result<Tensor> {
    check_probs(probs, "area_counts")?;
    probs.contiguous()?.apply_op1_no_bwd(&AreaCounts)
}

/// Which classes `area_thd` zeroes, from the per-class pixel counts `count: (C,)` u32 of
/// [`area_counts`], on their device: `(C,)` u8, 1 for a foreground class (every class but
/// `background`) with `count ≤ area_thd · (the foreground classes' total)`, product and
/// conversions rounded as segsweep-infer's host `area_zeroed` (f32, to nearest). On a GPU the
/// counts need not come back to the host between [`area_counts`] and
/// [`threshold_labels_masked`].
pub fn area_zeroed(count: &Tensor, area_thd: f32, background: Option<usize>) -> Result<Tensor> {
    let c = count.dims1()?;
    if count.dtype() != DType::U32 || c == 0 {
        bail!(
            "area_zeroed: counts {:?} {:?} (expected u32 (C,))",
            count.dims(),
            count.dtype()
        );
    }
    let op = AreaZeroed {
        thd: area_thd,
        bg: background.filter(|&b| b < c).map(|b| b as u32),
    };
    count.contiguous()?.apply_op1_no_bwd(&op)
}

/// Labels `(h·w,)` u32: the first argmax over the classes of `probs: (C, h, w)` f32 with the
/// classes in `zeroed` read as 0, and `background` (class 0 without one) where the max is below
/// `prob_thd`.
pub fn threshold_labels(
    probs: &Tensor,
    zeroed: &[bool],
    prob_thd: f32,
    background: Option<usize>,
) -> Result<Tensor> {
    let z: Vec<u8> = zeroed.iter().map(|&z| z as u8).collect();
    let z = crate::tables::upload(&z, probs.device())?;
    threshold_labels_masked(probs, &z, prob_thd, background)
}

/// [`threshold_labels`] with the zeroed classes as a `(C,)` u8 tensor on the probabilities'
/// device (nonzero = zeroed), e.g. from [`area_zeroed`].
pub fn threshold_labels_masked(
    probs: &Tensor,
    zeroed: &Tensor,
    prob_thd: f32,
    background: Option<usize>,
) -> Result<Tensor> {
    let c = check_probs(probs, "threshold_labels")?;
    if zeroed.dims() != [c] || zeroed.dtype() != DType::U8 {
        bail!(
            "threshold_labels: zeroed flags {:?} {:?} for {c} classes (expected u8 (C,))",
            zeroed.dims(),
            zeroed.dtype()
        );
    }
    let op = ThresholdLabels {
        prob_thd,
        bg: background.unwrap_or(0) as u32,
    };
    probs
        .contiguous()?
        .apply_op2_no_bwd(&zeroed.contiguous()?, &op)
}

/// torch's bilinear source indices and weights along one axis (`F.interpolate(...,
/// mode="bilinear", align_corners=False)`, `area_pixel_compute_source_index` with `scale =
/// input / output` in f32): output position `d` reads `(i0, i1)` with weights `(w0, w1)`.
/// segsweep-infer's host resampling uses the same tables. `input` and `output` ≥ 1.
pub fn bilinear_axis(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input.saturating_sub(1));
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 + 1 < input { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Append [`bilinear_axis`]`(input, output)` to the kernels' tables: `(i0, i1)` to `idx` and
/// `(w0, w1)` to `wts` at the same offsets.
fn push_axis(idx: &mut Vec<u32>, wts: &mut Vec<f32>, input: usize, output: usize) {
    for (i0, i1, w0, w1) in bilinear_axis(input, output) {
        idx.extend([i0 as u32, i1 as u32]);
        wts.extend([w0, w1]);
    }
}

/// The kernels' bilinear sample: `src` a plane of row length `gw`, row table entries at `ty`,
/// column entries at `tx`, in the host order `(v00·wx0 + v01·wx1)·wy0 + (v10·wx0 + v11·wx1)·wy1`.
fn bilinear_at(src: &[f32], gw: usize, idx: &[u32], wts: &[f32], ty: usize, tx: usize) -> f32 {
    let (a, b) = (idx[ty] as usize * gw, idx[ty + 1] as usize * gw);
    let (x0, x1) = (idx[tx] as usize, idx[tx + 1] as usize);
    let r0 = src[a + x0] * wts[tx] + src[a + x1] * wts[tx + 1];
    let r1 = src[b + x0] * wts[tx] + src[b + x1] * wts[tx + 1];
    r0 * wts[ty] + r1 * wts[ty + 1]
}

/// Bilinear resampling (torch, `align_corners=False`) of `x: (P, ih, iw)` f32 to `(P, oh, ow)`
/// f32, one kernel pass; equal to segsweep-infer's host `resize_planes` (same tables, same
/// arithmetic order, no fused multiply-adds).
pub fn resize_bilinear(x: &Tensor, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let (_, ih, iw) = x.dims3()?;
    if x.dtype() != DType::F32 || ih == 0 || iw == 0 || oh == 0 || ow == 0 {
        bail!(
            "resize_bilinear: {:?} {:?} to ({oh}, {ow}) (expected f32 (P, ih, iw), sizes ≥ 1)",
            x.dims(),
            x.dtype()
        );
    }
    let (mut idx, mut wts) = (Vec::new(), Vec::new());
    push_axis(&mut idx, &mut wts, ih, oh);
    push_axis(&mut idx, &mut wts, iw, ow);
    let idx = crate::tables::upload(&idx, x.device())?;
    let wts = crate::tables::upload(&wts, x.device())?;
    x.contiguous()?
        .apply_op3_no_bwd(&idx, &wts, &ResizeBilinear { oh, ow })
}

/// SCLIP's slide canvas, averaged: each crop's `(Q, gh, gw)` plane of `logits: (B, Q, gh, gw)`
/// f32 upsampled (bilinear, `align_corners=False`) to its window, summed in window order where
/// windows overlap and divided by the number of windows covering the pixel → `(Q, h, w)` f32.
/// `windows[i] = (y, x, height, width)` of crop `i` on the `(h, w)` canvas; every pixel must be
/// covered. Equal to segsweep-infer's host canvas (same tables, order and rounding).
pub fn stitch_windows(
    logits: &Tensor,
    windows: &[(usize, usize, usize, usize)],
    (h, w): (usize, usize),
) -> Result<Tensor> {
    let (b, _, gh, gw) = logits.dims4()?;
    if logits.dtype() != DType::F32 || b != windows.len() || b == 0 || gh == 0 || gw == 0 {
        bail!(
            "stitch_windows: logits {:?} {:?} for {} windows (expected f32 (B, Q, gh, gw))",
            logits.dims(),
            logits.dtype(),
            windows.len()
        );
    }
    let mut idx = vec![0u32; 5 * b];
    let mut wts = vec![0f32; 5 * b];
    for (i, &(y, x, wh, ww)) in windows.iter().enumerate() {
        if wh == 0 || ww == 0 || y + wh > h || x + ww > w {
            bail!("stitch_windows: window {i} at ({y}, {x}) of {wh}×{ww} is not inside the {h}×{w} canvas");
        }
        let off = idx.len() as u32;
        idx[5 * i..5 * i + 5].copy_from_slice(&[y as u32, x as u32, wh as u32, ww as u32, off]);
        push_axis(&mut idx, &mut wts, gh, wh);
        push_axis(&mut idx, &mut wts, gw, ww);
    }
    if let Some((py, px)) = first_uncovered(windows, (h, w)) {
        bail!("stitch_windows: pixel ({py}, {px}) of the {h}×{w} canvas is in no window");
    }
    let idx = crate::tables::upload(&idx, logits.device())?;
    let wts = crate::tables::upload(&wts, logits.device())?;
    logits
        .contiguous()?
        .apply_op3_no_bwd(&idx, &wts, &StitchWindows { h, w })
}

/// The first pixel `(y, x)` of an `(h, w)` canvas that no window `(y, x, height, width)`
/// covers, row by row from the windows' column intervals (no per-pixel pass).
fn first_uncovered(
    windows: &[(usize, usize, usize, usize)],
    (h, w): (usize, usize),
) -> Option<(usize, usize)> {
    let mut spans = Vec::with_capacity(windows.len());
    for py in 0..h {
        spans.clear();
        spans.extend(
            windows
                .iter()
                .filter(|&&(y, _, wh, _)| (y..y + wh).contains(&py))
                .map(|&(_, x, _, ww)| (x, x + ww)),
        );
        spans.sort_unstable();
        let mut end = 0;
        for &(a, b) in &spans {
            if a > end {
                break;
            }
            end = end.max(b);
        }
        if end < w {
            return Some((py, end));
        }
    }
    None
}

fn check_probs(probs: &Tensor, what: &str) -> Result<usize> {
    let (c, _, _) = probs.dims3()?;
    if c == 0 || probs.dtype() != DType::F32 {
        bail!(
            "{what}: probabilities {:?} {:?} (expected f32 (C, h, w))",
            probs.dims(),
            probs.dtype()
        );
    }
    Ok(c)
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!(
            "{what}: expected a contiguous f32 tensor, got {:?}",
            s.dtype()
        ),
    }
}

/// The kernel's first-argmax: a strictly greater value wins, from −∞ (ties to the lowest class).
fn first_argmax(
    probs: &[f32],
    zeroed: Option<&[u8]>,
    n: usize,
    c_n: usize,
    p: usize,
) -> (u32, f32) {
    let (mut best, mut label) = (f32::NEG_INFINITY, 0u32);
    for c in 0..c_n {
        let v = match zeroed {
            Some(z) if z[c] != 0 => 0.0,
            _ => probs[c * n + p],
        };
        if v > best {
            best = v;
            label = c as u32;
        }
    }
    (label, best)
}

pub(crate) struct ClassProbs {
    pub(crate) n_classes: usize,
    pub(crate) scale: f32,
}

impl ClassProbs {
    /// The kernel's loop, one pixel at a time.
    fn cpu(&self, logits: &[f32], qc: &[u32]) -> Vec<f32> {
        let q_n = qc.len();
        let n = logits.len() / q_n;
        let mut probs = vec![0f32; self.n_classes * n];
        for p in 0..n {
            let mut m = f32::NEG_INFINITY;
            for q in 0..q_n {
                m = m.max(logits[q * n + p] * self.scale);
            }
            let mut sum = 0f32;
            for (q, &c) in qc.iter().enumerate() {
                let e = (logits[q * n + p] * self.scale - m).exp();
                sum += e;
                let slot = &mut probs[c as usize * n + p];
                *slot = slot.max(e);
            }
            for c in 0..self.n_classes {
                probs[c * n + p] /= sum;
            }
        }
        probs
    }
}

impl CustomOp2 for ClassProbs {
    fn name(&self) -> &'static str {
        "segsweep-class-probs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logits = f32_slice(s1, l1, "class_probs logits")?;
        let qc = match (s2, l2.contiguous_offsets()) {
            (CpuStorage::U32(v), Some((a, b))) => &v[a..b],
            _ => bail!("class_probs: query classes must be contiguous u32"),
        };
        let (_, h, w) = l1.shape().dims3()?;
        let out = CpuStorage::F32(self.cpu(logits, qc));
        Ok((out, Shape::from((self.n_classes, h, w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (_, h, w) = l1.shape().dims3()?;
        let out = crate::cuda::class_probs(self, s1, l1, s2, l2)?;
        Ok((out, Shape::from((self.n_classes, h, w))))
    }
}

pub(crate) struct AreaCounts;

impl CustomOp1 for AreaCounts {
    fn name(&self) -> &'static str {
        "segsweep-area-counts"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let probs = f32_slice(s, l, "area_counts")?;
        let (c_n, h, w) = l.shape().dims3()?;
        let n = h * w;
        let mut count = vec![0u32; c_n];
        for p in 0..n {
            count[first_argmax(probs, None, n, c_n, p).0 as usize] += 1;
        }
        Ok((CpuStorage::U32(count), Shape::from(c_n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (c_n, _, _) = l.shape().dims3()?;
        Ok((crate::cuda::area_counts(s, l)?, Shape::from(c_n)))
    }
}

pub(crate) struct AreaZeroed {
    pub(crate) thd: f32,
    pub(crate) bg: Option<u32>,
}

impl AreaZeroed {
    /// The flags from the counts: the host rule, in the kernel's arithmetic.
    fn cpu(&self, count: &[u32]) -> Vec<u8> {
        let fg = |c: usize| Some(c as u32) != self.bg;
        let total: u64 = (0..count.len())
            .filter(|&c| fg(c))
            .map(|c| u64::from(count[c]))
            .sum();
        let limit = self.thd * total as f32;
        (0..count.len())
            .map(|c| u8::from(fg(c) && count[c] as f32 <= limit))
            .collect()
    }
}

impl CustomOp1 for AreaZeroed {
    fn name(&self) -> &'static str {
        "segsweep-area-zeroed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let count = match (s, l.contiguous_offsets()) {
            (CpuStorage::U32(v), Some((a, b))) => &v[a..b],
            _ => bail!("area_zeroed: counts must be contiguous u32"),
        };
        Ok((CpuStorage::U8(self.cpu(count)), Shape::from(count.len())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let c = l.shape().dims1()?;
        Ok((crate::cuda::area_zeroed(self, s, l)?, Shape::from(c)))
    }
}

pub(crate) struct ThresholdLabels {
    pub(crate) prob_thd: f32,
    pub(crate) bg: u32,
}

impl CustomOp2 for ThresholdLabels {
    fn name(&self) -> &'static str {
        "segsweep-threshold-labels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let probs = f32_slice(s1, l1, "threshold_labels")?;
        let zeroed = match (s2, l2.contiguous_offsets()) {
            (CpuStorage::U8(v), Some((a, b))) => &v[a..b],
            _ => bail!("threshold_labels: zeroed flags must be contiguous u8"),
        };
        let (c_n, h, w) = l1.shape().dims3()?;
        let n = h * w;
        let labels = (0..n)
            .map(|p| {
                let (label, max) = first_argmax(probs, Some(zeroed), n, c_n, p);
                if max < self.prob_thd {
                    self.bg
                } else {
                    label
                }
            })
            .collect();
        Ok((CpuStorage::U32(labels), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (_, h, w) = l1.shape().dims3()?;
        Ok((
            crate::cuda::threshold_labels(self, s1, l1, s2, l2)?,
            Shape::from(h * w),
        ))
    }
}

fn tables<'a>(
    s2: &'a CpuStorage,
    l2: &Layout,
    s3: &'a CpuStorage,
    l3: &Layout,
    what: &str,
) -> Result<(&'a [u32], &'a [f32])> {
    let idx = match (s2, l2.contiguous_offsets()) {
        (CpuStorage::U32(v), Some((a, b))) => &v[a..b],
        _ => bail!("{what}: the index table must be contiguous u32"),
    };
    Ok((idx, f32_slice(s3, l3, what)?))
}

pub(crate) struct ResizeBilinear {
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl CustomOp3 for ResizeBilinear {
    fn name(&self) -> &'static str {
        "segsweep-resize-bilinear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "resize_bilinear")?;
        let (idx, wts) = tables(s2, l2, s3, l3, "resize_bilinear")?;
        let (p_n, ih, iw) = l1.shape().dims3()?;
        let (oh, ow) = (self.oh, self.ow);
        // The kernel's loop, one output element at a time.
        let y = (0..p_n * oh * ow)
            .map(|e| {
                let (ox, oy, p) = (e % ow, (e / ow) % oh, e / (ow * oh));
                let src = &x[p * ih * iw..(p + 1) * ih * iw];
                bilinear_at(src, iw, idx, wts, 2 * oy, 2 * oh + 2 * ox)
            })
            .collect();
        Ok((CpuStorage::F32(y), Shape::from((p_n, oh, ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (p_n, _, _) = l1.shape().dims3()?;
        let out = crate::cuda::resize_bilinear(self, s1, l1, s2, l2, s3, l3)?;
        Ok((out, Shape::from((p_n, self.oh, self.ow))))
    }
}

pub(crate) struct StitchWindows {
    pub(crate) h: usize,
    pub(crate) w: usize,
}

impl CustomOp3 for StitchWindows {
    fn name(&self) -> &'static str {
        "segsweep-stitch-windows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logits = f32_slice(s1, l1, "stitch_windows")?;
        let (idx, wts) = tables(s2, l2, s3, l3, "stitch_windows")?;
        let (b_n, q_n, gh, gw) = l1.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        // The kernel's loop, one output element at a time.
        let out = (0..q_n * h * w)
            .map(|e| {
                let (px, py, q) = (e % w, (e / w) % h, e / (w * h));
                let (mut sum, mut count) = (0f32, 0f32);
                for i in 0..b_n {
                    let win: [usize; 5] = std::array::from_fn(|k| idx[5 * i + k] as usize);
                    if py < win[0] || py >= win[0] + win[2] || px < win[1] || px >= win[1] + win[3]
                    {
                        continue;
                    }
                    let ty = win[4] + 2 * (py - win[0]);
                    let tx = win[4] + 2 * win[2] + 2 * (px - win[1]);
                    let src = &logits[(i * q_n + q) * gh * gw..(i * q_n + q + 1) * gh * gw];
                    sum += bilinear_at(src, gw, idx, wts, ty, tx);
                    count += 1.0;
                }
                sum / count
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from((q_n, h, w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (_, q_n, _, _) = l1.shape().dims4()?;
        let out = crate::cuda::stitch_windows(self, s1, l1, s2, l2, s3, l3)?;
        Ok((out, Shape::from((q_n, self.h, self.w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn planes(n: usize, seed: u64) -> Vec<f32> {
        crate::testing::pseudo_random(&[n], seed)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// The composed reference: softmax over queries in f64, max over each class's queries.
    fn reference_probs(logits: &[f32], scale: f32, qc: &[usize], c_n: usize) -> Vec<f64> {
        let n = logits.len() / qc.len();
        let mut out = vec![0f64; c_n * n];
        for p in 0..n {
            let m = (0..qc.len())
                .map(|q| (logits[q * n + p] * scale) as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = (0..qc.len())
                .map(|q| ((logits[q * n + p] * scale) as f64 - m).exp())
                .collect();
            let s: f64 = e.iter().sum();
            for (q, &c) in qc.iter().enumerate() {
                out[c * n + p] = out[c * n + p].max(e[q] / s);
            }
        }
        out
    }

    #[test]
    fn class_probs_is_the_synonym_softmax_on_non_square_planes() {
        let qc = [0usize, 1, 1, 2, 1, 3, 3];
        let (h, w) = (5, 8);
        let logits = planes(qc.len() * h * w, 11);
        let t = Tensor::from_vec(logits.clone(), (qc.len(), h, w), &Device::Cpu).unwrap();
        let got: Vec<f32> = class_probs(&t, 40.0, &qc, 4)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = reference_probs(&logits, 40.0, &qc, 4);
        assert_eq!(got.len(), 4 * h * w);
        for (a, b) in got.iter().zip(&want) {
            assert!((*a as f64 - b).abs() <= 1e-6 * b.max(1e-3), "{a} vs {b}");
        }
        let e = class_probs(&t, 40.0, &qc, 5).unwrap_err();
        assert!(e.to_string().contains("class 4 has no query"), "{e}");
        let e = class_probs(&t, 40.0, &[0, 1, 1, 2, 1, 3, 9], 4).unwrap_err();
        assert!(e.to_string().contains("query class 9"), "{e}");
    }

    /// torch's bilinear sample (align_corners=False) of an `(ih, iw)` plane resized to
    /// `(oh, ow)` at `(oy, ox)`, from the formula in f64.
    fn bilinear_ref(
        src: &[f32],
        (ih, iw): (usize, usize),
        (oh, ow): (usize, usize),
        oy: usize,
        ox: usize,
    ) -> f64 {
        let axis = |input: usize, output: usize, d: usize| {
            let s = (input as f64 / output as f64 * (d as f64 + 0.5) - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(input - 1);
            (i0, (i0 + 1).min(input - 1), (s - i0 as f64).min(1.0))
        };
        let ((y0, y1, ly), (x0, x1, lx)) = (axis(ih, oh, oy), axis(iw, ow, ox));
        let v = |y: usize, x: usize| src[y * iw + x] as f64;
        (1.0 - ly) * ((1.0 - lx) * v(y0, x0) + lx * v(y0, x1))
            + ly * ((1.0 - lx) * v(y1, x0) + lx * v(y1, x1))
    }

    #[test]
    fn resize_bilinear_is_torch_bilinear_on_non_square_planes() {
        for (ih, iw, oh, ow) in [
            (5, 7, 11, 4),
            (14, 14, 224, 224),
            (1, 3, 2, 9),
            (40, 61, 17, 30),
        ] {
            let x = planes(2 * ih * iw, 5);
            let t = Tensor::from_vec(x.clone(), (2, ih, iw), &Device::Cpu).unwrap();
            let got: Vec<f32> = resize_bilinear(&t, (oh, ow))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got.len(), 2 * oh * ow);
            for (e, g) in got.iter().enumerate() {
                let (ox, oy, p) = (e % ow, (e / ow) % oh, e / (ow * oh));
                let want = bilinear_ref(&x[p * ih * iw..], (ih, iw), (oh, ow), oy, ox);
                // torch (and these tables) compute the source coordinate in f32: up to ~61 ×
                // 6e-8 off the f64 formula, times value steps of up to 4 between pixels.
                assert!(
                    (*g as f64 - want).abs() <= 2e-5,
                    "{ih}x{iw}→{oh}x{ow} at {e}: {g} vs {want}"
                );
            }
        }
        let t = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(resize_bilinear(&t, (0, 4)).is_err());
        assert!(resize_bilinear(&t.to_dtype(DType::F16).unwrap(), (3, 4)).is_err());
    }

    #[test]
    fn stitch_windows_averages_the_upsampled_crops_over_their_windows() {
        // A 9×13 canvas, 3 queries, 3×4 crop grids; 4 overlapping corner windows and one inside
        // them, so pixels have 1 to 5 windows.
        let (q, gh, gw, h, w) = (3, 3, 4, 9, 13);
        let wins = [
            (0, 0, 6, 8),
            (0, 5, 6, 8),
            (3, 0, 6, 8),
            (3, 5, 6, 8),
            (2, 3, 5, 7),
        ];
        let logits = planes(wins.len() * q * gh * gw, 9);
        let t = Tensor::from_vec(logits.clone(), (wins.len(), q, gh, gw), &Device::Cpu).unwrap();
        let got: Vec<f32> = stitch_windows(&t, &wins, (h, w))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut max_count = 0;
        for (e, g) in got.iter().enumerate() {
            let (px, py, qi) = (e % w, (e / w) % h, e / (w * h));
            let (mut sum, mut count) = (0f64, 0);
            for (i, &(y, x, wh, ww)) in wins.iter().enumerate() {
                if (y..y + wh).contains(&py) && (x..x + ww).contains(&px) {
                    let src = &logits[(i * q + qi) * gh * gw..];
                    sum += bilinear_ref(src, (gh, gw), (wh, ww), py - y, px - x);
                    count += 1;
                }
            }
            max_count = max_count.max(count);
            let want = sum / count as f64;
            assert!((*g as f64 - want).abs() <= 2e-6, "pixel {e}: {g} vs {want}");
        }
        assert_eq!(max_count, 5);
        // Uncovered pixels, windows off the canvas, and a count mismatch are errors.
        let e = stitch_windows(&t.narrow(0, 0, 4).unwrap(), &wins[..4], (h, w + 1)).unwrap_err();
        assert!(e.to_string().contains("pixel (0, 13)"), "{e}");
        // A gap between two windows, and a row no window reaches.
        let two = t.narrow(0, 0, 2).unwrap();
        let e = stitch_windows(&two, &[(0, 0, 9, 5), (0, 6, 9, 7)], (h, w)).unwrap_err();
        assert!(e.to_string().contains("pixel (0, 5)"), "{e}");
        let e = stitch_windows(&two, &[(0, 0, 8, 13), (0, 0, 4, 13)], (h, w)).unwrap_err();
        assert!(e.to_string().contains("pixel (8, 0)"), "{e}");
        let mut off = wins;
        off[4] = (5, 7, 5, 7);
        let e = stitch_windows(&t, &off, (h, w)).unwrap_err();
        assert!(e.to_string().contains("window 4"), "{e}");
        assert!(stitch_windows(&t, &wins[..4], (h, w)).is_err());
    }

    #[test]
    fn counts_and_labels_follow_first_argmax_zeroing_and_threshold() {
        // 3 classes × 6 pixels (2 × 3): ties, a zeroed class, a pixel below the threshold.
        #[rustfmt::skip]
        let p: [f32; 18] = [
            0.2, 0.5, 0.1, 0.4, 0.30, 0.0,
            0.2, 0.1, 0.6, 0.4, 0.35, 0.0,
            0.6, 0.4, 0.3, 0.2, 0.35, 0.0,
        ];
        let t = Tensor::from_vec(p.to_vec(), (3, 2, 3), &Device::Cpu).unwrap();
        let counts: Vec<u32> = area_counts(&t).unwrap().to_vec1().unwrap();
        // Argmax: 2, 0, 1, 0 (tie 0/1 → 0), 1 (tie 1/2 → 1), 0 (all zero → 0).
        assert_eq!(counts, [3, 2, 1]);
        let labels = |z: &[bool], thd: f32, bg: Option<usize>| -> Vec<u32> {
            threshold_labels(&t, z, thd, bg).unwrap().to_vec1().unwrap()
        };
        assert_eq!(labels(&[false; 3], 0.0, Some(0)), [2, 0, 1, 0, 1, 0]);
        // Class 1 zeroed: its planes read 0.
        assert_eq!(
            labels(&[false, true, false], 0.0, Some(0)),
            [2, 0, 2, 0, 2, 0]
        );
        // prob_thd 0.45: maxima 0.6, 0.5, 0.6, 0.4, 0.35, 0 → background 2 below it.
        assert_eq!(labels(&[false; 3], 0.45, Some(2)), [2, 0, 1, 2, 2, 2]);
        assert!(threshold_labels(&t, &[false; 2], 0.0, None).is_err());
        let f16 = t.to_dtype(DType::F16).unwrap();
        assert!(area_counts(&f16).is_err());
    }
}
