//! Dense-inference settings shared by the runner, the inference crate and the CLI.

use serde::{Deserialize, Serialize};

/// How crops are taken from the resized image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Sliding windows of `crop` pixels with `stride` (SCLIP's rule, last window clamped).
    Slide,
    /// The whole resized image in one pass, with interpolated position embeddings.
    Whole,
}

/// SCLIP-style dense inference settings (see methods.md §0–§1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferConfig {
    /// `slide` or `whole`.
    pub mode: Mode,
    /// Window size in pixels (224).
    pub crop: usize,
    /// Window stride in pixels (112).
    pub stride: usize,
    /// Resize so the short side is this many pixels (mmcv `imrescale` with a 2048 long-side
    /// cap); `None` keeps the image size.
    pub short_side: Option<usize>,
    /// Multiplier on cosine logits before the softmax over queries (SCLIP: 40; VOC21: 65).
    pub logit_scale: f32,
    /// Pixels whose max class probability is below this become background (class 0).
    pub prob_thd: f32,
    /// Foreground classes covering at most this share of foreground pixels are dropped.
    pub area_thd: Option<f32>,
    /// Built-in last-block strategy when no attention plugin is in the pipeline.
    pub attention: String,
    /// Crops per backbone batch.
    pub batch_size: usize,
}

impl Default for InferConfig {
    fn default() -> Self {
        InferConfig {
            mode: Mode::Slide,
            crop: 224,
            stride: 112,
            short_side: Some(336),
            logit_scale: 40.0,
            prob_thd: 0.0,
            area_thd: None,
            attention: "sclip".to_string(),
            batch_size: 8,
        }
    }
}
