//! segsweep-core: the spine of the segmentation pipeline that every other crate plugs into.
//!
//! It defines the named stages of the data flow ([`Stage`]), what flows through each of them
//! ([`AttentionCtx`], [`FeatureMap`], [`DenseMaps`], [`LabelCtx`]), the [`Backbone`] trait that a
//! CLIP implementation (real or tiny-random) fulfils, the [`Refiner`] trait that plugins implement,
//! typed plugin parameters ([`ParamSpec`], [`Params`]) and the plugin [`registry()`](fn@registry).
//!
//! It must not know about datasets, sweeps, files or reports, and it never loads weights.
//!
//! Design decision: a plugin is registered as a `const` [`PluginSpec`] record submitted through
//! [`register_plugin!`] (inventory), not as a runtime call. The record carries the parameter
//! schema, so `segsweep plugins` and spec validation work from data alone, before any plugin code
//! runs or any weights load.

pub mod backbone;
pub mod config;
pub mod error;
pub mod params;
pub mod registry;
pub mod stage;
pub mod tensor;

pub use backbone::{Backbone, BackboneInfo, LastBlock, Needs, PrefixOut, WeightsKind};
pub use config::{InferConfig, Mode};
pub use error::{without_backtrace, CoreError, Result};
pub use params::{ParamDefault, ParamSpec, ParamType, ParamValue, Params};
pub use registry::{registry, PipelinePos, PluginSpec, Registry};
pub use stage::{
    AttentionCtx, Classifier, DenseCtx, DenseMaps, FeatureCtx, FeatureMap, LabelCtx, Refiner,
    RgbImage, Stage,
};

/// Re-exported so that [`register_plugin!`] works in plugin crates without a direct dependency.
#[doc(hidden)]
pub use inventory;
