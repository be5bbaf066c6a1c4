//! Training-free "regional clues" on crop features, as the segsweep plugin `clip-rc`.
//!
//! The name comes from the project's design notes, which borrow it from CLIP-RC (Zhang et al.,
//! "Exploring Regional Clues in CLIP for Zero-Shot Semantic Segmentation", CVPR 2024,
//! <https://github.com/uyzhang/CLIP-RC>). **The published CLIP-RC is a trained method**
//! (deep visual prompts, 16 learned region tokens with masked attention over a 4×4
//! non-overlapping grid, a trained decoder and a recovery loss; methods.md §4). It cannot run in
//! a training-free framework and is out of scope. What this crate implements, as
//! `variant = "phase2a"`, is the design notes' training-free regional step: our own method,
//! named after the notes, not a reproduction of the paper.
//!
//! ## `variant = "phase2a"`: every step defined
//! On each crop's features `f` `(B, E, h, w)` (patch grid, or a pixel grid after an upsampler):
//! 1. **Normalise**: `f̂_p = f_p / ‖f_p‖` for every cell p (the cosine logits only see
//!    directions; raw norms vary per patch and would weight the region means).
//! 2. **Regions** (`num_regions` = n, `region_overlap` = o): each axis of `len` cells is split
//!    into n half-open intervals `[lo, hi)` of length `s = len / (n − (n − 1)·o)`, the k-th starting at
//!    `k·s·(1 − o)`, so they overlap by `o·s` and span exactly `[0, len]`. A cell belongs to an
//!    interval when its centre (`i + 0.5`) lies inside. Regions are the n×n products of row and
//!    column intervals. On 14×14 with n = 4, o = 0.25: `s ≈ 4.31` and the member rows (and
//!    columns) are `0..4`, `3..8`, `6..11`, `10..14`. Every cell is in at least one region.
//! 3. **Region features**: `m_k` = mean of f̂ over the cells of region k.
//! 4. **Back to cells**: `reg_p = Σ_k a_pk·m_k` over the regions k that contain p, with
//!    `a_pk ∝ exp(−d_pk² / (2σ²))` normalised to sum 1, where `d_pk` is the distance from the
//!    cell centre to the region centre measured in units of the region's size per axis
//!    (`σ` = `distance_sigma`, 0.5). A cell inside a single region takes that region's mean.
//! 5. **Global**: `g` = mean of f̂ over the whole crop (the features stage has no projected
//!    CLS token, and the mean is defined for any grid).
//! 6. **Mix**: `mix_p = (1 − β)·g + β·reg_p` (`regional_weight` β, 0.6).
//! 7. **Residual**: `out_p = ρ·f̂_p + (1 − ρ)·mix_p` (`residual_weight` ρ, 0.5). Because the
//!    head L2-normalises, this equals the additive residual `f̂ + λ·mix` with `λ = (1 − ρ)/ρ`;
//!    ρ = 0.5 is `f̂ + mix`.
//!
//! What this crate must not do: know about the runner, datasets or files.
//!
//! Design decision: the regional step is the linear map `pool` then `spread` built once per
//! grid as two small dense matrices (K × N and N × K) instead of an N × N operator, so it stays
//! cheap on per-pixel grids.

mod params;
pub mod regions;

pub use params::PARAMS;
pub use regions::{axis_regions, region_maps, regional_clues, AxisRegion, RegionalParams};

use segsweep_core::{
    CoreError, FeatureCtx, FeatureMap, Params, PluginSpec, Refiner, Result, Stage,
};

/// The registered plugin name.
pub const NAME: &str = "clip-rc";

/// The `clip-rc` refiner (feature stage, design-notes variant).
#[derive(Debug, Clone)]
pub struct ClipRc {
    params: RegionalParams,
}

impl ClipRc {
    /// Build from validated parameters.
    pub fn from_params(p: &Params) -> Result<ClipRc> {
        let variant = p.str("variant")?;
        if variant != "phase2a" {
            return Err(CoreError::Param {
                plugin: NAME.into(),
                key: "variant".into(),
                msg: format!("unknown variant `{variant}`"),
                hint: Some("the published CLIP-RC is trained; only `phase2a` exists".into()),
            });
        }
        Ok(ClipRc {
            params: RegionalParams {
                num_regions: p.usize("num_regions")?,
                region_overlap: p.f64("region_overlap")?,
                regional_weight: p.f64("regional_weight")?,
                residual_weight: p.f64("residual_weight")?,
                distance_sigma: p.f64("distance_sigma")?,
            },
        })
    }

    /// The resolved settings.
    pub fn params(&self) -> &RegionalParams {
        &self.params
    }
}

impl Refiner for ClipRc {
    fn name(&self) -> &str {
        NAME
    }

    fn features(&self, feats: FeatureMap, _ctx: &FeatureCtx<'_>) -> Result<FeatureMap> {
        Ok(FeatureMap {
            feats: regional_clues(&feats.feats, &self.params)?,
            normalised: false,
        })
    }
}

const DOC: &str = "\
Training-free regional clues from the project's DESIGN NOTES (variant \"phase2a\", our own \
method). NOT the published CLIP-RC (Zhang et al., CVPR 2024), which is a trained method (learned \
region tokens with masked attention, a trained decoder) and out of scope here.

On each crop: f̂ = f/‖f‖; num_regions² regions on the feature grid, each axis split into \
half-open intervals of size s = len/(n − (n−1)·region_overlap) with step s·(1 − region_overlap), \
a cell belonging to an interval when its centre lies inside; m_k = mean f̂ per region; \
reg_p = Σ_k a_pk m_k over the regions containing p, a_pk ∝ exp(−d²/2σ²) with d the distance to \
the region centre in region sizes (σ = distance_sigma); g = crop mean of f̂; \
out = residual_weight·f̂ + (1 − residual_weight)·((1 − regional_weight)·g + regional_weight·reg). \
The head normalises out.";

segsweep_core::register_plugin!(PluginSpec {
    name: NAME,
    version: 1,
    summary: "regional clues, phase2a (design notes; training-free, not the trained CLIP-RC)",
    doc: DOC,
    stage: Stage::Features,
    params: PARAMS,
    check: |p, _| ClipRc::from_params(p).map(drop),
    build: |p| Ok(Box::new(ClipRc::from_params(p)?)),
});
