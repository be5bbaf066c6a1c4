//! `pamr`: pixel-adaptive mask refinement of the dense logits (or probabilities), guided by the
//! image's colours.
//!
//! PAMR (Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels", CVPR 2020) is
//! the post-processing that SCLIP, NACLIP and ResCLIP ship (`pamr.py`; methods.md §0). For every
//! pixel i it takes P = 8·|dilations| neighbours j (the 8 neighbours of a 3×3 window for each
//! dilation, centre excluded, replicate padding), computes
//! a_ij = softmax_j( mean_c −|I_c(i) − I_c(j)| / (1e-8 + 0.1·σ_c(i)) ), with σ_c(i) the unbiased
//! std of the 9·|dilations| values of the dilated windows, and then repeats M_i ← Σ_j a_ij·M_j
//! `steps` times. Each step is a convex neighbour average, so it works alike on
//! [`DenseMaps::Logits`] `(Q, H, W)` and [`DenseMaps::Probs`] `(C, H, W)`.
//!
//! What it does not do: it never changes the number of planes or the map size, and it does not
//! resize anything (see below).
//!
//! Central items: [`Pamr`] (the [`Refiner`], stage `dense-logits`), the pure function [`pamr()`]
//! (reused by ResCLIP's coarse pass), and [`PARAMS`].
//!
//! Design decision: the image is `ctx.image` as 0..=255 RGB floats, not the CLIP-normalised
//! image the reference feeds. PAMR is invariant to a per-channel affine map of the image (the
//! scale cancels between |I_i − I_j| and σ; only the 1e-8 does not), so the normalisation would
//! be wasted work; a test checks the invariance (max difference 5e-7 on the golden case).
//!
//! Differences from the reference pipeline:
//! - SCLIP/NACLIP/ResCLIP first resize M to the image size with `align_corners=True`. In segsweep
//!   the dense maps reaching this stage are already at the image size (the error says so if
//!   not), so there is nothing to resize.
//! - The guide image ([`Guide`], parameters `guide` and `guide_short_side`). SCLIP's harness
//!   feeds PAMR the *resized* network input (short side S, cv2 bilinear on uint8) bilinearly
//!   resized back to the original size, a slightly blurred image. `guide = "resized"` (default)
//!   does that with the running pipeline's short side (`[dataset] short_side`; [`DenseCtx::short_side`]) and
//!   the pipeline's output size (mmcv `rescale_size` from segsweep-infer); `guide_short_side`
//!   overrides S, and a pipeline that does not resize is guided by the original image, as the
//!   reference would be. `// Deviation:` the downscale is float bilinear rounded to uint8 (the
//!   reference script's stand-in, which the golden checks), not cv2's fixed point: levels can
//!   differ by one from the pipeline's resized image. `guide = "original"` (the image itself)
//!   is the option: measured on three scikit-image photos (astronaut, chelsea, coffee) with
//!   structured proxy logits (k-means colour regions at the patch grid + noise, not CLIP
//!   logits), 5–7 % of pixels change their argmax between the two guides, while PAMR itself
//!   changes 22–33 %.
//!
//! Parity: `tests/parity.rs` compares with a PyTorch port of the reference
//! (`tests/reference/pamr_resclip_reference.py pamr`, checked equal to the upstream conv-kernel
//! formulation to 0.0) on a non-square 36×56 image, a batch of two 33×20 images and the resized
//! guide of a 40×60 image; tolerance 1e-5 absolute on values of order 0.1–1 (1e-3 through the
//! resized guide, whose uint8 levels may differ by one).

mod params;
mod refine;

pub use params::PARAMS;
pub use refine::pamr;

use candle_core::{Device, Tensor};
use segsweep_core::{
    CoreError, DenseCtx, DenseMaps, Params, PluginSpec, Refiner, Result, RgbImage, Stage,
};
use segsweep_infer::{rescale_size, LONG_SIDE_CAP};

/// Long documentation shown by `segsweep plugins pamr`.
const DOC: &str = "\
PAMR (Araslanov & Roth, CVPR 2020), as shipped by SCLIP/NACLIP/ResCLIP (pamr.py). Refines the \
dense logits (Q, H, W) or probabilities (C, H, W) at the original image size by `steps` rounds \
of M_i <- sum_j a_ij M_j over the 8 neighbours per dilation (replicate padding), with \
a_ij = softmax_j(mean_c -|I_c(i)-I_c(j)| / (1e-8 + 0.1 std_c(i))) computed from an RGB guide \
image (PAMR is invariant to per-channel normalisation). Reference defaults: SCLIP steps 0 \
(off); NACLIP/ResCLIP PAMR numbers steps 10, dilations [8, 16]. guide = \"resized\" (default) is \
the reference harness's guide: the image resized to the pipeline's short side ([inference] \
short_side, or guide_short_side when set; mmcv size and uint8 levels, within one level of the \
pipeline's cv2 resize), bilinearly resized back to the original size; the original image when \
the pipeline does not resize. guide = \"original\" uses the image itself (5-7 % of pixels \
differ between the two on proxy logits).";

/// Which image guides PAMR's affinities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guide {
    /// The original image, as given to the dense stage.
    Original,
    /// The reference harness's guide at the running pipeline's short side
    /// ([`DenseCtx::short_side`]): the image resized to the size the pipeline gave the backbone
    /// (uint8 levels), then bilinearly resized back to the original size. The original image
    /// when the pipeline does not resize.
    Pipeline,
    /// The same at a fixed short side in pixels (`guide_short_side`), whatever the pipeline does.
    Resized(usize),
}

/// The PAMR refiner (stage `dense-logits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pamr {
    steps: usize,
    dilations: Vec<usize>,
    guide: Guide,
}

impl Pamr {
    /// A refiner with `steps` propagation steps and the given pixel dilations (non-empty, > 0),
    /// guided by the pipeline's resized image ([`Guide::Pipeline`], the reference's guide).
    pub fn new(steps: usize, dilations: Vec<usize>) -> Result<Pamr> {
        if dilations.is_empty() || dilations.contains(&0) {
            return Err(CoreError::Param {
                plugin: "pamr".into(),
                key: "dilations".into(),
                msg: format!("must be a non-empty list of positive offsets, got {dilations:?}"),
                hint: Some("the reference uses [8, 16]".into()),
            });
        }
        Ok(Pamr {
            steps,
            dilations,
            guide: Guide::Pipeline,
        })
    }

    /// The same refiner with another guide image.
    pub fn with_guide(mut self, guide: Guide) -> Pamr {
        self.guide = guide;
        self
    }

    /// Build from validated parameters (see [`PARAMS`]).
    pub fn from_params(p: &Params) -> Result<Pamr> {
        let dilations = p
            .int_list("dilations")?
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect();
        let guide = match (p.str("guide")?, p.get("guide_short_side")) {
            ("original", Some(_)) => {
                return Err(CoreError::Param {
                    plugin: "pamr".into(),
                    key: "guide_short_side".into(),
                    msg: "only used with guide = \"resized\"".into(),
                    hint: Some("remove it, or set guide = \"resized\"".into()),
                })
            }
            ("original", None) => Guide::Original,
            (_, Some(_)) => Guide::Resized(p.usize("guide_short_side")?),
            (_, None) => Guide::Pipeline,
        };
        Ok(Pamr::new(p.usize("steps")?, dilations)?.with_guide(guide))
    }

    /// The guide this refiner uses.
    pub fn guide(&self) -> Guide {
        self.guide
    }

    /// The guide image `(3, h, w)` f32 on the 0..=255 scale (see [`Guide`]), for an image the
    /// pipeline resized to `pipeline_short_side` ([`DenseCtx::short_side`]).
    pub fn guide_image(
        &self,
        image: &RgbImage,
        pipeline_short_side: Option<usize>,
        device: &Device,
    ) -> Result<Tensor> {
        let short = match self.guide {
            Guide::Original => None,
            Guide::Pipeline => pipeline_short_side,
            Guide::Resized(s) => Some(s),
        };
        let Some(short) = short else {
            return image.to_tensor(device);
        };
        let t = image.to_tensor(device)?;
        let (h, w) = (image.h, image.w);
        // The pipeline's output size (mmcv `rescale_size`, shared with segsweep-infer).
        let (nh, nw) = rescale_size(h, w, short, LONG_SIDE_CAP);
        let small = t
            .unsqueeze(0)?
            .upsample_bilinear2d(nh.max(1), nw.max(1), false)?;
        // uint8 levels, half to even as the reference script's `torch.round`.
        // Deviation: the pipeline resizes with cv2's fixed-point bilinear
        // (`segsweep_infer::resize_short_side`), whose levels differ from these by at most one.
        // The golden (tests/parity.rs) is the reference script's float-bilinear guide; the
        // fixed-point one moves PAMR's output on it by up to 0.025, so this stays the arithmetic
        // the golden checks.
        let levels: Vec<f32> = small
            .flatten_all()?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| v.round_ties_even().clamp(0.0, 255.0))
            .collect();
        let small = Tensor::from_vec(levels, small.dims(), device)?;
        Ok(small.upsample_bilinear2d(h, w, false)?.squeeze(0)?)
    }

    /// Refine one map `(K, H, W)` with the image `(3, H, W)`.
    fn refine(&self, image: &Tensor, map: &Tensor) -> Result<Tensor> {
        let (_, h, w) = map.dims3()?;
        let (_, ih, iw) = image.dims3()?;
        if (h, w) != (ih, iw) {
            return Err(CoreError::plugin(
                "pamr",
                format!(
                    "dense maps are {h}×{w} but the image is {ih}×{iw}; PAMR runs at the \
                     original image size (resize the maps before this stage)"
                ),
            ));
        }
        pamr(image, map, self.steps, &self.dilations)
    }
}

impl Refiner for Pamr {
    fn name(&self) -> &str {
        "pamr"
    }

    fn dense(&self, maps: DenseMaps, ctx: &DenseCtx<'_>) -> Result<DenseMaps> {
        let image = self.guide_image(ctx.image, ctx.short_side, ctx.device)?;
        Ok(match maps {
            DenseMaps::Logits(l) => DenseMaps::Logits(self.refine(&image, &l)?),
            DenseMaps::Probs(p) => DenseMaps::Probs(self.refine(&image, &p)?),
        })
    }
}

segsweep_core::register_plugin!(PluginSpec {
    name: "pamr",
    version: 1,
    summary: "pixel-adaptive mask refinement of the dense logits/probabilities (SCLIP/NACLIP post-processing)",
    doc: DOC,
    stage: Stage::DenseLogits,
    params: PARAMS,
    check: |p, _| Pamr::from_params(p).map(drop),
    build: |p| Ok(Box::new(Pamr::from_params(p)?)),
});
