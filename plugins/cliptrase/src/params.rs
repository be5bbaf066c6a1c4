//! The declared parameters of the `cliptrase` plugin.

use segsweep_core::{ParamDefault, ParamSpec, ParamType};

/// Values of `variant`.
pub const VARIANTS: &[&str] = &["phase2a"];

/// Defaults, shared by the schema and by the check that a variant's foreign keys stay unset.
pub const DEFAULT_TEMPERATURE: f64 = 0.05;
pub const DEFAULT_STRENGTH: f64 = 0.5;

pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "variant",
        ty: ParamType::Choice(VARIANTS),
        default: ParamDefault::Str("phase2a"),
        doc: "`phase2a`: the project's design notes (feature self-correlation softmax, blended \
              with the input); not the published method.",
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
];
