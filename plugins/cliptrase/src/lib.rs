//! CLIPtrase self-correlation refinement of crop features, as the segsweep plugin `cliptrase`.
//!
//! CLIPtrase (Shao et al., "Explore the Potential of CLIP for Training-Free Open Vocabulary
//! Semantic Segmentation", ECCV 2024, <https://github.com/leaves162/CLIPtrase>) recovers the
//! patches' semantic correlation inside CLIP. segsweep's design notes describe a simpler
//! feature-level method under the same name. Both exist here, each under an honest name.
//!
//! ## `variant = "phase2a"` (default): the design notes, NOT the paper
//! On each crop's features `f` `(B, E, h, w)`, with the `N = h·w` positions as rows:
//! `f̂ = f / ‖f‖`, `C = f̂ f̂ᵀ / τ` (`correlation_temperature`, 0.05),
//! `W = softmax` over each row of `C`, `r = W f̂`,
//! `out = (1 − α)·f̂ + α·r` (`recalibration_strength`, 0.5). The head then L2-normalises `out`.
//!
//! Both terms of the blend use the normalised features f̂, not the raw head output. The cosine
//! logits only ever see directions, and the raw norms of CLIP ViT-B/16 patch tokens vary a lot
//! (a few high-norm "artifact" tokens): with raw features those tokens would dominate `r = W f`
//! and α would not mean what it says, because ‖f‖ and ‖W f‖ differ per patch. With f̂ the design
//! notes' "normalise, then correlate and mix" is taken literally, and α is the share of the
//! recalibrated direction. The output is returned as not normalised.
//!
//! ## `variant = "paper"`: CLIPtrase as published (methods.md §3)
//! A plugin attaches at one stage, and CLIPtrase touches three (last-block attention, features,
//! labels). This variant runs at the features stage and recomputes what it needs, so nothing is
//! approximated:
//! 1. **Semantic correlation recovery**: the last block is recomputed from the prefix tokens with
//!    `A = softmax(q qᵀ·s) + softmax(k kᵀ·s) + softmax(v vᵀ·s)` per head (rows sum to 3), residual
//!    and FFN kept, then the head, then L2 normalisation ([`paper::trase_last_block`]). The
//!    features the pipeline passes in (from the configured attention) are discarded, so this
//!    variant must be the first feature refiner (features off the patch grid are an error); an
//!    attention plugin before it has no effect.
//! 2. **Global-patch removal**: `C` = head mean of `(cos(q,q) + cos(k,k) + cos(v,v))/3` of layer
//!    `correlation_layer` (11), recorded by the prefix ([`Refiner::needs`]); `C' = relu(C_patch −
//!    C_cls_row)` ([`paper::self_correlation`], [`paper::remove_global`]).
//! 3. **Clustering**: DBSCAN on the rows of `C'` with scikit-learn's exact semantics
//!    ([`dbscan::dbscan`]); `eps`/`min_samples` per resolution (0.7/3 at 224 px, 1.1/7 at 336 px)
//!    unless set.
//! 4. **Regions**: cluster map = mean `C'` row per cluster, ×4 bilinear, scipy
//!    `median_filter(size=7)`, bilinear to the crop, argmax over clusters (lowest index wins).
//! 5. **Vote** (`vote`): `mean-logits` is the d2 version (each region's pixels take the mean of
//!    its upsampled logits). Logits are linear in the features, so the plugin outputs, per pixel,
//!    the region mean of the bilinearly upsampled normalised patch features, `(B, E, Hc, Wc)`,
//!    marked `normalised: true`: renormalising them would change the result (it rescales each
//!    pixel's logits, which changes the softmax with `logit_scale` and the weight of each window
//!    when overlapping windows are averaged), and the reference averages logits, not unit vectors.
//!    `majority` is the per-window vote of `clip_self_correlation.py`: each region's pixels get the
//!    query that most of its pixels argmax to, output as that query's text embedding, so the
//!    crop's argmax equals the vote (its logit values are text–text cosines, not CLIP logits).
//!    A crop where DBSCAN finds no cluster keeps its patch features, bilinearly upsampled to the
//!    crop so that a batch has one shape (the logits are the pipeline's own upsampled logits).
//!
//!    **Which vote is the paper's.** The paper's README code and issue #5 ("majority vote per
//!    cluster") vote by majority: `vote = "majority"`. The default is `mean-logits`, the
//!    authors' d2 version, because a majority vote is a per-window label map, and label maps
//!    cannot be averaged across the overlapping windows of slide inference (methods.md §3),
//!    which is segsweep's default mode: the averaged logits of two windows that voted `a` and
//!    `b` are the mean of the text–text cosine rows of `a` and `b`, whose argmax can be a third
//!    query neither voted for, and the softmax probabilities (`prob_thd`) are then text–text
//!    cosines, not image evidence. The method is `vote = "majority"` with
//!    `[inference] mode = "whole"` (one window, as upstream's single centre crop).
//!
//! What we reproduce is the per-crop computation. What we do not: upstream runs CLIP in fp32 on
//! one bicubic-resized, centre-cropped 224/336 px image with its own metric (`+0.01` IoU
//! denominator, classes with GT only) and `100·` logits; segsweep runs its own protocol (mmseg
//! resize, slide or whole inference, the pipeline's `logit_scale`). The majority vote counts
//! queries, not classes: the features stage does not know which queries are synonyms, while
//! upstream first maps its background prompts to one class (`// Deviation:` in
//! [`paper::majority_features`]). VOC20's CLS-logit reweighting is not implemented.
//!
//! What this crate must not do: know about the runner, datasets or files.
//!
//! Cost: phase2a is `O(N²·E)` per crop, negligible on the 14×14 grid (0.6 % of the backbone pass,
//! see the README) but about 2.6 TFLOP per 224² crop on per-pixel features: put it before an
//! upsampler. The paper variant recomputes the last block (the pipeline's own last block is then
//! wasted), clusters on the CPU like upstream's sklearn/scipy, and returns `E·Hc·Wc` floats per
//! crop (100 MB at E = 512, 224²).
//!
//! Design decision: the phase2a correlation is computed in row chunks, so the plugin also runs on
//! per-pixel features after an upsampler without allocating N² floats at once.

pub mod dbscan;
pub mod image_ops;
pub mod paper;
mod params;
pub mod phase2a;

pub use params::PARAMS;

use candle_core::{DType, Tensor};
use segsweep_core::tensor::l2_normalise;
use segsweep_core::{
    CoreError, FeatureCtx, FeatureMap, Needs, Params, PipelinePos, PluginSpec, Refiner, Result,
    Stage,
};

pub use paper::Vote;

/// The registered plugin name.
pub const NAME: &str = "cliptrase";

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
    /// The published method.
    Paper {
        /// DBSCAN ε; `None`: per resolution ([`paper::dbscan_preset`]).
        eps: Option<f64>,
        /// DBSCAN min_samples; `None`: per resolution.
        min_samples: Option<usize>,
        /// Per-region decision.
        vote: Vote,
        /// 1-based layer of the self-correlation.
        layer: usize,
    },
}

/// The `cliptrase` refiner (feature stage).
#[derive(Debug, Clone)]
pub struct ClipTrase {
    variant: Variant,
}

fn param_err(key: &str, msg: String, hint: Option<String>) -> CoreError {
    CoreError::Param {
        plugin: NAME.into(),
        key: key.into(),
        msg,
        hint,
    }
}

impl ClipTrase {
    /// Build from validated parameters. A key of the other variant set to a non-default value
    /// is an error, so that a sweep over it cannot silently do nothing.
    pub fn from_params(p: &Params) -> Result<ClipTrase> {
        let variant = match p.str("variant")? {
            "phase2a" => {
                for key in ["eps", "min_samples"] {
                    if p.get(key).is_some() {
                        return Err(param_err(
                            key,
                            "only used by variant = \"paper\"".into(),
                            Some("remove it or set variant = \"paper\"".into()),
                        ));
                    }
                }
                if p.str("vote")? != "mean-logits" || p.usize("correlation_layer")? != 11 {
                    return Err(param_err(
                        "vote/correlation_layer",
                        "only used by variant = \"paper\"".into(),
                        Some("remove them or set variant = \"paper\"".into()),
                    ));
                }
                Variant::Phase2a {
                    temperature: p.f64("correlation_temperature")?,
                    strength: p.f64("recalibration_strength")?,
                }
            }
            "paper" => {
                if p.f64("correlation_temperature")? != params::DEFAULT_TEMPERATURE
                    || p.f64("recalibration_strength")? != params::DEFAULT_STRENGTH
                {
                    return Err(param_err(
                        "correlation_temperature/recalibration_strength",
                        "only used by variant = \"phase2a\"".into(),
                        Some("remove them or set variant = \"phase2a\"".into()),
                    ));
                }
                Variant::Paper {
                    eps: p.opt_f64("eps")?,
                    min_samples: match p.get("min_samples") {
                        Some(_) => Some(p.usize("min_samples")?),
                        None => None,
                    },
                    vote: match p.str("vote")? {
                        "majority" => Vote::Majority,
                        _ => Vote::MeanLogits,
                    },
                    layer: p.usize("correlation_layer")?,
                }
            }
            other => {
                return Err(param_err(
                    "variant",
                    format!("unknown variant `{other}`"),
                    Some(format!("one of {}", params::VARIANTS.join(", "))),
                ))
            }
        };
        Ok(ClipTrase { variant })
    }

    /// The variant this instance runs.
    pub fn variant(&self) -> &Variant {
        &self.variant
    }

    /// The paper variant on one batch: `(B, E, Hc, Wc)` features, see the crate docs.
    fn paper(
        &self,
        ctx: &FeatureCtx<'_>,
        eps: Option<f64>,
        min_samples: Option<usize>,
        vote: Vote,
        layer: usize,
    ) -> Result<Tensor> {
        let prefix = ctx.prefix;
        let grid = prefix.grid;
        let n = grid.0 * grid.1;
        let (_, _, hc, wc) = ctx.crops.dims4()?;
        let crop = (hc, wc);
        let (q, k, v) = paper::layer_qkv(prefix, layer)?;
        let x = paper::trase_last_block(ctx.backbone.last_block(), &prefix.tokens)?;
        let f_hat = l2_normalise(&ctx.backbone.head(&x, grid)?.to_dtype(DType::F32)?, 1)?;
        let c_prime = paper::remove_global(&paper::self_correlation(q, k, v)?)?;
        let (preset_eps, preset_min) = paper::dbscan_preset(n);
        let eps = eps.unwrap_or(preset_eps);
        let min_samples = min_samples.unwrap_or(preset_min);
        let (batch, e, _, _) = f_hat.dims4()?;
        // One buffer for the batch: stacking per-crop tensors would copy E·Hc·Wc floats again.
        let mut out = Vec::with_capacity(batch * e * hc * wc);
        for b in 0..batch {
            let cb: Vec<f32> = c_prime.get(b)?.flatten_all()?.to_vec1()?;
            let clusters = paper::cluster_regions(&cb, grid, crop, eps, min_samples);
            let fb = f_hat.get(b)?;
            match (clusters.count, vote) {
                (0, _) => paper::upsample_into(&fb, crop, &mut out)?,
                (_, Vote::MeanLogits) => paper::region_mean_into(&fb, &clusters, crop, &mut out)?,
                (_, Vote::Majority) => {
                    paper::majority_into(&fb, ctx.text, &clusters, crop, &mut out)?
                }
            }
        }
        Ok(Tensor::from_vec(
            out,
            (batch, e, hc, wc),
            ctx.crops.device(),
        )?)
    }
}

impl Refiner for ClipTrase {
    fn name(&self) -> &str {
        NAME
    }

    fn needs(&self) -> Needs {
        match &self.variant {
            Variant::Phase2a { .. } => Needs::default(),
            Variant::Paper { layer, .. } => Needs {
                qkv: [*layer].into_iter().collect(),
                ..Needs::default()
            },
        }
    }

    fn features(&self, feats: FeatureMap, ctx: &FeatureCtx<'_>) -> Result<FeatureMap> {
        match &self.variant {
            Variant::Phase2a {
                temperature,
                strength,
            } => Ok(FeatureMap {
                feats: phase2a::recalibrate(&feats.feats, *temperature, *strength)?,
                normalised: false,
            }),
            Variant::Paper {
                eps,
                min_samples,
                vote,
                layer,
            } => {
                let (b, _, h, w) = feats.feats.dims4()?;
                if (h, w) != ctx.prefix.grid {
                    // The variant recomputes the patch features; an upsampler's (or any
                    // resolution-changing refiner's) work before it would be silently lost.
                    return Err(CoreError::plugin(
                        NAME,
                        format!(
                            "variant \"paper\" recomputes the patch features and must be the \
                             first feature refiner, but it received features at {h}×{w} \
                             instead of the patch grid {}×{}",
                            ctx.prefix.grid.0, ctx.prefix.grid.1
                        ),
                    ));
                }
                if b != ctx.prefix.tokens.dim(0)? {
                    return Err(CoreError::plugin(
                        NAME,
                        format!(
                            "{b} feature maps for {} prefix rows",
                            ctx.prefix.tokens.dim(0)?
                        ),
                    ));
                }
                Ok(FeatureMap {
                    feats: self.paper(ctx, *eps, *min_samples, *vote, *layer)?,
                    normalised: true,
                })
            }
        }
    }
}

const DOC: &str = "\
CLIPtrase (Shao et al., ECCV 2024, github.com/leaves162/CLIPtrase).

variant = \"phase2a\" (default) is the project's DESIGN NOTES, not the paper: on each crop's \
features, f̂ = f/‖f‖, W = softmax_rows(f̂ f̂ᵀ / correlation_temperature), \
out = (1 − recalibration_strength)·f̂ + recalibration_strength·W f̂; the head normalises out. \
The blend uses the normalised features, so that high-norm patch tokens do not dominate and the \
strength is the share of the recalibrated direction. None of this is in the CLIPtrase code.

variant = \"paper\" is the published method, run at the features stage: it recomputes the last \
block with softmax(qqᵀs)+softmax(kkᵀs)+softmax(vvᵀs) (residual and FFN kept) from the prefix \
tokens, discarding the incoming features (use it as the first feature refiner); clusters the \
patches by DBSCAN (sklearn semantics) on the layer-11 self-correlation with the CLS row removed; \
median-filters the cluster maps; and votes per cluster region at crop resolution. The paper's \
(README) method and issue #5 vote by MAJORITY: vote = \"majority\" (per-window vote over \
queries, not classes; use it with [inference] mode = \"whole\", since per-window label maps \
cannot be averaged across overlapping slide windows). The default vote = \"mean-logits\" is the \
authors' d2 version, which averages logits and so also works with slide inference. Output: per-pixel features (B, E, crop h, crop w). Not reproduced: \
upstream's centre-crop protocol, metric, fp32-only model and VOC20 CLS reweighting.";

/// [`PluginSpec::check`]: the parameters parse, and the paper variant, which recomputes the
/// last block and the patch features from the prefix, has no attention or feature plugin
/// before it whose work it would silently discard.
fn check(p: &Params, pos: &PipelinePos) -> Result<()> {
    let trase = ClipTrase::from_params(p)?;
    if matches!(trase.variant, Variant::Paper { .. }) {
        if let Some((name, stage)) = pos
            .before
            .iter()
            .find(|(_, s)| matches!(s, Stage::Attention | Stage::Features))
        {
            return Err(param_err(
                "variant",
                format!(
                    "\"paper\" recomputes the last block and the patch features, so `{name}` ({} stage) before it would have no effect",
                    stage.describe()
                ),
                Some("list cliptrase first among the attention and feature plugins, or use variant = \"phase2a\"".into()),
            ));
        }
    }
    Ok(())
}

segsweep_core::register_plugin!(PluginSpec {
    name: NAME,
    version: 1,
    summary: "CLIPtrase: phase2a (design notes, default) feature recalibration | paper (ECCV'24) \
              qq+kk+vv block, DBSCAN regions, vote",
    doc: DOC,
    stage: Stage::Features,
    params: PARAMS,
    check,
    build: |p| Ok(Box::new(ClipTrase::from_params(p)?)),
});
