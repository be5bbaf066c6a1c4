//! The declared parameters of the `clip-rc` plugin.

use segsweep_core::{ParamDefault, ParamSpec, ParamType};

/// Values of `variant`. The published CLIP-RC is trained and deliberately absent.
pub const VARIANTS: &[&str] = &["phase2a"];

pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "variant",
        ty: ParamType::Choice(VARIANTS),
        default: ParamDefault::Str("phase2a"),
        doc: "`phase2a`: the design notes' training-free regional clues (our own method). The \
              published CLIP-RC (CVPR'24) is trained and not implemented.",
    },
    ParamSpec {
        name: "num_regions",
        ty: ParamType::Int { min: 1, max: 64 },
        default: ParamDefault::Int(4),
        doc: "Regions per axis of the crop's feature grid; num_regions² regions in all \
              (design notes: 4).",
    },
    ParamSpec {
        name: "region_overlap",
        ty: ParamType::Float { min: 0.0, max: 0.9 },
        default: ParamDefault::Float(0.25),
        doc: "Overlap of neighbouring regions as a fraction of the region size; regions have \
              size s = len / (n − (n − 1)·overlap) cells and step s·(1 − overlap) \
              (design notes: 0.25).",
    },
    ParamSpec {
        name: "regional_weight",
        ty: ParamType::Float { min: 0.0, max: 1.0 },
        default: ParamDefault::Float(0.6),
        doc: "β in mix = (1 − β)·global + β·regional, global being the crop's mean feature \
              (design notes: 0.6).",
    },
    ParamSpec {
        name: "residual_weight",
        ty: ParamType::Float { min: 0.0, max: 1.0 },
        default: ParamDefault::Float(0.5),
        doc: "ρ in out = ρ·f̂ + (1 − ρ)·mix: the share of the original normalised features. \
              0.5 equals the additive residual out = f̂ + mix after the head's normalisation \
              (our choice; the design notes give no value).",
    },
    ParamSpec {
        name: "distance_sigma",
        ty: ParamType::Float {
            min: 0.01,
            max: 100.0,
        },
        default: ParamDefault::Float(0.5),
        doc: "σ of the Gaussian weight exp(−d²/2σ²) of a region for a cell it contains, d being \
              the cell-to-region-centre distance in units of the region size (our choice).",
    },
];
