//! The declared parameters of the `cliptrase` plugin.

use segsweep_core::{ParamDefault, ParamSpec, ParamType};

/// Values of `variant`.
pub const VARIANTS: &[&str] = &["phase2a", "paper"];

/// Values of `vote` (paper variant).
pub const VOTES: &[&str] = &["mean-logits", "majority"];

/// Defaults, shared by the schema and by the check that a variant's foreign keys stay unset.
pub const DEFAULT_TEMPERATURE: f64 = 0.05;
pub const DEFAULT_STRENGTH: f64 = 0.5;

pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "variant",
        ty: ParamType::Choice(VARIANTS),
        default: ParamDefault::Str("phase2a"),
        doc: "`phase2a`: the project's design notes (feature self-correlation softmax, blended \
              with the input); not the published method. `paper`: CLIPtrase (ECCV'24): \
              qq+kk+vv last block, layer-11 self-correlation clusters (DBSCAN), median-filtered \
              cluster regions, per-region vote.",
    },
    ParamSpec {
        name: "correlation_temperature",
        ty: ParamType::Float {
            min: 1e-4,
            max: 10.0,
        },
        default: ParamDefault::Float(DEFAULT_TEMPERATURE),
        doc: "phase2a: temperature τ of softmax_rows(f̂ f̂ᵀ / τ) over cosine similarities \
              (design notes: 0.05). Smaller is sharper.",
    },
    ParamSpec {
        name: "recalibration_strength",
        ty: ParamType::Float { min: 0.0, max: 1.0 },
        default: ParamDefault::Float(DEFAULT_STRENGTH),
        doc: "phase2a: α in out = (1 − α)·f̂ + α·W f̂ (design notes: 0.5). 0 leaves the \
              features' directions unchanged.",
    },
    ParamSpec {
        name: "eps",
        ty: ParamType::Float {
            min: 1e-6,
            max: 1e3,
        },
        default: ParamDefault::None,
        doc: "paper: DBSCAN ε (Euclidean, on rows of the global-removed self-correlation). \
              Unset: 0.7 for grids up to 318 patches (224 px crops), else 1.1 (336 px), as \
              upstream.",
    },
    ParamSpec {
        name: "min_samples",
        ty: ParamType::Int {
            min: 1,
            max: 100_000,
        },
        default: ParamDefault::None,
        doc: "paper: DBSCAN min_samples, the point itself included. Unset: 3 for grids up to \
              318 patches (224 px crops), else 7 (336 px), as upstream.",
    },
    ParamSpec {
        name: "vote",
        ty: ParamType::Choice(VOTES),
        default: ParamDefault::Str("mean-logits"),
        doc: "paper: `majority` is the paper's (README) method and issue #5's: each region's \
              pixels get the query most of them argmax to, per window, output as that query's \
              text embedding; use it with `[inference] mode = \"whole\"`, because per-window \
              label maps cannot be averaged across overlapping slide windows. `mean-logits` \
              (default; the authors' d2 version): a region's pixels take the mean of its \
              upsampled logits, which averages across windows and so works in both modes.",
    },
    ParamSpec {
        name: "correlation_layer",
        ty: ParamType::Int { min: 1, max: 64 },
        default: ParamDefault::Int(11),
        doc: "paper: 1-based layer whose q, k, v give the self-correlation (upstream: 11, the \
              penultimate layer of ViT-B/16).",
    },
];
