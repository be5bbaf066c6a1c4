//! The named stages of the pipeline and what flows through each.
//!
//! ```text
//! crops ─► PREFIX (cacheable) ─► LAST BLOCK [Attention] ─► head ─► patch features [Features]
//!       ─► cosine crop logits ─► stitch ─► dense logits (Q, H, W) [DenseLogits]
//!       ─► softmax, synonym max, thresholds ─► labels (H, W) [Labels]
//! ```

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::backbone::{Backbone, Needs, PrefixOut};
use crate::error::{CoreError, Result};

/// A point of the data flow where a plugin attaches. The order of the variants is the order of
/// the pipeline; a spec that lists plugins against it is rejected.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Replaces the last block's attention (and decides on its residual and FFN).
    Attention,
    /// Refines each crop's projected features before the cosine with the text.
    Features,
    /// Refines the stitched dense logits (or probabilities) at the original image size.
    DenseLogits,
    /// Refines the final label map.
    Labels,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::Attention,
        Stage::Features,
        Stage::DenseLogits,
        Stage::Labels,
    ];

    /// Human-readable name, as used in docs and errors.
    pub fn describe(&self) -> &'static str {
        match self {
            Stage::Attention => "last-block attention",
            Stage::Features => "crop features",
            Stage::DenseLogits => "dense logits",
            Stage::Labels => "labels",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Attention => "attention",
            Stage::Features => "features",
            Stage::DenseLogits => "dense-logits",
            Stage::Labels => "labels",
        })
    }
}

/// An 8-bit RGB image, `(h, w, 3)` row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wrap `(h, w, 3)` row-major bytes; errors if the length does not match.
    pub fn new(h: usize, w: usize, data: Vec<u8>) -> Result<RgbImage> {
        if data.len() != h * w * 3 {
            return Err(CoreError::shape(
                "RgbImage bytes",
                format!("{h}×{w}×3"),
                &[data.len()],
            ));
        }
        Ok(RgbImage { h, w, data })
    }

    /// The image as an f32 tensor `(3, h, w)` on the 0..=255 scale.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let t = Tensor::from_slice(&self.data, (self.h, self.w, 3), device)?
            .to_dtype(DType::F32)?
            .permute((2, 0, 1))?
            .contiguous()?;
        Ok(t)
    }
}

/// What an attention-stage plugin sees for one batch of crops.
pub struct AttentionCtx<'a> {
    pub backbone: &'a dyn Backbone,
    /// Input of the last block, `(B, 1 + gh·gw, D)`.
    pub x: &'a Tensor,
    /// Patch grid `(gh, gw)`.
    pub grid: (usize, usize),
    /// Everything the prefix recorded (see [`Needs`]).
    pub prefix: &'a PrefixOut,
    /// The normalised crops `(B, 3, Hc, Wc)` the prefix ran on.
    pub crops: &'a Tensor,
    /// Text classifier `(Q, E)`, L2-normalised, one row per query (synonym).
    pub text: &'a Tensor,
}

/// What a feature-stage plugin sees for one batch of crops.
pub struct FeatureCtx<'a> {
    pub backbone: &'a dyn Backbone,
    pub prefix: &'a PrefixOut,
    /// The normalised crops `(B, 3, Hc, Wc)`.
    pub crops: &'a Tensor,
    /// Text classifier `(Q, E)`, L2-normalised.
    pub text: &'a Tensor,
}

/// Crop features between the head and the cosine with the text: `(B, E, h, w)`, where `(h, w)`
/// is the patch grid or, after an upsampler such as LoftUp, the crop's pixel grid.
#[derive(Debug, Clone)]
pub struct FeatureMap {
    pub feats: Tensor,
    /// Whether each position is already L2-normalised (the head then does not normalise again).
    pub normalised: bool,
}

/// The dense maps at the original image size, as logits over queries or as class probabilities.
#[derive(Debug, Clone)]
pub enum DenseMaps {
    /// Cosine logits over queries `(Q, H, W)`, before `logit_scale` and softmax.
    Logits(Tensor),
    /// Class probabilities `(C, H, W)` after softmax and the synonym max.
    Probs(Tensor),
}

/// What a dense-stage plugin sees for one image.
pub struct DenseCtx<'a> {
    /// The original image `(h, w, 3)`.
    pub image: &'a RgbImage,
    /// Multiplier applied to cosine logits before the softmax over queries.
    pub logit_scale: f32,
    /// For each query, its class index (synonyms share a class).
    pub query_class: &'a [usize],
    /// Number of classes C.
    pub n_classes: usize,
    /// The short side the pipeline resized the image to before the backbone (`[inference]
    /// short_side`; mmcv `imrescale` with a 2048-pixel long-side cap), `None` when it ran at the
    /// original size. For plugins that reproduce a reference fed with the resized image (PAMR).
    pub short_side: Option<usize>,
    pub device: &'a Device,
}

impl DenseCtx<'_> {
    /// Class probabilities `(C, H, W)` from the maps (softmax over queries, max over synonyms).
    pub fn probs(&self, maps: &DenseMaps) -> Result<Tensor> {
        match maps {
            DenseMaps::Probs(p) => Ok(p.clone()),
            DenseMaps::Logits(l) => {
                crate::tensor::class_probs(l, self.logit_scale, self.query_class, self.n_classes)
            }
        }
    }
}

/// What a label-stage plugin sees for one image.
pub struct LabelCtx<'a> {
    pub image: &'a RgbImage,
    /// Final class probabilities `(C, H, W)` f32, on the backbone's device (the CPU for a CPU
    /// backbone). The labels a plugin receives and returns are `(H, W)` on the CPU.
    pub probs: &'a Tensor,
    /// Index of the background class, where the dataset has one.
    pub background: Option<usize>,
}

/// A refinement method. Implement the one method of the stage declared in the plugin's
/// [`PluginSpec`](crate::PluginSpec); the others keep their defaults.
pub trait Refiner: Send + Sync {
    /// The registered plugin name (for errors).
    fn name(&self) -> &str;

    /// What the backbone prefix must record for this plugin.
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// Attention stage: compute the last block's output `(B, 1 + N, D)`.
    fn attention(&self, _ctx: &AttentionCtx<'_>) -> Result<Tensor> {
        Err(self.wrong_stage(Stage::Attention))
    }

    /// Features stage: refine `(B, E, h, w)` crop features.
    fn features(&self, _feats: FeatureMap, _ctx: &FeatureCtx<'_>) -> Result<FeatureMap> {
        Err(self.wrong_stage(Stage::Features))
    }

    /// Dense stage: refine the `(Q, H, W)` logits or `(C, H, W)` probabilities.
    fn dense(&self, _maps: DenseMaps, _ctx: &DenseCtx<'_>) -> Result<DenseMaps> {
        Err(self.wrong_stage(Stage::DenseLogits))
    }

    /// Labels stage: refine the `(H, W)` u32 label map.
    fn labels(&self, _labels: Tensor, _ctx: &LabelCtx<'_>) -> Result<Tensor> {
        Err(self.wrong_stage(Stage::Labels))
    }

    #[doc(hidden)]
    fn wrong_stage(&self, stage: Stage) -> CoreError {
        CoreError::WrongStage {
            plugin: self.name().to_string(),
            stage: stage.to_string(),
        }
    }
}

/// The zero-shot text classifier: one L2-normalised row per query (class-name synonym).
#[derive(Debug, Clone)]
pub struct Classifier {
    /// `(Q, E)` text embeddings, L2-normalised (template-averaged, then normalised again).
    pub text: Tensor,
    /// For each query, its class index in `0..class_names.len()`.
    pub query_class: Vec<usize>,
    /// The query strings, in row order.
    pub queries: Vec<String>,
    /// One display name per class (the first synonym).
    pub class_names: Vec<String>,
}

impl Classifier {
    /// Number of classes C.
    pub fn n_classes(&self) -> usize {
        self.class_names.len()
    }
}
