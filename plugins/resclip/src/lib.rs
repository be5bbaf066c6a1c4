//! `resclip`: ResCLIP's last block (Yang et al., "ResCLIP: Residual Attention for Training-free
//! Dense Vision-language Inference", CVPR 2025; github.com/yvhangyang/ResCLIP), the published
//! method on NACLIP's base.
//!
//! What it computes (methods.md §2; [`attention`] has the formulas):
//! - **Base**: NACLIP's last block: key-key logits `k kᵀ·s` plus the Gaussian prior Ω (σ = 5
//!   patches), softmax, no residual, no FFN.
//! - **RCS** (residual cross-correlation self-attention): the mean standard attention
//!   `softmax(q kᵀ·s)` of layers 6–9 (declared through [`Refiner::needs`], recorded by the
//!   prefix), mixed after the softmax as `τ_rcs·((1−λ_rcs)·A + λ_rcs·A_rcs)`, not renormalised.
//! - **SFR** (semantic feedback refinement): a coarse pass (the block with RCS and without SFR →
//!   head → L2-normalise → cosine with the text → bilinear to the crop → PAMR(10, (8, 16)) on
//!   the crop → softmax(40·logits) over all queries) gives pixel labels (argmax query; query 0
//!   below `temp_thd`), patch labels (mode over 16×16 pixels, smallest wins ties), a same-label
//!   matrix with the path test (and its quirk) and the exp(−s/s_max) decay, 1-D Gaussian row
//!   smoothing along the flattened patch index, ReLU and row normalisation, CLS row/column 0,
//!   then Â = A_sfr/max cast through f16, injected before the softmax of the final pass as
//!   `τ_sfr·((1−λ_sfr)·S + λ_sfr·Â) + Ω`. [`sfr`] has each step as a pure function.
//!
//! What it does not do: crop, stitch, post-process or threshold; those are `[inference]`
//! settings. ResCLIP's configs also set whole-image inference for VOC21 and VOC20 and
//! logit_scale 40 everywhere; [`PRESETS`] records them, and the plugin doc lists the spec values.
//!
//! Central items: [`ResClip`] (the [`Refiner`], stage `attention`), [`ResClipConfig`],
//! [`attention::resclip_block`], the [`sfr`] steps, [`PARAMS`], [`PRESETS`].
//!
//! Design decision: RCS and SFR are separate switches (`rcs`, `sfr`). The reference cannot turn
//! them off: `self.use_rcs=use_rcs,` (trailing comma) stores a one-element tuple, which is
//! always truthy. With both on, the plugin is the published method; either off gives the
//! ablations of the paper's Table 4 that the reference code could not run.
//!
//! Differences from the reference:
//! - The reference runs in fp16 on CUDA; this runs in the backbone's dtype (f32 in the tests).
//!   Only Â keeps its f16 cast (and λ·Â its f16 product), because the reference does that even
//!   in an f32 model.
//! - The reference's coarse pass only works at batch size 1 (its softmax loop rebinds the
//!   batch); here each crop of a batch gets its own A_sfr, which is what batch 1 computes.
//! - The reference skips the coarse PAMR silently on a CUDA out-of-memory error; here it always
//!   runs.
//! - `torch.mode` on CUDA breaks about 3 % of ties the other way (pytorch#90261); here the
//!   smallest label always wins, as on the CPU.

pub mod attention;
mod params;
pub mod sfr;

pub use params::{find_preset, Mix, Preset, ResClipConfig, SfrConfig, PARAMS, PRESETS};
pub use sfr::PathRounding;

use std::collections::BTreeSet;

use candle_core::Tensor;
use segsweep_core::{AttentionCtx, Needs, Params, PluginSpec, Refiner, Result, Stage};

/// Long documentation shown by `segsweep plugins resclip`.
const DOC: &str = "\
ResCLIP (Yang et al., CVPR 2025), the published method on NACLIP's last block: k k^T logits + \
Gaussian prior (sigma), no residual, no FFN; RCS mixes the mean attention of layers 6-9 after \
the softmax (tau_rcs, lambda_rcs); SFR runs a coarse pass (PAMR 10 x (8,16), \
softmax(sfr_logit_scale * logits) over all queries, query 0 below temp_thd, 16x16 patch mode, \
same-label matrix with the reference's path test quirk and exp(-s/s_max) decay, 1-D Gaussian \
row smoothing, row normalisation, /max, f16) and injects it before the final softmax \
(tau_sfr, lambda_sfr). rcs and sfr switch off independently (the reference cannot: its \
`use_rcs=...,` trailing comma makes both always true). `preset` fills unset tau/lambda/temp_thd \
from ResCLIP's configs. To reproduce a config, also set in [inference]: logit_scale = 40 for \
every preset; voc21: mode = \"whole\", prob_thd = 0.1; voc20: mode = \"whole\", prob_thd = 0; \
context60, coco_object: slide 224/112, prob_thd = 0.1; context59, coco_stuff, ade20k: slide \
224/112, prob_thd = 0; cityscapes: slide 224/112, prob_thd = 0, short_side = 560 (336 for all \
others); no area_thd, no final PAMR. path_rounding: \"eager\" (torch eager/CPU, default) or \
\"fused\" (TorchScript's fused CUDA kernel, what the reference's numbers ran) differ only in \
whole-image mode.";

/// The ResCLIP refiner (stage `attention`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResClip {
    cfg: ResClipConfig,
}

impl ResClip {
    /// A refiner with a resolved configuration.
    pub fn new(cfg: ResClipConfig) -> ResClip {
        ResClip { cfg }
    }

    /// Build from validated parameters (see [`PARAMS`]).
    pub fn from_params(p: &Params) -> Result<ResClip> {
        Ok(ResClip::new(ResClipConfig::from_params(p)?))
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ResClipConfig {
        &self.cfg
    }
}

impl Refiner for ResClip {
    fn name(&self) -> &str {
        "resclip"
    }

    fn needs(&self) -> Needs {
        Needs {
            attn_probs: match self.cfg.rcs {
                Some(_) => attention::RCS_LAYERS.into_iter().collect(),
                None => BTreeSet::new(),
            },
            qkv: BTreeSet::new(),
        }
    }

    fn attention(&self, ctx: &AttentionCtx<'_>) -> Result<Tensor> {
        attention::resclip_block(ctx, &self.cfg)
    }
}

segsweep_core::register_plugin!(PluginSpec {
    name: "resclip",
    version: 1,
    summary: "ResCLIP (CVPR'25) last block: NACLIP attention + RCS (layers 6-9) + SFR feedback, per-dataset presets",
    doc: DOC,
    stage: Stage::Attention,
    params: PARAMS,
    check: |p, _| ResClip::from_params(p).map(drop),
    build: |p| Ok(Box::new(ResClip::from_params(p)?)),
});
