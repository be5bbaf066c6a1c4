//! The dense-inference pipeline, split at the backbone prefix so that one backbone pass can serve
//! many configurations: [`prepare`] (resize, normalise, windows, batched prefix) and [`finish`]
//! (last block, head, feature plugins, cosine logits, stitching, dense plugins, probabilities,
//! thresholds, label plugins). [`segment`] is the two in a row.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use segsweep_core::{
    tensor::l2_normalise, AttentionCtx, Backbone, Classifier, DenseCtx, DenseMaps, FeatureCtx,
    FeatureMap, InferConfig, LabelCtx, Mode, Needs, PrefixOut, Refiner, RgbImage, Stage,
};

use crate::device_dense::{
    class_probs_device, resize_device, threshold_labels_device, DeviceCanvas,
};
use crate::error::{InferError, Result};
use crate::interp::resize_planes;
use crate::post::{class_probs, threshold_labels};
use crate::resize::{normalise_on, normalise_vec, resize_short_side};
use crate::stitch::Canvas;
use crate::windows::{windows_for, Window};

/// mmseg's `Resize(scale=(2048, S), keep_ratio=True)`: the long side is capped at 2048 pixels.
pub const LONG_SIDE_CAP: usize = 2048;

/// A plugin attached to a stage of the pipeline, in pipeline order.
pub type Step<'a> = (Stage, &'a dyn Refiner);

/// The result for one image, at its original size.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// Class probabilities `(C, h, w)` f32, after the synonym max and before
    /// `area_thd`/`prob_thd` (what `segsweep predict` writes as `.probs.npy`). On the CPU for a
    /// CPU backbone; on the backbone's device otherwise (a sweep never copies them back).
    pub probs: Tensor,
    /// Labels `(h, w)` u32 on the CPU, after the thresholds and the label-stage plugins.
    pub labels: Tensor,
}

/// Intermediate results of [`finish_traced`], for parity tests and debugging.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Per prefix chunk, the cosine crop logits `(B, Q, h', w')` before upsampling.
    pub crop_logits: Vec<Tensor>,
    /// Slide mode: the averaged canvas `(Q, H, W)` at the resized size.
    pub canvas: Option<Tensor>,
    /// Dense logits `(Q, h, w)` at the original size, before dense-stage plugins.
    pub dense_logits: Option<Tensor>,
}

/// The settings [`prepare`] depends on; [`finish`] refuses a configuration that differs in them.
#[derive(Debug, Clone, PartialEq)]
struct PrepareKey {
    mode: Mode,
    crop: usize,
    stride: usize,
    short_side: Option<usize>,
}

impl PrepareKey {
    fn of(cfg: &InferConfig) -> PrepareKey {
        // Whole mode ignores crop and stride, so configurations may differ in them.
        let slide = cfg.mode == Mode::Slide;
        PrepareKey {
            mode: cfg.mode,
            crop: if slide { cfg.crop } else { 0 },
            stride: if slide { cfg.stride } else { 0 },
            short_side: cfg.short_side,
        }
    }
}

/// Backbone prefix outputs for windows `start..start + prefix.tokens.dim(0)` of one image.
#[derive(Debug, Clone)]
struct Chunk {
    start: usize,
    prefix: PrefixOut,
}

/// One image after the expensive part: the backbone prefix of every window, ready for any
/// number of [`finish`] calls with configurations that differ only after the prefix.
#[derive(Debug, Clone)]
pub struct Prepared {
    image: RgbImage,
    resized: (usize, usize),
    /// The resized image normalised, `(3, H, W)` row-major, to cut crops for plugins; empty
    /// where `norm_dev` holds it.
    norm: Vec<f32>,
    /// On a GPU, the same `(3, H, W)` f32 on the device, normalised there from the uploaded
    /// bytes: crops for the prefix and for every configuration's plugins are cut there instead
    /// of copied over each time.
    norm_dev: Option<Tensor>,
    windows: Vec<Window>,
    chunks: Vec<Chunk>,
    needs: Needs,
    key: PrepareKey,
    dtype: DType,
    /// Whether the prefix was last put back from floats of lower precision than `dtype`.
    restored_lossy: bool,
}

impl Prepared {
    /// The original image.
    pub fn image(&self) -> &RgbImage {
        &self.image
    }
    /// `(h, w)` of the original image.
    pub fn original_size(&self) -> (usize, usize) {
        (self.image.h, self.image.w)
    }
    /// `(H, W)` of the resized image the windows are cut from.
    pub fn resized_size(&self) -> (usize, usize) {
        self.resized
    }
    /// The windows, in the order SCLIP visits them.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }
    /// What the prefix recorded.
    pub fn needs(&self) -> &Needs {
        &self.needs
    }
    /// Bytes held by the prefix outputs (tokens and recorded attention/qkv), for cache budgets.
    pub fn prefix_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        self.chunks
            .iter()
            .map(|c| {
                let p = &c.prefix;
                bytes(&p.tokens)
                    + p.attn_probs.values().map(bytes).sum::<usize>()
                    + p.qkv
                        .values()
                        .map(|(q, k, v)| bytes(q) + bytes(k) + bytes(v))
                        .sum::<usize>()
            })
            .sum()
    }

    /// Whether the prefix outputs are held (false after [`Prepared::take_prefix`]).
    pub fn has_prefix(&self) -> bool {
        !self.chunks.is_empty() || self.windows.is_empty()
    }

    /// Remove the prefix outputs, to free their memory or write them to disk, and return them
    /// as named tensors. The image, windows and settings stay, so [`postprocess`] still works;
    /// [`dense_logits`] refuses this image until [`Prepared::restore_prefix`]. Names, with `S`
    /// the first window of a batch chunk and `B` its number of windows:
    /// `S.tokens` `(B, 1 + gh·gw, D)`, `S.grid` `(2,)` u32 = `(gh, gw)`, `S.attn.L`
    /// `(B, heads, T, T)`, and `S.q.L`, `S.k.L`, `S.v.L` `(B, heads, T, head_dim)`.
    pub fn take_prefix(&mut self) -> Result<Vec<(String, Tensor)>> {
        let out = self.prefix_tensors()?;
        self.chunks.clear();
        Ok(out)
    }

    /// The prefix outputs as named tensors, as [`Prepared::take_prefix`] names them, keeping
    /// them here too (tensors are shared, not copied).
    pub fn prefix_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for c in &self.chunks {
            let s = c.start;
            let p = &c.prefix;
            let (gh, gw) = p.grid;
            out.push((
                format!("{s}.grid"),
                Tensor::new(&[gh as u32, gw as u32], &Device::Cpu)?,
            ));
            out.push((format!("{s}.tokens"), p.tokens.clone()));
            for (l, t) in &p.attn_probs {
                out.push((format!("{s}.attn.{l}"), t.clone()));
            }
            for (l, (q, k, v)) in &p.qkv {
                out.push((format!("{s}.q.{l}"), q.clone()));
                out.push((format!("{s}.k.{l}"), k.clone()));
                out.push((format!("{s}.v.{l}"), v.clone()));
            }
        }
        Ok(out)
    }

    /// A canonical description of everything besides the backbone and the image pixels that
    /// determines the prefix outputs (window settings, resized size, windows, recorded layers,
    /// dtype), for keying caches of them.
    pub fn prefix_identity(&self) -> String {
        let k = &self.key;
        format!(
            "mode={:?} crop={} stride={} short_side={:?} resized={:?} windows={} attn={:?} qkv={:?} dtype={:?}",
            k.mode,
            k.crop,
            k.stride,
            k.short_side,
            self.resized,
            self.windows.len(),
            self.needs.attn_probs,
            self.needs.qkv,
            self.dtype
        )
    }

    /// Whether the prefix was last put back ([`Prepared::restore_prefix`]) from floats stored
    /// at other than f32 and the backbone's dtype (f16 scratch or cache files for an f32 or
    /// bf16 model): what runs on it is close to, not identical with, a run on the computed
    /// prefix. False for a computed prefix and after an exact round trip.
    pub fn prefix_restored_lossy(&self) -> bool {
        self.restored_lossy
    }

    /// Put back prefix outputs from [`Prepared::take_prefix`], possibly after a round trip
    /// through a file in another float dtype: floats are converted to this image's backbone
    /// dtype and moved to `device` ([`Prepared::prefix_restored_lossy`] says whether that
    /// rounded them). Refuses (and keeps no prefix) unless the tensors cover every window once,
    /// with the layers this image recorded.
    pub fn restore_prefix(
        &mut self,
        named: std::collections::HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<()> {
        let lossy = named.values().any(|t| {
            let d = t.dtype();
            d.is_float() && d != self.dtype && d != DType::F32
        });
        let bad = |msg: String| InferError::Pipeline(format!("restoring a prefix: {msg}"));
        let mut starts: Vec<usize> = named
            .keys()
            .filter_map(|k| k.strip_suffix(".tokens")?.parse().ok())
            .collect();
        starts.sort_unstable();
        let get = |name: String| -> Result<Tensor> {
            let t = named
                .get(&name)
                .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
            let t = if t.dtype().is_float() {
                t.to_dtype(self.dtype)?
            } else {
                t.clone()
            };
            Ok(t.to_device(device)?)
        };
        let mut chunks = Vec::with_capacity(starts.len());
        let mut next = 0;
        let mut expected = 0;
        for s in starts {
            let tokens = get(format!("{s}.tokens"))?;
            let rows = tokens.dims3()?.0;
            if s != next || rows == 0 {
                return Err(bad(format!("chunks do not tile the windows at window {s}")));
            }
            next = s + rows;
            let grid: Vec<u32> = get(format!("{s}.grid"))?.to_vec1()?;
            let [gh, gw] = grid[..] else {
                return Err(bad(format!("`{s}.grid` is not (gh, gw)")));
            };
            let mut prefix = PrefixOut {
                tokens,
                grid: (gh as usize, gw as usize),
                attn_probs: Default::default(),
                qkv: Default::default(),
            };
            for &l in &self.needs.attn_probs {
                prefix.attn_probs.insert(l, get(format!("{s}.attn.{l}"))?);
            }
            for &l in &self.needs.qkv {
                let (q, k, v) = (
                    get(format!("{s}.q.{l}"))?,
                    get(format!("{s}.k.{l}"))?,
                    get(format!("{s}.v.{l}"))?,
                );
                prefix.qkv.insert(l, (q, k, v));
            }
            expected += 2 + prefix.attn_probs.len() + 3 * prefix.qkv.len();
            chunks.push(Chunk { start: s, prefix });
        }
        if next != self.windows.len() || expected != named.len() {
            return Err(bad(format!(
                "{} tensors for {next} of {} windows; expected exactly what `take_prefix` returned for this image",
                named.len(),
                self.windows.len()
            )));
        }
        self.chunks = chunks;
        self.restored_lossy = lossy;
        Ok(())
    }

    /// The normalised crops of windows `start..start + len`: `(len, 3, h, w)`.
    fn crops(&self, start: usize, len: usize, device: &Device) -> Result<Tensor> {
        let ws = &self.windows[start..start + len];
        let (h, w) = (ws[0].h, ws[0].w);
        if let Some(t) = &self.norm_dev {
            let t = t.to_device(device)?;
            let crops = ws
                .iter()
                .map(|win| Ok(t.narrow(1, win.y, h)?.narrow(2, win.x, w)?.contiguous()?))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::stack(&crops, 0)?.to_dtype(self.dtype)?);
        }
        let mut data = Vec::with_capacity(len * 3 * h * w);
        let (ih, iw) = self.resized;
        for win in ws {
            for c in 0..3 {
                let plane = &self.norm[c * ih * iw..(c + 1) * ih * iw];
                for y in win.y..win.y + h {
                    data.extend_from_slice(&plane[y * iw + win.x..y * iw + win.x + w]);
                }
            }
        }
        Ok(Tensor::from_vec(data, (len, 3, h, w), device)?.to_dtype(self.dtype)?)
    }
}

/// The union of what the plugins of a pipeline need the prefix to record.
pub fn needs_of(pipeline: &[Step<'_>]) -> Needs {
    pipeline
        .iter()
        .fold(Needs::default(), |acc, (_, r)| acc.union(&r.needs()))
}

fn backbone_dtype(backbone: &dyn Backbone) -> Result<DType> {
    match backbone.info().dtype.as_str() {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(InferError::Config {
            key: "dtype",
            msg: format!("backbone reports dtype `{other}`; expected f32, f16 or bf16"),
        }),
    }
}

fn validate(cfg: &InferConfig) -> Result<()> {
    let bad = |key, msg: &str| {
        Err(InferError::Config {
            key,
            msg: msg.to_string(),
        })
    };
    if cfg.batch_size == 0 {
        return bad("batch_size", "must be at least 1");
    }
    if !(cfg.logit_scale.is_finite() && cfg.logit_scale > 0.0) {
        return bad("logit_scale", "must be a positive finite number");
    }
    if !cfg.prob_thd.is_finite() {
        return bad("prob_thd", "must be finite");
    }
    if cfg.area_thd.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
        return bad("area_thd", "must lie in 0..=1");
    }
    Ok(())
}

/// Resize, normalise and cut the windows of one image (no backbone work yet).
fn stage_image(
    img: &RgbImage,
    cfg: &InferConfig,
    backbone: &dyn Backbone,
    needs: &Needs,
) -> Result<Prepared> {
    let info = backbone.info();
    let resized = match cfg.short_side {
        Some(s) => resize_short_side(img, s, LONG_SIDE_CAP)?,
        None => img.clone(),
    };
    let windows = windows_for(resized.h, resized.w, cfg)?;
    check_windows(
        &windows,
        info.patch_size,
        (img.h, img.w),
        (resized.h, resized.w),
    )?;
    let device = backbone.device();
    let (norm, norm_dev) = match dense_on_device(device) {
        true => {
            let t = normalise_on(&resized, info.mean, info.std, device)?;
            // prepare_many stages images on rayon's threads, and on a GPU each thread launches
            // on its own stream (candle's devices use CUDA's per-thread default stream, and with
            // one stream per device cudarc orders nothing across threads): finish this thread's
            // upload and normalisation before another thread's stream reads the result.
            device.synchronize()?;
            (Vec::new(), Some(t))
        }
        false => (normalise_vec(&resized, info.mean, info.std), None),
    };
    Ok(Prepared {
        image: img.clone(),
        resized: (resized.h, resized.w),
        norm,
        norm_dev,
        windows,
        chunks: Vec::new(),
        needs: needs.clone(),
        key: PrepareKey::of(cfg),
        dtype: backbone_dtype(backbone)?,
        restored_lossy: false,
    })
}

/// How many windows [`prepare`] cuts from `image` with `cfg` (after the short-side resize),
/// without resizing it: for filling batches across images.
pub fn window_count(image: &RgbImage, cfg: &InferConfig) -> Result<usize> {
    validate(cfg)?;
    let (h, w) = match cfg.short_side {
        Some(s) => crate::resize::rescale_size(image.h, image.w, s, LONG_SIDE_CAP),
        None => (image.h, image.w),
    };
    Ok(windows_for(h, w, cfg)?.len())
}

/// [`window_count`] for an image of `(h, w)` pixels and a backbone of `patch`-pixel patches,
/// failing as [`prepare`] would for a size the settings cannot segment: a window (after the
/// short-side resize) smaller than one patch, as a very thin image gives.
pub fn window_count_for(h: usize, w: usize, cfg: &InferConfig, patch: usize) -> Result<usize> {
    validate(cfg)?;
    let (rh, rw) = match cfg.short_side {
        Some(s) => crate::resize::rescale_size(h, w, s, LONG_SIDE_CAP),
        None => (h, w),
    };
    let windows = windows_for(rh, rw, cfg)?;
    check_windows(&windows, patch, (h, w), (rh, rw))?;
    Ok(windows.len())
}

/// Every window must hold at least one `patch`-pixel patch each way.
fn check_windows(
    windows: &[crate::windows::Window],
    patch: usize,
    (h, w): (usize, usize),
    (rh, rw): (usize, usize),
) -> Result<()> {
    match windows.iter().find(|x| x.h < patch || x.w < patch) {
        Some(x) => Err(InferError::Config {
            key: "short_side",
            msg: format!(
                "a {}×{} window is smaller than the {patch}-pixel patch (image {h}×{w} resized to {rh}×{rw})",
                x.h, x.w
            ),
        }),
        None => Ok(()),
    }
}

/// Everything [`prepare`] does except running the backbone prefix: resize, normalise, cut the
/// windows. The result has no prefix ([`Prepared::has_prefix`] is false unless there are no
/// windows); fill it with [`Prepared::restore_prefix`], e.g. from a feature cache.
pub fn stage(
    backbone: &dyn Backbone,
    image: &RgbImage,
    cfg: &InferConfig,
    needs: &Needs,
) -> Result<Prepared> {
    validate(cfg)?;
    stage_image(image, cfg, backbone, needs)
}

/// Run the backbone prefix on one image: resize (mmcv `imrescale`, cv2 bilinear on u8),
/// normalise, cut the windows and push their crops through `backbone.prefix` in batches of
/// `cfg.batch_size`, recording what `needs` asks (give the union over every configuration that
/// will [`finish`] this image).
pub fn prepare(
    backbone: &dyn Backbone,
    image: &RgbImage,
    cfg: &InferConfig,
    needs: &Needs,
) -> Result<Prepared> {
    prepare_many(backbone, &[image], cfg, needs)?
        .pop()
        .ok_or_else(|| InferError::Pipeline("prepare produced no image".into()))
}

/// [`prepare`] for several images at once: batches are filled with crops of the same size from
/// consecutive images, so small images and last windows do not leave batches half empty.
/// Returns one [`Prepared`] per image, in order.
pub fn prepare_many(
    backbone: &dyn Backbone,
    images: &[&RgbImage],
    cfg: &InferConfig,
    needs: &Needs,
) -> Result<Vec<Prepared>> {
    validate(cfg)?;
    // The images are staged in parallel (each one's resize is parallel too): on a GPU staging
    // is CPU work and small launches that the device does not wait for, and serially it
    // took as long as the backbone of a 64-crop batch (H100, f16: ~1.2 against 1.15 ms per
    // image). The first failing image's error is reported, as serially.
    let staged: Vec<Result<Prepared>> = images
        .par_iter()
        .map(|img| stage_image(img, cfg, backbone, needs))
        .collect();
    let preps = staged.into_iter().collect::<Result<Vec<_>>>()?;
    prepare_staged(backbone, preps, cfg)
}

/// The backbone half of [`prepare_many`] for images already [`stage`]d with `cfg` (e.g. after a
/// feature-cache miss): fills each one's prefix, crops batched across the images. Refuses images
/// staged with other window settings or other recorded layers than the first, or that already
/// have a prefix.
pub fn prepare_staged(
    backbone: &dyn Backbone,
    mut preps: Vec<Prepared>,
    cfg: &InferConfig,
) -> Result<Vec<Prepared>> {
    validate(cfg)?;
    let key = PrepareKey::of(cfg);
    let Some(needs) = preps.first().map(|p| p.needs.clone()) else {
        return Ok(preps);
    };
    if let Some(k) = preps
        .iter()
        .position(|p| p.key != key || p.needs != needs || !p.chunks.is_empty())
    {
        return Err(InferError::Pipeline(format!(
            "prepare_staged: image {k} was staged with other settings or recorded layers, or already has a prefix"
        )));
    }
    let needs = &needs;
    let order: Vec<((usize, usize), (usize, usize))> = preps
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            p.windows
                .iter()
                .enumerate()
                .map(move |(k, w)| ((w.h, w.w), (i, k)))
        })
        .collect();
    // One pending batch per crop size; a full batch runs at once, the rest at the end.
    let mut pending: Vec<PendingBatch> = Vec::new();
    for (size, item) in order {
        let slot = match pending.iter().position(|(s, _)| *s == size) {
            Some(slot) => slot,
            None => {
                pending.push((size, Vec::new()));
                pending.len() - 1
            }
        };
        pending[slot].1.push(item);
        if pending[slot].1.len() == cfg.batch_size {
            let batch = std::mem::take(&mut pending[slot].1);
            run_batch(backbone, &mut preps, &batch, needs)?;
        }
    }
    for (_, batch) in pending.into_iter().filter(|(_, b)| !b.is_empty()) {
        run_batch(backbone, &mut preps, &batch, needs)?;
    }
    for p in &mut preps {
        p.chunks.sort_by_key(|c| c.start);
    }
    Ok(preps)
}

/// Crops of one size `(h, w)` waiting for a full batch, as `(image, window)` pairs.
type PendingBatch = ((usize, usize), Vec<(usize, usize)>);

/// Run the prefix on a batch of `(image, window)` pairs (same crop size; each image's windows
/// consecutive and in order) and hand each image its rows.
fn run_batch(
    backbone: &dyn Backbone,
    preps: &mut [Prepared],
    batch: &[(usize, usize)],
    needs: &Needs,
) -> Result<()> {
    // Consecutive runs of the same image: (image, first window, count).
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for &(i, k) in batch {
        match runs.last_mut() {
            Some((ri, rk, n)) if *ri == i && *rk + *n == k => *n += 1,
            _ => runs.push((i, k, 1)),
        }
    }
    let device = backbone.device();
    let crops: Vec<Tensor> = runs
        .iter()
        .map(|&(i, k, n)| preps[i].crops(k, n, device))
        .collect::<Result<_>>()?;
    let crops = if crops.len() == 1 {
        crops[0].clone()
    } else {
        Tensor::cat(&crops, 0)?
    };
    let prefix = backbone.prefix(&crops, needs)?;
    let mut row = 0;
    for (i, k, n) in runs {
        let part = if n == batch.len() {
            prefix.clone()
        } else {
            prefix.narrow(row, n)?
        };
        preps[i].chunks.push(Chunk {
            start: k,
            prefix: part,
        });
        row += n;
    }
    Ok(())
}

/// The plugins of a pipeline, by stage.
struct Plan<'a> {
    attention: Option<&'a dyn Refiner>,
    features: Vec<&'a dyn Refiner>,
    dense: Vec<&'a dyn Refiner>,
    labels: Vec<&'a dyn Refiner>,
}

impl<'a> Plan<'a> {
    fn new(
        pipeline: &[Step<'a>],
        backbone: &dyn Backbone,
        cfg: &InferConfig,
        prepared: &Prepared,
    ) -> Result<Plan<'a>> {
        let mut plan = Plan {
            attention: None,
            features: vec![],
            dense: vec![],
            labels: vec![],
        };
        for pair in pipeline.windows(2) {
            if pair[1].0 < pair[0].0 {
                return Err(InferError::Pipeline(format!(
                    "plugin `{}` ({} stage) is listed after `{}` ({} stage); list plugins in pipeline order",
                    pair[1].1.name(),
                    pair[1].0,
                    pair[0].1.name(),
                    pair[0].0
                )));
            }
        }
        for &(stage, r) in pipeline {
            check_needs(r, &prepared.needs)?;
            match stage {
                Stage::Attention => {
                    if let Some(first) = plan.attention {
                        return Err(InferError::Pipeline(format!(
                            "two attention-stage plugins (`{}` and `{}`); the last block has one attention",
                            first.name(),
                            r.name()
                        )));
                    }
                    plan.attention = Some(r);
                }
                Stage::Features => plan.features.push(r),
                Stage::DenseLogits => plan.dense.push(r),
                Stage::Labels => plan.labels.push(r),
            }
        }
        let names = backbone.builtin_attention_names();
        if plan.attention.is_none() && !names.contains(&cfg.attention.as_str()) {
            return Err(InferError::Config {
                key: "attention",
                msg: format!(
                    "unknown built-in attention `{}`; known: {}",
                    cfg.attention,
                    names.join(", ")
                ),
            });
        }
        Ok(plan)
    }
}

impl Plan<'_> {
    /// Whether an attention- or feature-stage plugin runs (they may read the crops, the
    /// prefix's records and the image; the built-in attention and the head read only the last
    /// block's input).
    fn reads_crops(&self) -> bool {
        self.attention.is_some() || !self.features.is_empty()
    }
}

fn check_needs(r: &dyn Refiner, have: &Needs) -> Result<()> {
    let want = r.needs();
    let missing = |w: &std::collections::BTreeSet<usize>, h: &std::collections::BTreeSet<usize>| {
        w.difference(h).copied().collect::<Vec<_>>()
    };
    for (what, m) in [
        (
            "the attention probabilities of layers",
            missing(&want.attn_probs, &have.attn_probs),
        ),
        ("q, k, v of layers", missing(&want.qkv, &have.qkv)),
    ] {
        if !m.is_empty() {
            return Err(InferError::MissingNeeds {
                plugin: r.name().to_string(),
                what: format!("{what} {m:?}"),
            });
        }
    }
    Ok(())
}

/// Cosine logits: features `(B, E, h, w)` (L2-normalised) against text `(Q, E)` → `(B, Q, h, w)`,
/// in f32 whatever the backbone dtype.
fn cosine_logits(feats: &Tensor, text: &Tensor) -> Result<Tensor> {
    let (b, e, h, w) = feats.dims4()?;
    let (q, te) = text.dims2()?;
    if te != e {
        return Err(InferError::Shape {
            what: "text classifier",
            expected: format!("(Q, {e})"),
            got: vec![q, te],
        });
    }
    let f = feats.to_dtype(DType::F32)?.reshape((b, e, h * w))?;
    let t = text.to_dtype(DType::F32)?.to_device(feats.device())?;
    let t = t.unsqueeze(0)?.broadcast_as((b, q, e))?.contiguous()?;
    Ok(t.matmul(&f)?.reshape((b, q, h, w))?)
}

/// The last block, head, feature plugins and cosine for one chunk: `(B, Q, h', w')` logits.
fn chunk_logits(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    chunk: &Chunk,
    classifier: &Classifier,
    cfg: &InferConfig,
    plan: &Plan<'_>,
) -> Result<Tensor> {
    let p = &chunk.prefix;
    if !plan.reads_crops() {
        return builtin_logits(backbone, &p.tokens, p.grid, classifier, cfg);
    }
    let b = p.tokens.dim(0)?;
    let crops = prepared.crops(chunk.start, b, backbone.device())?;
    let ctx = AttentionCtx {
        backbone,
        x: &p.tokens,
        grid: p.grid,
        prefix: p,
        crops: &crops,
        text: &classifier.text,
    };
    let out = match plan.attention {
        Some(r) => r.attention(&ctx)?,
        None => backbone.builtin_attention(&cfg.attention, &p.tokens, p.grid)?,
    };
    let mut fm = FeatureMap {
        feats: backbone.head(&out, p.grid)?,
        normalised: false,
    };
    let fctx = FeatureCtx {
        backbone,
        prefix: p,
        crops: &crops,
        text: &classifier.text,
    };
    for r in &plan.features {
        let (b, e) = (fm.feats.dim(0)?, fm.feats.dim(1)?);
        fm = r.features(fm, &fctx)?;
        check_plugin_features(r.name(), &fm.feats, b, e)?;
    }
    feature_logits(fm, classifier)
}

/// What a feature-stage plugin returns must still be `(B, E, h, w)` floats with the `B` crops
/// and `E` channels it was given (the cosine with the text embeddings needs them; `h, w` may
/// change, as LoftUp's upsampling does): otherwise an error naming the plugin, not a quiet cast
/// or a shape error blamed on the text classifier.
fn check_plugin_features(name: &str, feats: &Tensor, b: usize, e: usize) -> Result<()> {
    let dims = feats.dims();
    if dims.len() != 4 || dims[0] != b || dims[1] != e || !feats.dtype().is_float() {
        return Err(InferError::Pipeline(format!(
            "plugin `{name}` (stage features) returned a {:?} tensor of shape {dims:?}; expected floats (B, E, h, w) with B = {b} crops and E = {e} channels, as it was given",
            feats.dtype()
        )));
    }
    Ok(())
}

/// [`chunk_logits`] without plugins: the built-in attention on the last block's input
/// `x: (B, 1 + gh·gw, D)`, the head and the cosine → `(B, Q, gh, gw)`. Reads nothing but `x`,
/// so `x` may hold the crops of several images.
fn builtin_logits(
    backbone: &dyn Backbone,
    x: &Tensor,
    grid: (usize, usize),
    classifier: &Classifier,
    cfg: &InferConfig,
) -> Result<Tensor> {
    let out = backbone.builtin_attention(&cfg.attention, x, grid)?;
    let fm = FeatureMap {
        feats: backbone.head(&out, grid)?,
        normalised: false,
    };
    feature_logits(fm, classifier)
}

/// Features `(B, E, h, w)` → cosine logits `(B, Q, h, w)` (L2-normalised in f32 first unless
/// a plugin already did).
fn feature_logits(fm: FeatureMap, classifier: &Classifier) -> Result<Tensor> {
    // The normalisation runs in f32 whatever the backbone dtype.
    let feats = fm.feats.to_dtype(DType::F32)?;
    let feats = if fm.normalised {
        feats
    } else {
        l2_normalise(&feats, 1)?
    };
    cosine_logits(&feats, &classifier.text)
}

/// Run every configuration-dependent stage on a prepared image. `pipeline` lists the plugins in
/// pipeline order with their stages; `background` is the background class index, where the
/// class list has one. Results are identical to [`segment`] with the same arguments.
pub fn finish(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    classifier: &Classifier,
    cfg: &InferConfig,
    pipeline: &[Step<'_>],
    background: Option<usize>,
) -> Result<Segmentation> {
    finish_impl(
        backbone, prepared, classifier, cfg, pipeline, background, None,
    )
}

/// [`finish`], also returning the intermediate tensors (crop logits, canvas, dense logits).
pub fn finish_traced(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    classifier: &Classifier,
    cfg: &InferConfig,
    pipeline: &[Step<'_>],
    background: Option<usize>,
) -> Result<(Segmentation, Trace)> {
    let mut trace = Trace::default();
    let seg = finish_impl(
        backbone,
        prepared,
        classifier,
        cfg,
        pipeline,
        background,
        Some(&mut trace),
    )?;
    Ok((seg, trace))
}

fn check_key(prepared: &Prepared, cfg: &InferConfig) -> Result<()> {
    let (have, want) = (&prepared.key, PrepareKey::of(cfg));
    let mismatch = |key, a: String, b: String| {
        Err(InferError::PreparedMismatch {
            key,
            prepared: a,
            asked: b,
        })
    };
    if have.mode != want.mode {
        return mismatch(
            "mode",
            format!("{:?}", have.mode),
            format!("{:?}", want.mode),
        );
    }
    if have.crop != want.crop {
        return mismatch("crop", have.crop.to_string(), want.crop.to_string());
    }
    if have.stride != want.stride {
        return mismatch("stride", have.stride.to_string(), want.stride.to_string());
    }
    if have.short_side != want.short_side {
        return mismatch(
            "short_side",
            format!("{:?}", have.short_side),
            format!("{:?}", want.short_side),
        );
    }
    Ok(())
}

/// Checks shared by both halves of [`finish`].
fn check_finish(
    prepared: &Prepared,
    classifier: &Classifier,
    cfg: &InferConfig,
    background: Option<usize>,
) -> Result<()> {
    validate(cfg)?;
    check_key(prepared, cfg)?;
    let (q, n_classes) = (classifier.query_class.len(), classifier.n_classes());
    if classifier.text.dim(0)? != q {
        return Err(InferError::Shape {
            what: "classifier text",
            expected: format!("({q}, E) (one row per query)"),
            got: classifier.text.dims().to_vec(),
        });
    }
    if background.is_some_and(|b| b >= n_classes) {
        return Err(InferError::Config {
            key: "background",
            msg: format!("class index ≥ {n_classes} classes"),
        });
    }
    Ok(())
}

fn check_prefix(prepared: &Prepared) -> Result<()> {
    if prepared.has_prefix() {
        return Ok(());
    }
    Err(InferError::Pipeline(
        "the prefix of this image was taken (`take_prefix`); restore it before computing dense logits".into(),
    ))
}

fn finish_impl(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    classifier: &Classifier,
    cfg: &InferConfig,
    pipeline: &[Step<'_>],
    background: Option<usize>,
    trace: Option<&mut Trace>,
) -> Result<Segmentation> {
    check_finish(prepared, classifier, cfg, background)?;
    check_prefix(prepared)?;
    let plan = Plan::new(pipeline, backbone, cfg, prepared)?;
    let dense = dense_logits_impl(backbone, prepared, classifier, cfg, &plan, trace)?;
    postprocess_impl(
        backbone, prepared, &dense, classifier, cfg, &plan, background,
    )
}

/// Dense logits `(Q, h, w)` at the original image size: the output of the attention and
/// feature stages, stitched and resized. The input of [`postprocess`].
///
/// On the CPU they are held as a host vector; on a GPU they stay on the device (f32), so that
/// [`postprocess`] runs the softmax there and only the class probabilities come back.
#[derive(Debug, Clone)]
pub struct DenseLogits {
    data: DenseData,
    queries: usize,
    size: (usize, usize),
}

#[derive(Debug, Clone)]
enum DenseData {
    Host(Vec<f32>),
    Device(Tensor),
}

impl DenseData {
    /// f32 planes, kept on their device when `on_device`, else copied to a host vector.
    fn of(t: Tensor, on_device: bool) -> Result<DenseData> {
        let t = t.to_dtype(DType::F32)?;
        Ok(match on_device {
            true => DenseData::Device(t),
            false => DenseData::Host(t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?),
        })
    }

    /// A CPU tensor of shape `dims` (a copy), for traces and [`DenseLogits::to_tensor`].
    fn to_cpu(&self, dims: (usize, usize, usize)) -> Result<Tensor> {
        Ok(match self {
            DenseData::Host(v) => Tensor::from_slice(v, dims, &Device::Cpu)?,
            DenseData::Device(t) => t.to_device(&Device::Cpu)?,
        })
    }
}

impl DenseLogits {
    /// The logits as a `(Q, h, w)` f32 tensor on the CPU.
    pub fn to_tensor(&self) -> Result<Tensor> {
        self.data.to_cpu((self.queries, self.size.0, self.size.1))
    }
    /// Bytes held (host or device memory), for cache budgets.
    pub fn bytes(&self) -> usize {
        let (h, w) = self.size;
        self.queries * h * w * std::mem::size_of::<f32>()
    }
}

/// Whether the dense path runs on the backbone's device: on every device but the CPU (where
/// the host path, streamed and parallel over planes, is faster and the reference).
fn dense_on_device(device: &Device) -> bool {
    !device.is_cpu() || force_device_path()
}

#[cfg(test)]
thread_local! {
    static FORCE_DEVICE_PATH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests run the device path on the CPU to compare it with the host path.
#[cfg(test)]
fn force_device_path() -> bool {
    FORCE_DEVICE_PATH.with(|f| f.get())
}

#[cfg(not(test))]
fn force_device_path() -> bool {
    false
}

/// The first half of [`finish`]: last block (attention plugin or `cfg.attention`), head,
/// feature-stage plugins, cosine logits, stitching and the resize to the original size.
/// Dense- and label-stage plugins in `pipeline` are ignored here; thresholds and `logit_scale`
/// are not used. Configurations that agree on everything up to here can share the result and
/// differ only in [`postprocess`].
pub fn dense_logits(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    classifier: &Classifier,
    cfg: &InferConfig,
    pipeline: &[Step<'_>],
) -> Result<DenseLogits> {
    check_finish(prepared, classifier, cfg, None)?;
    check_prefix(prepared)?;
    let plan = Plan::new(pipeline, backbone, cfg, prepared)?;
    dense_logits_impl(backbone, prepared, classifier, cfg, &plan, None)
}

/// Whether [`dense_logits_many`] runs the crops of several images together for `cfg` and
/// `pipeline`: slide mode and no attention- or feature-stage plugin (plugins at those stages
/// may read each image's crops and records, so they see one image at a time).
pub fn dense_batches_across_images(cfg: &InferConfig, pipeline: &[Step<'_>]) -> bool {
    cfg.mode == Mode::Slide
        && !pipeline
            .iter()
            .any(|(s, _)| matches!(s, Stage::Attention | Stage::Features))
}

/// [`dense_logits`] for several prepared images, in order, with the same results. Where the
/// pipeline has no attention- or feature-stage plugin (the built-in attention) and the images
/// were prepared in slide mode, the last block, head and cosine run on the crops of all the
/// images together: on a GPU the per-image last block (8 crops of a VOC image) is bound by
/// launches, not arithmetic. Consecutive chunks (an image's crops from one prefix batch) are
/// joined until they hold `cfg.batch_size` crops, never split; a chunk of another crop size
/// starts a new batch. Otherwise each image runs alone.
pub fn dense_logits_many(
    backbone: &dyn Backbone,
    prepared: &[&Prepared],
    classifier: &Classifier,
    cfg: &InferConfig,
    pipeline: &[Step<'_>],
) -> Result<Vec<DenseLogits>> {
    let mut plans = Vec::with_capacity(prepared.len());
    for p in prepared {
        check_finish(p, classifier, cfg, None)?;
        check_prefix(p)?;
        plans.push(Plan::new(pipeline, backbone, cfg, p)?);
    }
    let together = dense_batches_across_images(cfg, pipeline)
        && plans.iter().all(|plan| !plan.reads_crops())
        && prepared.iter().all(|p| p.key.mode == Mode::Slide);
    if !together {
        return prepared
            .iter()
            .zip(&plans)
            .map(|(p, plan)| dense_logits_impl(backbone, p, classifier, cfg, plan, None))
            .collect();
    }
    let q = classifier.query_class.len();
    let on_device = dense_on_device(backbone.device());
    let mut canvases: Vec<Stitcher> = prepared
        .iter()
        .map(|p| Stitcher::new(q, p.resized, on_device))
        .collect();
    // Every chunk of every image, in order; batches of consecutive chunks with the same token
    // shape, closed once they hold `batch_size` crops.
    let chunks: Vec<(usize, &Chunk)> = prepared
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.chunks.iter().map(move |c| (i, c)))
        .collect();
    let mut k = 0;
    while k < chunks.len() {
        let first = &chunks[k].1.prefix;
        let (dims, grid) = (first.tokens.dims().to_vec(), first.grid);
        let mut end = k;
        let mut rows = 0;
        while end < chunks.len() && rows < cfg.batch_size.max(1) {
            let p = &chunks[end].1.prefix;
            if p.grid != grid || p.tokens.dims()[1..] != dims[1..] {
                break;
            }
            rows += p.tokens.dim(0)?;
            end += 1;
        }
        let batch = &chunks[k..end];
        let x = match batch {
            [(_, c)] => c.prefix.tokens.clone(),
            _ => Tensor::cat(
                &batch
                    .iter()
                    .map(|(_, c)| &c.prefix.tokens)
                    .collect::<Vec<_>>(),
                0,
            )?,
        };
        let logits = builtin_logits(backbone, &x, grid, classifier, cfg)?;
        let mut row = 0;
        for &(i, c) in batch {
            let n = c.prefix.tokens.dim(0)?;
            let part = match batch.len() {
                1 => logits.clone(),
                _ => logits.narrow(0, row, n)?,
            };
            canvases[i].add(&part, &prepared[i].windows[c.start..c.start + n])?;
            row += n;
        }
        k = end;
    }
    prepared
        .iter()
        .zip(canvases)
        .map(|(p, canvas)| DenseLogits::resized(canvas.average()?, q, p.resized, p.original_size()))
        .collect()
}

/// The second half of [`finish`]: dense-stage plugins, class probabilities (softmax of
/// `logit_scale ·` logits, synonym max), `area_thd`, argmax, `prob_thd` and label-stage plugins.
/// Attention- and feature-stage plugins in `pipeline` are ignored here.
/// `dense_logits(..) + postprocess(..)` is [`finish`], to the bit.
pub fn postprocess(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    dense: &DenseLogits,
    classifier: &Classifier,
    cfg: &InferConfig,
    pipeline: &[Step<'_>],
    background: Option<usize>,
) -> Result<Segmentation> {
    check_finish(prepared, classifier, cfg, background)?;
    check_dense(prepared, dense, classifier)?;
    let plan = Plan::new(pipeline, backbone, cfg, prepared)?;
    postprocess_impl(
        backbone, prepared, dense, classifier, cfg, &plan, background,
    )
}

/// One image's class probabilities `(C, h, w)` f32: the dense-stage plugins of `pipeline`, then
/// SCLIP's synonym softmax with `cfg.logit_scale` (the first half of [`postprocess`]). They
/// depend on nothing else of `cfg` but `short_side` (which dense-stage plugins see), so
/// configurations that differ only in `prob_thd`, `area_thd`, the background class or
/// label-stage plugins can share them ([`labels_from_probs`]).
pub fn class_probabilities(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    dense: &DenseLogits,
    classifier: &Classifier,
    cfg: &InferConfig,
    pipeline: &[Step<'_>],
) -> Result<ClassProbs> {
    check_finish(prepared, classifier, cfg, None)?;
    check_dense(prepared, dense, classifier)?;
    let plan = Plan::new(pipeline, backbone, cfg, prepared)?;
    probs_impl(backbone, prepared, dense, classifier, cfg, &plan)
}

/// The second half of [`postprocess`]: `cfg`'s thresholds (`area_thd`, `prob_thd`) on `probs`
/// (from [`class_probabilities`] of the same image), then the label-stage plugins of
/// `pipeline`. Equal to [`postprocess`] with the same settings.
pub fn labels_from_probs(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    probs: &ClassProbs,
    classifier: &Classifier,
    cfg: &InferConfig,
    pipeline: &[Step<'_>],
    background: Option<usize>,
) -> Result<Segmentation> {
    check_finish(prepared, classifier, cfg, background)?;
    let (h, w) = prepared.original_size();
    if probs.probs.dims() != [classifier.n_classes(), h, w] {
        return Err(InferError::Shape {
            what: "class probabilities for labels_from_probs",
            expected: format!(
                "({}, {h}, {w}) (this classifier's classes, this image's size)",
                classifier.n_classes()
            ),
            got: probs.probs.dims().to_vec(),
        });
    }
    let plan = Plan::new(pipeline, backbone, cfg, prepared)?;
    labels_impl(prepared, probs, cfg, &plan, background)
}

/// Class probabilities `(C, h, w)` f32 of one image ([`class_probabilities`]): on the CPU for
/// the host path, on the backbone's device for the device path.
#[derive(Debug, Clone)]
pub struct ClassProbs {
    probs: Tensor,
    /// Computed by the device path (thresholded there too).
    on_device: bool,
}

impl ClassProbs {
    /// The probabilities `(C, h, w)` f32.
    pub fn tensor(&self) -> &Tensor {
        &self.probs
    }

    /// Bytes held (host or device memory).
    pub fn bytes(&self) -> usize {
        self.probs.elem_count() * std::mem::size_of::<f32>()
    }
}

/// Dense logits made for this image and classifier.
fn check_dense(prepared: &Prepared, dense: &DenseLogits, classifier: &Classifier) -> Result<()> {
    if dense.queries != classifier.query_class.len() || dense.size != prepared.original_size() {
        return Err(InferError::Shape {
            what: "dense logits for postprocess",
            expected: format!(
                "({}, {}, {}) (this classifier's queries, this image's size)",
                classifier.query_class.len(),
                prepared.image.h,
                prepared.image.w
            ),
            got: vec![dense.queries, dense.size.0, dense.size.1],
        });
    }
    Ok(())
}

fn dense_logits_impl(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    classifier: &Classifier,
    cfg: &InferConfig,
    plan: &Plan<'_>,
    mut trace: Option<&mut Trace>,
) -> Result<DenseLogits> {
    let q = classifier.query_class.len();
    let (h, w) = prepared.original_size();
    let (rh, rw) = prepared.resized;
    let on_device = dense_on_device(backbone.device());
    let mut canvas = Stitcher::new(q, (rh, rw), on_device);
    let mut whole: Option<(DenseData, (usize, usize))> = None;
    for chunk in &prepared.chunks {
        let logits = chunk_logits(backbone, prepared, chunk, classifier, cfg, plan)?;
        let (b, _, gh, gw) = logits.dims4()?;
        if let Some(t) = trace.as_deref_mut() {
            t.crop_logits.push(logits.to_device(&Device::Cpu)?);
        }
        match prepared.key.mode {
            Mode::Slide => {
                canvas.add(&logits, &prepared.windows[chunk.start..chunk.start + b])?;
            }
            // SCLIP's whole mode upsamples the grid logits straight to the original size.
            Mode::Whole => whole = Some((DenseData::of(logits.get(0)?, on_device)?, (gh, gw))),
        }
    }
    let (grid, from) = match whole {
        Some(w) => w,
        None => {
            let avg = canvas.average()?;
            if let Some(t) = trace.as_deref_mut() {
                t.canvas = Some(avg.to_cpu((q, rh, rw))?);
            }
            (avg, (rh, rw))
        }
    };
    let logits = DenseLogits::resized(grid, q, from, (h, w))?;
    if let Some(t) = trace {
        t.dense_logits = Some(logits.data.to_cpu((q, h, w))?);
    }
    Ok(logits)
}

impl DenseLogits {
    /// `Q` planes of `from = (h', w')` (a stitched canvas or a whole-mode grid) resized to the
    /// original `(h, w)`, where they are (host or device).
    fn resized(
        grid: DenseData,
        q: usize,
        from: (usize, usize),
        (h, w): (usize, usize),
    ) -> Result<DenseLogits> {
        let data = match grid {
            DenseData::Host(v) => DenseData::Host(resize_planes(&v, q, from, (h, w))),
            DenseData::Device(t) => DenseData::Device(resize_device(&t, (h, w))?),
        };
        Ok(DenseLogits {
            data,
            queries: q,
            size: (h, w),
        })
    }
}

/// SCLIP's slide canvas, on the host (CPU backbones) or on the backbone's device (see
/// `device_dense.rs`: the crop logits never leave the device).
enum Stitcher {
    Host(Canvas),
    Device(DeviceCanvas),
}

impl Stitcher {
    /// An empty canvas of `q` planes of the resized image `(rh, rw)`, on the device or host.
    fn new(q: usize, (rh, rw): (usize, usize), on_device: bool) -> Stitcher {
        match on_device {
            false => Stitcher::Host(Canvas::new(q, rh, rw)),
            true => Stitcher::Device(DeviceCanvas::new(q, rh, rw)),
        }
    }

    /// Add a chunk of crop logits `(B, Q, gh, gw)` with their `B` windows.
    fn add(&mut self, logits: &Tensor, wins: &[Window]) -> Result<()> {
        match self {
            Stitcher::Host(c) => {
                let (_, q, gh, gw) = logits.dims4()?;
                let data: Vec<f32> = logits.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
                for (plane, win) in data.chunks(q * gh * gw).zip(wins) {
                    c.add(plane, (gh, gw), *win);
                }
                Ok(())
            }
            Stitcher::Device(c) => c.add(logits, wins),
        }
    }

    /// The average over windows, `(Q, H, W)`.
    fn average(self) -> Result<DenseData> {
        Ok(match self {
            Stitcher::Host(c) => DenseData::Host(c.average()?),
            Stitcher::Device(c) => DenseData::Device(c.average()?),
        })
    }
}

fn postprocess_impl(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    dense: &DenseLogits,
    classifier: &Classifier,
    cfg: &InferConfig,
    plan: &Plan<'_>,
    background: Option<usize>,
) -> Result<Segmentation> {
    let probs = probs_impl(backbone, prepared, dense, classifier, cfg, plan)?;
    labels_impl(prepared, &probs, cfg, plan, background)
}

fn probs_impl(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    dense: &DenseLogits,
    classifier: &Classifier,
    cfg: &InferConfig,
    plan: &Plan<'_>,
) -> Result<ClassProbs> {
    let n_classes = classifier.n_classes();
    let (h, w) = prepared.original_size();
    Ok(
        match dense_stage(backbone, prepared, classifier, cfg, plan, &dense.data)? {
            DenseData::Host(p) => ClassProbs {
                probs: Tensor::from_vec(p, (n_classes, h, w), &Device::Cpu)?,
                on_device: false,
            },
            DenseData::Device(p) => ClassProbs {
                probs: p,
                on_device: true,
            },
        },
    )
}

fn labels_impl(
    prepared: &Prepared,
    probs: &ClassProbs,
    cfg: &InferConfig,
    plan: &Plan<'_>,
    background: Option<usize>,
) -> Result<Segmentation> {
    let (n_classes, h, w) = probs.probs.dims3()?;
    let labels = match probs.on_device {
        true => threshold_labels_device(&probs.probs, cfg.area_thd, cfg.prob_thd, background)?,
        false => {
            // The host probabilities in place (a CPU tensor made from their vector).
            let (storage, layout) = probs.probs.storage_and_layout();
            let p = match (&*storage, layout.contiguous_offsets()) {
                (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
                    &v[a..b]
                }
                _ => {
                    return Err(InferError::Pipeline(
                        "host class probabilities are not a contiguous f32 CPU tensor".into(),
                    ))
                }
            };
            threshold_labels(p, n_classes, cfg.area_thd, cfg.prob_thd, background)
        }
    };
    let mut labels = Tensor::from_vec(labels, (h, w), &Device::Cpu)?;
    let lctx = LabelCtx {
        image: &prepared.image,
        probs: &probs.probs,
        background,
    };
    for r in &plan.labels {
        let out = r.labels(labels, &lctx)?;
        // Class ids: an integer tensor of the image's size. A float one would be cast to ids
        // without a word.
        if out.dtype().is_float() || out.dims() != [h, w] {
            return Err(InferError::Pipeline(format!(
                "plugin `{}` (stage labels) returned a {:?} tensor of shape {:?}; expected integer class ids (u32) of shape ({h}, {w}), as it was given",
                r.name(),
                out.dtype(),
                out.dims()
            )));
        }
        labels = out.to_device(&Device::Cpu)?.to_dtype(DType::U32)?;
    }
    Ok(Segmentation {
        probs: probs.probs.clone(),
        labels,
    })
}

/// Dense-stage plugins, then class probabilities `(C, h, w)` f32: on the host for host dense
/// logits, on the device for device dense logits.
fn dense_stage(
    backbone: &dyn Backbone,
    prepared: &Prepared,
    classifier: &Classifier,
    cfg: &InferConfig,
    plan: &Plan<'_>,
    logits: &DenseData,
) -> Result<DenseData> {
    let (q, n_classes) = (classifier.query_class.len(), classifier.n_classes());
    let (h, w) = prepared.original_size();
    let qc = &classifier.query_class;
    if plan.dense.is_empty() {
        return Ok(match logits {
            DenseData::Host(v) => DenseData::Host(class_probs(v, cfg.logit_scale, qc, n_classes)?),
            DenseData::Device(t) => {
                DenseData::Device(class_probs_device(t, cfg.logit_scale, qc, n_classes)?)
            }
        });
    }
    let on_device = matches!(logits, DenseData::Device(_));
    let device = backbone.device();
    let mut maps = DenseMaps::Logits(match logits {
        DenseData::Host(v) => Tensor::from_slice(v, (q, h, w), &Device::Cpu)?.to_device(device)?,
        DenseData::Device(t) => t.to_device(device)?,
    });
    let ctx = DenseCtx {
        image: &prepared.image,
        logit_scale: cfg.logit_scale,
        query_class: &classifier.query_class,
        n_classes,
        short_side: cfg.short_side,
        device,
    };
    for r in &plan.dense {
        maps = r.dense(maps, &ctx)?;
    }
    // A plugin's output, shape-checked, as f32 planes where the dense logits were.
    let planes = |t: &Tensor, rows: usize, what: &'static str| -> Result<DenseData> {
        if t.dims() != [rows, h, w] {
            return Err(InferError::Shape {
                what,
                expected: format!("({rows}, {h}, {w})"),
                got: t.dims().to_vec(),
            });
        }
        DenseData::of(t.to_device(device)?, on_device)
    };
    Ok(match maps {
        DenseMaps::Logits(t) => match planes(&t, q, "dense logits")? {
            DenseData::Host(v) => DenseData::Host(class_probs(&v, cfg.logit_scale, qc, n_classes)?),
            DenseData::Device(t) => {
                DenseData::Device(class_probs_device(&t, cfg.logit_scale, qc, n_classes)?)
            }
        },
        DenseMaps::Probs(t) => planes(&t, n_classes, "dense probabilities")?,
    })
}

/// [`prepare`] then [`finish`] for one image and one configuration.
pub fn segment(
    backbone: &dyn Backbone,
    image: &RgbImage,
    classifier: &Classifier,
    cfg: &InferConfig,
    pipeline: &[Step<'_>],
    background: Option<usize>,
) -> Result<Segmentation> {
    let prepared = prepare(backbone, image, cfg, &needs_of(pipeline))?;
    finish(backbone, &prepared, classifier, cfg, pipeline, background)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeBackbone;

    fn image(h: usize, w: usize) -> RgbImage {
        let data = (0..h * w * 3)
            .map(|i| ((i * 7919 / 3) % 256) as u8)
            .collect();
        RgbImage::new(h, w, data).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        flat(a)
            .iter()
            .zip(flat(b))
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    /// The fake backbone and a 3-class classifier with synonyms (5 queries).
    fn fake_with_classifier() -> (FakeBackbone, Classifier) {
        let bb = FakeBackbone::new(5).unwrap();
        let queries: Vec<String> = ["sky", "wall", "cat", "dog", "puppy"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cls = Classifier {
            text: bb.encode_text(&queries).unwrap(),
            query_class: vec![0, 0, 1, 2, 2],
            queries,
            class_names: ["background", "cat", "dog"].map(String::from).to_vec(),
        };
        (bb, cls)
    }

    /// The GPU's dense path (stitching and resizing as matrix products, softmax as tensor ops),
    /// forced onto the CPU, against the host path: same canvas, dense logits, probabilities and
    /// labels, in slide and whole mode, on a non-square image.
    #[test]
    fn issue_7_device_dense_path_equals_the_host_path() {
        let (bb, cls) = fake_with_classifier();
        for mode in [Mode::Slide, Mode::Whole] {
            let cfg = InferConfig {
                mode,
                short_side: Some(90),
                crop: 64,
                stride: 40,
                batch_size: 3,
                area_thd: Some(0.05),
                ..InferConfig::default()
            };
            let img = image(73, 131);
            let run = |force: bool| {
                FORCE_DEVICE_PATH.with(|f| f.set(force));
                let prepared = prepare(&bb, &img, &cfg, &Needs::default());
                let out = prepared.and_then(|p| {
                    let seg = finish_traced(&bb, &p, &cls, &cfg, &[], Some(0))?;
                    Ok((p, seg))
                });
                FORCE_DEVICE_PATH.with(|f| f.set(false));
                out.unwrap()
            };
            let (prepared, (host, host_trace)) = run(false);
            let (prepared_dev, (dev, dev_trace)) = run(true);
            // The device path with segsweep-kernels' post-processing ops (their CPU
            // implementations) gives the same probabilities and labels.
            let (_, (kern, _)) = segsweep_kernels::forced(|| run(true));
            assert!(max_diff(&host.probs, &kern.probs) < 1e-5, "{mode:?}");
            assert_eq!(flat(&host.labels), flat(&kern.labels), "{mode:?}");
            // Crops cut from the uploaded image equal crops cut on the host, to the bit.
            assert!(prepared.norm_dev.is_none() && prepared_dev.norm_dev.is_some());
            let n = prepared.windows.len();
            assert_eq!(
                flat(&prepared.crops(0, n, &Device::Cpu).unwrap()),
                flat(&prepared_dev.crops(0, n, &Device::Cpu).unwrap())
            );
            let d = |a: &Option<Tensor>, b: &Option<Tensor>| {
                max_diff(a.as_ref().unwrap(), b.as_ref().unwrap())
            };
            if mode == Mode::Slide {
                assert!(prepared.windows.len() > 3, "{:?}", prepared.windows);
                assert!(d(&host_trace.canvas, &dev_trace.canvas) < 1e-5);
            }
            assert!(d(&host_trace.dense_logits, &dev_trace.dense_logits) < 1e-5);
            assert!(max_diff(&host.probs, &dev.probs) < 1e-5, "{mode:?}");
            assert_eq!(flat(&host.labels), flat(&dev.labels), "{mode:?}");
        }
    }

    /// `class_probabilities` once, then `labels_from_probs` for several thresholds, equals
    /// `postprocess` for each, bit for bit, on the host path and on the device path; and
    /// probabilities of another image size are refused.
    #[test]
    fn shared_class_probabilities_equal_postprocess() {
        let (bb, cls) = fake_with_classifier();
        let base = InferConfig {
            short_side: Some(90),
            crop: 64,
            stride: 40,
            batch_size: 3,
            logit_scale: 10.0,
            ..InferConfig::default()
        };
        let thresholds = [(0.0, None), (0.6, None), (0.9, Some(0.3)), (0.95, None)];
        for force in [false, true] {
            FORCE_DEVICE_PATH.with(|f| f.set(force));
            let prepared = prepare(&bb, &image(73, 131), &base, &Needs::default()).unwrap();
            let dense = dense_logits(&bb, &prepared, &cls, &base, &[]).unwrap();
            let probs = class_probabilities(&bb, &prepared, &dense, &cls, &base, &[]).unwrap();
            assert_eq!(probs.tensor().dims(), [3, 73, 131]);
            let mut distinct = std::collections::BTreeSet::new();
            for (prob_thd, area_thd) in thresholds {
                let cfg = InferConfig {
                    prob_thd,
                    area_thd,
                    ..base.clone()
                };
                let want = postprocess(&bb, &prepared, &dense, &cls, &cfg, &[], Some(0)).unwrap();
                let got =
                    labels_from_probs(&bb, &prepared, &probs, &cls, &cfg, &[], Some(0)).unwrap();
                assert_eq!(flat(&want.probs), flat(&got.probs), "device path {force}");
                assert_eq!(flat(&want.labels), flat(&got.labels), "device path {force}");
                distinct.insert(format!("{:?}", flat(&got.labels)));
            }
            let p = flat(probs.tensor());
            let (lo, hi) = p
                .iter()
                .fold((1f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(
                distinct.len() >= 3,
                "the thresholds change the labels: {} distinct, probs {lo}..{hi}",
                distinct.len()
            );
            let other = prepare(&bb, &image(80, 120), &base, &Needs::default()).unwrap();
            let err = labels_from_probs(&bb, &other, &probs, &cls, &base, &[], Some(0));
            assert!(err.is_err());
            FORCE_DEVICE_PATH.with(|f| f.set(false));
        }
    }
}
