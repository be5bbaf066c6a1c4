//! CLIPtrase-style self-correlation refinement of crop features, as a segsweep plugin.
//!
//! CLIPtrase (Shao et al., "Explore the Potential of CLIP for Training-Free Open Vocabulary
//! Semantic Segmentation", ECCV 2024, <https://github.com/leaves162/CLIPtrase>) recovers the
//! patches' semantic correlation inside CLIP. segsweep's design notes describe a simpler
//! feature-level version under the same name; this crate implements that one as
//! `variant = "phase2a"` and says so wherever the variant is named.
//!
//! ## `variant = "phase2a"` (default): the design notes, NOT the paper
//! On each crop's patch features `f` `(B, E, h, w)`, with the `N = h·w` positions as rows:
//! `f̂ = f / ‖f‖`, `C = f̂ f̂ᵀ / τ` (`correlation_temperature`, 0.05),
//! `W = softmax` over each row of `C`, `r = W f̂`,
//! `out = (1 − α)·f̂ + α·r` (`recalibration_strength`, 0.5). The head then L2-normalises `out`.
//!
//! Both terms of the blend use the normalised features f̂, not the raw head output. The cosine
//! logits only ever see directions, and the raw norms of CLIP ViT-B/16 patch tokens vary a lot
//! (a few high-norm "artifact" tokens): with raw features those tokens would dominate `r = W f`
//! and the blend weight α would not mean what it says, because ‖f‖ and ‖W f‖ differ per patch.
//! With f̂ the design notes' "normalise, then correlate and mix" is taken literally, and α is the
//! share of the recalibrated direction. The output is returned as not normalised.
//!
//! What this crate must not do: know about the runner, datasets or files.
//!
//! Design decision: the N × N correlation is computed in row chunks, so the plugin also runs on
//! per-pixel features after an upsampler without allocating N² floats at once.

mod params;
pub mod phase2a;

pub use params::PARAMS;

use segsweep_core::{
    CoreError, FeatureCtx, FeatureMap, Params, PluginSpec, Refiner, Result, Stage,
};

/// Which computation the plugin runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    /// The design notes' feature-level recalibration.
    Phase2a {
        /// Softmax temperature τ.
        temperature: f64,
        /// Blend weight α of the recalibrated features.
        strength: f64,
    },
}

/// The `cliptrase` refiner (feature stage).
#[derive(Debug, Clone)]
pub struct ClipTrase {
    variant: Variant,
}

impl ClipTrase {
    /// Build from validated parameters.
    pub fn from_params(p: &Params) -> Result<ClipTrase> {
        let variant = match p.str("variant")? {
            "phase2a" => Variant::Phase2a {
                temperature: p.f64("correlation_temperature")?,
                strength: p.f64("recalibration_strength")?,
            },
            other => {
                return Err(CoreError::Param {
                    plugin: NAME.into(),
                    key: "variant".into(),
                    msg: format!("unknown variant `{other}`"),
                    hint: Some(format!("one of {}", params::VARIANTS.join(", "))),
                })
            }
        };
        Ok(ClipTrase { variant })
    }

    /// The variant this instance runs.
    pub fn variant(&self) -> &Variant {
        &self.variant
    }
}

/// The registered plugin name.
pub const NAME: &str = "cliptrase";

impl Refiner for ClipTrase {
    fn name(&self) -> &str {
        NAME
    }

    fn features(&self, feats: FeatureMap, _ctx: &FeatureCtx<'_>) -> Result<FeatureMap> {
        match &self.variant {
            Variant::Phase2a {
                temperature,
                strength,
            } => Ok(FeatureMap {
                feats: phase2a::recalibrate(&feats.feats, *temperature, *strength)?,
                normalised: false,
            }),
        }
    }
}

const DOC: &str = "\
CLIPtrase (Shao et al., ECCV 2024, github.com/leaves162/CLIPtrase).

variant = \"phase2a\" (default) is the project's DESIGN NOTES, not the paper: on each crop's patch \
features, f̂ = f/‖f‖, W = softmax_rows(f̂ f̂ᵀ / correlation_temperature), \
out = (1 − recalibration_strength)·f̂ + recalibration_strength·W f̂; the head normalises out. \
The blend uses the normalised features, so that high-norm patch tokens do not dominate and the \
strength is the share of the recalibrated direction. None of this is in the CLIPtrase code \
(methods.md §3).";

segsweep_core::register_plugin!(PluginSpec {
    name: NAME,
    summary: "CLIPtrase self-correlation: phase2a (design notes, default) feature recalibration",
    doc: DOC,
    stage: Stage::Features,
    params: PARAMS,
    build: |p| Ok(Box::new(ClipTrase::from_params(p)?)),
});
