//! The memory budget: what the runner holds per image between configurations, and what it does
//! when that would exceed `[experiment] memory_budget_mb`.
//!
//! Per image a group holds two kinds of intermediates: the backbone prefix of every window
//! (tokens plus what plugins asked it to record, e.g. ResCLIP's attention maps) and the dense
//! logits `(Q, h, w)` of the configurations that share an upstream key. The runner finishes the
//! configurations of one upstream key one after another, so one dense-logits map is alive at a
//! time and is dropped after its last configuration. What remains to decide is whether the
//! prefix stays in memory while those configurations' tails run: it does if prefix + dense logits
//! fit the budget; otherwise it is dropped and recomputed for the next upstream key (identical
//! results), or, with `spill = "f32" | "f16"`, written to a scratch file and read back.
//!
//! Sizes are measured tensor bytes ([`segsweep_infer::Prepared::prefix_bytes`],
//! [`segsweep_infer::DenseLogits::bytes`]), not estimates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use segsweep_core::{Backbone, InferConfig, Needs, RgbImage};
use segsweep_infer::Prepared;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, RunnerError};
use crate::spec::ExperimentSection;

/// Largest accepted `memory_budget_mb` (16 TiB): larger values are typos.
pub const MAX_BUDGET_MB: u64 = 1 << 24;

/// The most samples `[experiment] load_ahead` may ask to decode ahead (a larger number is an
/// error naming the key: it would hold that many decoded images).
pub const MAX_LOAD_AHEAD: usize = 4096;

/// Samples decoded ahead by default: one per CPU thread (a parallel block of that many decodes
/// in about one sample's time), at least 2 and at most 32. 32 VOC samples decode in ~2.5 ms,
/// far ahead of any GPU, while a 128-thread host would otherwise hold ~2 × 128 decoded samples
/// (several GB of Cityscapes-sized ones).
pub(crate) fn default_load_ahead() -> usize {
    rayon::current_num_threads().clamp(2, 32)
}

const MIB: u64 = 1 << 20;

/// How held intermediates over the budget are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spill {
    /// Drop and recompute.
    None,
    /// Write to a scratch file in f32 (results identical).
    F32,
    /// Write to a scratch file in f16 (half the disk traffic; results close, not identical).
    F16,
}

impl Spill {
    fn dtype(self) -> Option<DType> {
        match self {
            Spill::None => None,
            Spill::F32 => Some(DType::F32),
            Spill::F16 => Some(DType::F16),
        }
    }
}

/// The validated `[experiment]` memory settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// Bytes of intermediates the runner may hold per image.
    pub budget_bytes: u64,
    /// What happens to the prefix when it does not fit.
    pub spill: Spill,
    /// Scratch directory for spilled prefixes; `None`: `<run dir>/cache`.
    pub spill_dir: Option<PathBuf>,
    /// The persistent feature cache: [`Spill::None`] (off), or the dtype it stores.
    pub feature_cache: Spill,
    /// Its directory; `None`: `<output_dir>/.cache/features`.
    pub feature_cache_dir: Option<PathBuf>,
}

impl MemoryPlan {
    /// Validate `memory_budget_mb`, `spill` and `spill_dir`; errors name the key.
    pub fn resolve(e: &ExperimentSection, file: &str) -> Result<MemoryPlan> {
        if e.memory_budget_mb > MAX_BUDGET_MB {
            return Err(RunnerError::spec(
                file,
                "experiment.memory_budget_mb",
                format!(
                    "{} MiB is more than {MAX_BUDGET_MB} MiB (16 TiB)",
                    e.memory_budget_mb
                ),
                Some("the budget is in MiB: 1024 is 1 GiB".into()),
            ));
        }
        let mode = |key: &str, value: &str, none: &str| {
            match value {
            "none" => Ok(Spill::None),
            "f32" => Ok(Spill::F32),
            "f16" => Ok(Spill::F16),
            other => Err(RunnerError::spec(
                file,
                key,
                format!("unknown mode `{other}`"),
                Some(format!("use \"none\" ({none}), \"f32\" (exact) or \"f16\" (half the disk, close results)")),
            )),
        }
        };
        if let Some(n) = e.load_ahead.filter(|&n| n > MAX_LOAD_AHEAD) {
            return Err(RunnerError::spec(
                file,
                "experiment.load_ahead",
                format!("{n} samples is more than {MAX_LOAD_AHEAD}"),
                Some("it counts decoded samples held in memory (a VOC image and its u32 label map ~1.3 MB); leave it out for one per CPU thread (2 to 32), or 0 to decode on the runner's thread".into()),
            ));
        }
        let spill = mode("experiment.spill", &e.spill, "drop and recompute")?;
        let feature_cache = mode("experiment.feature_cache", &e.feature_cache, "no cache")?;
        for (key, dir, default) in [
            ("experiment.spill_dir", &e.spill_dir, "<run dir>/cache"),
            (
                "experiment.feature_cache_dir",
                &e.feature_cache_dir,
                "<output_dir>/.cache/features",
            ),
        ] {
            if let Some(d) = dir.as_ref().filter(|d| d.exists() && !d.is_dir()) {
                return Err(RunnerError::spec(
                    file,
                    key,
                    format!("{} exists and is not a directory", d.display()),
                    Some(format!("name a directory, or leave it out for {default}")),
                ));
            }
            if dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
                return Err(RunnerError::spec(
                    file,
                    key,
                    "is empty",
                    Some(format!("leave it out for {default}, or name a directory")),
                ));
            }
        }
        Ok(MemoryPlan {
            budget_bytes: e.memory_budget_mb * MIB,
            spill,
            spill_dir: e.spill_dir.clone(),
            feature_cache,
            feature_cache_dir: e.feature_cache_dir.clone(),
        })
    }
}

/// What the runner held and moved during one `run` call (also written to `memory.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryStats {
    /// The budget, bytes.
    pub budget_bytes: u64,
    /// `none`, `f32` or `f16`.
    pub spill: String,
    /// Images processed (over all groups).
    pub images: usize,
    /// Batches of images whose backbone prefixes ran together (crops batched across images up
    /// to `batch_size`; images read from the feature cache included).
    pub image_batches: usize,
    /// Images whose first configuration group's dense logits were computed together with
    /// other images' (the last block on the crops of a whole image batch; only for pipelines
    /// without attention- or feature-stage plugins, see `segsweep_infer::dense_logits_many`).
    pub dense_batched_images: usize,
    /// Largest prefix + dense logits held at once, bytes.
    pub peak_held_bytes: u64,
    /// Largest prefix of one image, bytes.
    pub peak_prefix_bytes: u64,
    /// Largest dense logits of one upstream key, bytes.
    pub peak_dense_bytes: u64,
    /// Images whose prefix + one dense-logits map alone exceeded the budget (nothing can be
    /// dropped below that: one configuration needs both).
    pub images_over_budget: usize,
    /// Prefixes written to scratch files.
    pub prefix_spills: usize,
    /// Bytes written to scratch files.
    pub spilled_bytes: u64,
    /// Prefixes read back from scratch files.
    pub prefix_reloads: usize,
    /// Prefixes dropped and computed again (no spill).
    pub prefix_recomputes: usize,
    /// Feature cache: `none`, `f32` or `f16`.
    pub feature_cache: String,
    /// Prefixes read from the feature cache instead of computed.
    pub feature_cache_hits: usize,
    /// Prefixes computed and written to the feature cache.
    pub feature_cache_writes: usize,
    /// Bytes written to the feature cache.
    pub feature_cache_bytes: u64,
    /// Cache entries that could not be read (removed, computed again).
    pub feature_cache_unreadable: usize,
}

impl MemoryStats {
    /// Empty statistics for a plan.
    pub fn new(plan: &MemoryPlan) -> MemoryStats {
        MemoryStats {
            budget_bytes: plan.budget_bytes,
            spill: format!("{:?}", plan.spill).to_lowercase(),
            feature_cache: format!("{:?}", plan.feature_cache).to_lowercase(),
            ..MemoryStats::default()
        }
    }

    /// Add the counters of `other` (work done elsewhere, e.g. on the thread computing the next
    /// batch's prefixes) and keep the larger peaks.
    pub fn absorb(&mut self, other: &MemoryStats) {
        let MemoryStats {
            budget_bytes: _,
            spill: _,
            images,
            image_batches,
            dense_batched_images,
            peak_held_bytes,
            peak_prefix_bytes,
            peak_dense_bytes,
            images_over_budget,
            prefix_spills,
            spilled_bytes,
            prefix_reloads,
            prefix_recomputes,
            feature_cache: _,
            feature_cache_hits,
            feature_cache_writes,
            feature_cache_bytes,
            feature_cache_unreadable,
        } = other;
        self.images += images;
        self.image_batches += image_batches;
        self.dense_batched_images += dense_batched_images;
        self.peak_held_bytes = self.peak_held_bytes.max(*peak_held_bytes);
        self.peak_prefix_bytes = self.peak_prefix_bytes.max(*peak_prefix_bytes);
        self.peak_dense_bytes = self.peak_dense_bytes.max(*peak_dense_bytes);
        self.images_over_budget += images_over_budget;
        self.prefix_spills += prefix_spills;
        self.spilled_bytes += spilled_bytes;
        self.prefix_reloads += prefix_reloads;
        self.prefix_recomputes += prefix_recomputes;
        self.feature_cache_hits += feature_cache_hits;
        self.feature_cache_writes += feature_cache_writes;
        self.feature_cache_bytes += feature_cache_bytes;
        self.feature_cache_unreadable += feature_cache_unreadable;
    }

    /// One line for the run log.
    pub fn summary(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / MIB as f64);
        let cache = match self.feature_cache.as_str() {
            "" | "none" => String::new(),
            mode => format!(
                "; feature cache ({mode}): {} hit(s), {} written ({}), {} unreadable",
                self.feature_cache_hits,
                self.feature_cache_writes,
                mib(self.feature_cache_bytes),
                self.feature_cache_unreadable
            ),
        };
        format!(
            "memory: peak held {} (prefix up to {}, dense logits up to {}) of a {} budget over {} image(s) so far in this run; \
             prefix spilled {} time(s) ({}, {} written), read back {}, recomputed {}; {} image(s) over budget{}",
            mib(self.peak_held_bytes),
            mib(self.peak_prefix_bytes),
            mib(self.peak_dense_bytes),
            mib(self.budget_bytes),
            self.images,
            self.prefix_spills,
            self.spill,
            mib(self.spilled_bytes),
            self.prefix_reloads,
            self.prefix_recomputes,
            self.images_over_budget,
            cache,
        )
    }
}

/// Where the prefix of the image in flight is.
enum State {
    Held,
    Spilled(tempfile::NamedTempFile),
    Dropped,
}

/// What every image of a group computes its prefix with: the backbone, the group's inference
/// settings, the union of the configurations' needs, the memory plan, the spill directory and
/// the feature cache (if on).
pub(crate) struct PrefixCtx<'a> {
    pub(crate) backbone: &'a dyn Backbone,
    pub(crate) cfg: &'a InferConfig,
    pub(crate) needs: &'a Needs,
    pub(crate) plan: &'a MemoryPlan,
    pub(crate) spill_dir: &'a Path,
    pub(crate) cache: Option<&'a FeatureCache>,
}

/// One image's prepared backbone pass while its configurations run: the prefix held, spilled
/// to a scratch file (deleted when this value drops) or dropped.
pub(crate) struct PrefixSlot<'a> {
    ctx: &'a PrefixCtx<'a>,
    image: &'a RgbImage,
    /// This image's key in the feature cache.
    key: Option<String>,
    prepared: Prepared,
    state: State,
    /// Bytes held elsewhere meanwhile (in pipelined mode the next image batch's prefixes),
    /// counted against the budget with this image's.
    reserve: usize,
    /// The prefix's values passed through f16 storage (an f16 feature-cache entry or f16
    /// spill), possibly before an exact round trip (f32 spill) that the prefix itself cannot
    /// tell from a computed one.
    rounded: bool,
}

impl<'a> PrefixSlot<'a> {
    /// Hold `prepared` (from [`prepare_batch`], with its feature-cache key) for `image`, while
    /// `reserve` bytes are held elsewhere.
    pub(crate) fn new(
        ctx: &'a PrefixCtx<'a>,
        image: &'a RgbImage,
        key: Option<String>,
        prepared: Prepared,
        reserve: usize,
    ) -> PrefixSlot<'a> {
        let rounded = prepared.prefix_restored_lossy();
        PrefixSlot {
            ctx,
            image,
            key,
            prepared,
            state: State::Held,
            reserve,
            rounded,
        }
    }

    /// Whether the prefix now held went through f16 storage (see [`PrefixSlot::ensure`]).
    pub(crate) fn rounded(&self) -> bool {
        self.rounded
    }

    /// The prepared image; its prefix is present after [`PrefixSlot::ensure`] (post-processing
    /// does not need it).
    pub(crate) fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// Bring the prefix back into memory: read the scratch file or recompute it.
    pub(crate) fn ensure(&mut self, stats: &mut MemoryStats) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Held) {
            State::Held => {}
            State::Spilled(file) => {
                let named = candle_core::safetensors::load(file.path(), &Device::Cpu)
                    .map_err(|e| spill_io(file.path(), candle_io(e)))?;
                let named: HashMap<String, Tensor> = named.into_iter().collect();
                self.prepared
                    .restore_prefix(named, self.ctx.backbone.device())?;
                // An f32 round trip keeps what an earlier f16 one rounded.
                self.rounded |= self.prepared.prefix_restored_lossy();
                stats.prefix_reloads += 1;
            }
            State::Dropped => {
                // From the feature cache if it has the entry, else computed again.
                let ctx = self.ctx;
                let cached = match (ctx.cache, &self.key) {
                    (Some(c), Some(key)) => {
                        c.load(key, &mut self.prepared, ctx.backbone.device(), stats)?
                    }
                    _ => false,
                };
                if cached {
                    self.rounded = self.prepared.prefix_restored_lossy();
                } else {
                    self.prepared =
                        segsweep_infer::prepare(ctx.backbone, self.image, ctx.cfg, ctx.needs)?;
                    self.rounded = false;
                    stats.prefix_recomputes += 1;
                }
            }
        }
        Ok(())
    }

    /// Called after computing a dense-logits map of `dense_bytes`: record what is held, then
    /// keep the prefix if another upstream key needs it (`needed_again`) and prefix + dense
    /// logits (+ the reserve held elsewhere) fit the budget; otherwise spill or drop it.
    pub(crate) fn release(
        &mut self,
        dense_bytes: usize,
        needed_again: bool,
        stats: &mut MemoryStats,
    ) -> Result<()> {
        let prefix = self.prepared.prefix_bytes() as u64;
        let held = prefix + dense_bytes as u64 + self.reserve as u64;
        stats.peak_prefix_bytes = stats.peak_prefix_bytes.max(prefix);
        stats.peak_dense_bytes = stats.peak_dense_bytes.max(dense_bytes as u64);
        stats.peak_held_bytes = stats.peak_held_bytes.max(held);
        if held <= self.ctx.plan.budget_bytes && needed_again {
            return Ok(());
        }
        let named = self.prepared.take_prefix()?;
        self.state = match (needed_again, self.ctx.plan.spill.dtype()) {
            (false, _) => State::Dropped,
            (true, None) => State::Dropped,
            (true, Some(dtype)) => {
                let (file, bytes) = self.write(named, dtype)?;
                stats.prefix_spills += 1;
                stats.spilled_bytes += bytes;
                State::Spilled(file)
            }
        };
        Ok(())
    }

    fn write(
        &self,
        named: Vec<(String, Tensor)>,
        dtype: DType,
    ) -> Result<(tempfile::NamedTempFile, u64)> {
        let file = save_named(named, dtype, self.ctx.spill_dir, "prefix-", spill_io)?;
        let bytes = file.1;
        Ok((file.0, bytes))
    }
}

/// Write named tensors (floats converted to `dtype`, everything moved to the CPU) to a new
/// temporary `.safetensors` file in `dir`; returns it and the tensor bytes written. I/O errors
/// go through `io_err`, which names the path and the setting to change.
fn save_named(
    named: Vec<(String, Tensor)>,
    dtype: DType,
    dir: &Path,
    prefix: &str,
    io_err: fn(&Path, std::io::Error) -> RunnerError,
) -> Result<(tempfile::NamedTempFile, u64)> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mut map: HashMap<String, Tensor> = HashMap::with_capacity(named.len());
    let mut bytes = 0u64;
    let convert = |t: Tensor| -> candle_core::Result<Tensor> {
        let t = t.to_device(&Device::Cpu)?;
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        t.contiguous()
    };
    for (name, t) in named {
        let t = convert(t).map_err(segsweep_core::CoreError::from)?;
        bytes += (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        map.insert(name, t);
    }
    let file = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".safetensors")
        .tempfile_in(dir)
        .map_err(|e| io_err(dir, e))?;
    candle_core::safetensors::save(&map, file.path())
        .map_err(|e| io_err(file.path(), candle_io(e)))?;
    Ok((file, bytes))
}

/// Run the backbone prefix on a batch of images, recording `ctx.needs`: crops are batched
/// across the images (`segsweep_infer::prepare_many`). With a feature cache, an image whose
/// entry exists is read from it instead, and the others are written to it; each image is
/// resized and normalised once either way. Returns each image's prepared pass and its cache key,
/// in order.
pub(crate) fn prepare_batch(
    ctx: &PrefixCtx<'_>,
    images: &[&RgbImage],
    stats: &mut MemoryStats,
) -> Result<Vec<(Prepared, Option<String>)>> {
    let (backbone, cfg, needs) = (ctx.backbone, ctx.cfg, ctx.needs);
    if !images.is_empty() {
        stats.image_batches += 1;
    }
    let Some(c) = ctx.cache else {
        let preps = segsweep_infer::prepare_many(backbone, images, cfg, needs)?;
        return Ok(preps.into_iter().map(|p| (p, None)).collect());
    };
    // Stage every image, fill the hits from the cache, run the misses through the backbone.
    let mut keys = Vec::with_capacity(images.len());
    let mut hits: Vec<Option<Prepared>> = Vec::with_capacity(images.len());
    let mut misses = Vec::new();
    for image in images {
        let mut staged = segsweep_infer::stage(backbone, image, cfg, needs)?;
        let key = c.key(backbone, image, &staged);
        if c.load(&key, &mut staged, backbone.device(), stats)? {
            hits.push(Some(staged));
        } else {
            hits.push(None);
            misses.push(staged);
        }
        keys.push(key);
    }
    let mut computed = segsweep_infer::prepare_staged(backbone, misses, cfg)?.into_iter();
    let mut out = Vec::with_capacity(images.len());
    for (hit, key) in hits.into_iter().zip(keys) {
        let p = match hit {
            Some(p) => p,
            None => {
                let p = computed.next().ok_or_else(|| {
                    RunnerError::Infer(segsweep_infer::InferError::Pipeline(
                        "prepare_staged returned fewer images than asked".into(),
                    ))
                })?;
                c.store(&key, &p, stats)?;
                p
            }
        };
        out.push((p, Some(key)));
    }
    Ok(out)
}

/// A candle error reading or writing a scratch file, as the cause of an I/O error on that file.
fn candle_io(e: candle_core::Error) -> std::io::Error {
    std::io::Error::other(segsweep_core::without_backtrace(e).to_string())
}

fn spill_io(path: &Path, cause: std::io::Error) -> RunnerError {
    RunnerError::Io {
        path: path.to_path_buf(),
        cause,
        hint: Some(
            "set [experiment] spill_dir to a writable disk with space, or spill = \"none\" to recompute instead"
                .into(),
        ),
    }
}

fn cache_io(path: &Path, cause: std::io::Error) -> RunnerError {
    RunnerError::Io {
        path: path.to_path_buf(),
        cause,
        hint: Some(
            "set [experiment] feature_cache_dir to a writable disk with space, or feature_cache = \"none\""
                .into(),
        ),
    }
}

/// Bump when what a cache entry holds, how its key is formed, or the prefix's arithmetic
/// changes (3: the linear layers' GEMMs are no longer batched per crop off the f32 CPU path;
/// 4: on CUDA with the fused kernels, attention outside the tensor-core kernel's reach, f32
/// included, is candle's matmul + softmax + matmul instead of the fused SIMT kernel; 5: on CUDA
/// in f16/bf16 with head dim ≤ 64, attention is the mma.sync kernel, whose sums run in another
/// order than the WMMA kernel's).
const FEATURE_CACHE_VERSION: u32 = 5;

/// The persistent feature cache (`[experiment] feature_cache`): each image's backbone prefix
/// (tokens and whatever the plugins asked it to record) in `<dir>/<key>.safetensors`, named by
/// the SHA-256 of everything that determines it — the weights (model id and file hash), dtype,
/// device kind and kernels (`segsweep_kernels::kernels_for`), input statistics, the window settings, resized size and recorded layers
/// ([`Prepared::prefix_identity`]), the stored dtype, and the image's pixels. A run that adds
/// configurations, or a later sweep over the same images and model, reads the prefix instead of
/// computing it. Entries are written once (via a temporary file and a rename) and never
/// modified; delete the directory to clear it.
pub(crate) struct FeatureCache {
    dir: PathBuf,
    dtype: DType,
}

impl FeatureCache {
    /// The cache of `plan`, in `plan.feature_cache_dir` or `default_dir`; `None` when off.
    pub(crate) fn new(plan: &MemoryPlan, default_dir: PathBuf) -> Option<FeatureCache> {
        Some(FeatureCache {
            dir: plan.feature_cache_dir.clone().unwrap_or(default_dir),
            dtype: plan.feature_cache.dtype()?,
        })
    }

    /// The entry name of `image`'s prefix as `staged` (from [`segsweep_infer::stage`]) will
    /// record it on `backbone`.
    fn key(&self, backbone: &dyn Backbone, image: &RgbImage, staged: &Prepared) -> String {
        let info = backbone.info();
        let device_kind = info.device.split(':').next().unwrap_or("");
        let mut h = Sha256::new();
        h.update(
            format!(
                "segsweep feature cache v{FEATURE_CACHE_VERSION}\nmodel={}\nweights={}\ndtype={}\n\
                 device={device_kind}\nkernels={}\nmean={:?}\nstd={:?}\n{}\nstored={:?}\nimage={}x{}\n",
                info.model_id,
                info.file_hash,
                info.dtype,
                segsweep_kernels::kernels_for(backbone.device()),
                info.mean,
                info.std,
                staged.prefix_identity(),
                self.dtype,
                image.h,
                image.w
            )
            .as_bytes(),
        );
        h.update(&image.data);
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.safetensors"))
    }

    /// Fill `prepared`'s prefix from the entry `key`: `false` when there is none. An entry that
    /// cannot be read or does not fit the image (a truncated file, say) is removed with a
    /// warning and counts as missing, so it is computed and written again.
    fn load(
        &self,
        key: &str,
        prepared: &mut Prepared,
        device: &Device,
        stats: &mut MemoryStats,
    ) -> Result<bool> {
        let path = self.path(key);
        if !path.is_file() {
            return Ok(false);
        }
        let restored = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| segsweep_core::without_backtrace(e).to_string())
            .and_then(|named| {
                prepared
                    .restore_prefix(named.into_iter().collect(), device)
                    .map_err(|e| e.to_string())
            });
        match restored {
            Ok(()) => {
                stats.feature_cache_hits += 1;
                Ok(true)
            }
            Err(msg) => {
                tracing::warn!(
                    "feature cache entry {} is unreadable ({msg}); removing it and computing the prefix again",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                stats.feature_cache_unreadable += 1;
                Ok(false)
            }
        }
    }

    /// Write `prepared`'s prefix as the entry `key`.
    fn store(&self, key: &str, prepared: &Prepared, stats: &mut MemoryStats) -> Result<()> {
        let named = prepared.prefix_tensors()?;
        let (file, bytes) = save_named(named, self.dtype, &self.dir, ".entry-", cache_io)?;
        let path = self.path(key);
        file.persist(&path).map_err(|e| cache_io(&path, e.error))?;
        stats.feature_cache_writes += 1;
        stats.feature_cache_bytes += bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_lookahead_is_one_per_thread_from_2_to_32() {
        let with = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(default_load_ahead)
        };
        assert_eq!(with(1), 2);
        assert_eq!(with(12), 12);
        assert_eq!(with(128), 32);
    }

    fn section(budget: u64, spill: &str) -> ExperimentSection {
        ExperimentSection {
            memory_budget_mb: budget,
            spill: spill.into(),
            ..ExperimentSection::default()
        }
    }

    #[test]
    fn plan_validates_and_names_the_key() {
        let p = MemoryPlan::resolve(&section(3, "f16"), "x.toml").unwrap();
        assert_eq!((p.budget_bytes, p.spill), (3 << 20, Spill::F16));
        let err = MemoryPlan::resolve(&section(3, "bf8"), "x.toml").unwrap_err();
        assert!(err.to_string().contains("experiment.spill"), "{err}");
        let err = MemoryPlan::resolve(&section(MAX_BUDGET_MB + 1, "none"), "x.toml").unwrap_err();
        assert!(
            err.to_string().contains("experiment.memory_budget_mb"),
            "{err}"
        );
    }
}
