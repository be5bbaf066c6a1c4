//! segsweep-clip: OpenAI CLIP's vision and text towers written with candle-nn, exposed as a
//! [`segsweep_core::Backbone`] that the dense-inference pipeline runs on.
//!
//! It loads the Hugging Face `CLIPModel` layout (local directory, hub repo id through `hf-hub`, or
//! the generated `builtin:tiny-random`), tokenises with CLIP's BPE, builds and caches the
//! zero-shot text classifier, and provides the built-in last-block attention strategies
//! ([`attention`]: `vanilla`, `sclip`, `naclip`, `maskclip`). It does not crop, stitch,
//! resize images or compute logits (that is `segsweep-infer`), and knows nothing of datasets.
//!
//! Central types: [`ClipModel`] (the backbone), [`ClipConfig`], [`ClipTokenizer`],
//! [`build_classifier`].
//!
//! Design decision: the vision tower is split into prefix / last block / head instead of one
//! `forward`, and the last block is exposed through [`segsweep_core::LastBlock`] operations
//! (ln_1, fused qkv, out_proj, ln_2, mlp). Every training-free method in this field changes only
//! how the last block mixes tokens, so the strategies are plain functions over those operations
//! that plugins can recombine, while the expensive prefix is computed once per crop.
//! (candle-transformers' CLIP hides q, k, v and the per-layer tokens, hence our own tower.)

pub mod attention;
mod block;
pub mod classifier;
pub mod config;
mod cpu;
pub mod error;
pub mod interp;
mod model;
pub mod source;
pub mod synthetic;
mod text;
pub mod tokenizer;
mod vision;

pub use classifier::{build_classifier, parse_class_names, IMAGENET_TEMPLATES};
pub use config::{ClipConfig, TextConfig, VisionConfig};
pub use error::{ClipError, Result};
pub use model::{ClipModel, BUILTIN_TINY, CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD};
pub use source::{HubEnv, ModelFiles};
pub use tokenizer::ClipTokenizer;
pub use vision::interpolate_pos;
