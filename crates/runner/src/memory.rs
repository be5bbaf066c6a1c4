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

use crate::error::{Result, RunnerError};
use crate::spec::ExperimentSection;

/// Largest accepted `memory_budget_mb` (16 TiB): larger values are typos.
pub const MAX_BUDGET_MB: u64 = 1 << 24;

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
        let spill = match e.spill.as_str() {
            "none" => Spill::None,
            "f32" => Spill::F32,
            "f16" => Spill::F16,
            other => {
                return Err(RunnerError::spec(
                    file,
                    "experiment.spill",
                    format!("unknown spill mode `{other}`"),
                    Some("use \"none\" (drop and recompute), \"f32\" (exact) or \"f16\" (half the disk, close results)".into()),
                ))
            }
        };
        if e.spill_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(RunnerError::spec(
                file,
                "experiment.spill_dir",
                "is empty",
                Some("leave it out for <run dir>/cache, or name a directory".into()),
            ));
        }
        Ok(MemoryPlan {
            budget_bytes: e.memory_budget_mb * MIB,
            spill,
            spill_dir: e.spill_dir.clone(),
        })
    }
}

/// What the runner held and moved during one `run` call (also written to `memory.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// The budget, bytes.
    pub budget_bytes: u64,
    /// `none`, `f32` or `f16`.
    pub spill: String,
    /// Images processed (over all groups).
    pub images: usize,
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
}

impl MemoryStats {
    /// Empty statistics for a plan.
    pub fn new(plan: &MemoryPlan) -> MemoryStats {
        MemoryStats {
            budget_bytes: plan.budget_bytes,
            spill: format!("{:?}", plan.spill).to_lowercase(),
            ..MemoryStats::default()
        }
    }

    /// One line for the run log.
    pub fn summary(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / MIB as f64);
        format!(
            "memory: peak held {} (prefix up to {}, dense logits up to {}) of a {} budget over {} image(s); \
             prefix spilled {} time(s) ({}, {} written), read back {}, recomputed {}; {} image(s) over budget",
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
        )
    }
}

/// Where the prefix of the image in flight is.
enum State {
    Held,
    Spilled(tempfile::NamedTempFile),
    Dropped,
}

/// One image's prepared backbone pass while its configurations run: the prefix held, spilled
/// to a scratch file (deleted when this value drops) or dropped.
pub(crate) struct PrefixSlot<'a> {
    backbone: &'a dyn Backbone,
    image: &'a RgbImage,
    cfg: &'a InferConfig,
    needs: &'a Needs,
    plan: &'a MemoryPlan,
    spill_dir: &'a Path,
    prepared: Prepared,
    state: State,
}

impl<'a> PrefixSlot<'a> {
    /// Run the backbone prefix on `image`, recording `needs`.
    pub(crate) fn compute(
        backbone: &'a dyn Backbone,
        image: &'a RgbImage,
        cfg: &'a InferConfig,
        needs: &'a Needs,
        plan: &'a MemoryPlan,
        spill_dir: &'a Path,
    ) -> Result<PrefixSlot<'a>> {
        let prepared = segsweep_infer::prepare(backbone, image, cfg, needs)?;
        Ok(PrefixSlot {
            backbone,
            image,
            cfg,
            needs,
            plan,
            spill_dir,
            prepared,
            state: State::Held,
        })
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
                    .map_err(|e| spill_io(file.path(), std::io::Error::other(e.to_string())))?;
                let named: HashMap<String, Tensor> = named.into_iter().collect();
                self.prepared
                    .restore_prefix(named, self.backbone.device())?;
                stats.prefix_reloads += 1;
            }
            State::Dropped => {
                self.prepared =
                    segsweep_infer::prepare(self.backbone, self.image, self.cfg, self.needs)?;
                stats.prefix_recomputes += 1;
            }
        }
        Ok(())
    }

    /// Called after computing a dense-logits map of `dense_bytes`: record what is held, then
    /// keep the prefix if another upstream key needs it (`needed_again`) and prefix + dense
    /// logits fit the budget; otherwise spill or drop it.
    pub(crate) fn release(
        &mut self,
        dense_bytes: usize,
        needed_again: bool,
        stats: &mut MemoryStats,
    ) -> Result<()> {
        let prefix = self.prepared.prefix_bytes() as u64;
        let held = prefix + dense_bytes as u64;
        stats.peak_prefix_bytes = stats.peak_prefix_bytes.max(prefix);
        stats.peak_dense_bytes = stats.peak_dense_bytes.max(dense_bytes as u64);
        stats.peak_held_bytes = stats.peak_held_bytes.max(held);
        if held <= self.plan.budget_bytes && needed_again {
            return Ok(());
        }
        let named = self.prepared.take_prefix()?;
        self.state = match (needed_again, self.plan.spill.dtype()) {
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
        let dir = self.spill_dir;
        std::fs::create_dir_all(dir).map_err(|e| spill_io(dir, e))?;
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
            .prefix("prefix-")
            .suffix(".safetensors")
            .tempfile_in(dir)
            .map_err(|e| spill_io(dir, e))?;
        candle_core::safetensors::save(&map, file.path())
            .map_err(|e| spill_io(file.path(), std::io::Error::other(e.to_string())))?;
        Ok((file, bytes))
    }
}

fn spill_io(path: &Path, source: std::io::Error) -> RunnerError {
    RunnerError::Io {
        path: path.to_path_buf(),
        source,
        hint: Some(
            "set [experiment] spill_dir to a writable disk with space, or spill = \"none\" to recompute instead"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
