//! The parameters of the `pamr` plugin.

use segsweep_core::{ParamDefault, ParamSpec, ParamType};

/// Schema of the `pamr` plugin (see the crate docs for the method).
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "steps",
        ty: ParamType::Int { min: 0, max: 100 },
        default: ParamDefault::Int(10),
        doc: "Number of propagation steps M ← Σ_j a_ij·M_j. 10 as in NACLIP's and ResCLIP's \
              PAMR numbers (SCLIP's default 0 means off); 0 leaves the maps unchanged.",
    },
    ParamSpec {
        name: "dilations",
        ty: ParamType::IntList { min: 1, max: 256 },
        default: ParamDefault::IntList(&[8, 16]),
        doc: "Neighbour offsets in pixels at the dense-map size; each adds the 8 neighbours of a \
              3×3 window with that dilation. (8, 16) as in SCLIP, NACLIP and ResCLIP.",
    },
    ParamSpec {
        name: "guide",
        ty: ParamType::Choice(&["original", "resized"]),
        default: ParamDefault::Str("original"),
        doc: "Which image guides the affinities: `original` (the image at its own size) or \
              `resized` (what SCLIP/NACLIP feed: the image resized to `guide_short_side` with \
              bilinear + uint8 rounding, then bilinearly resized back, i.e. slightly blurred).",
    },
    ParamSpec {
        name: "guide_short_side",
        ty: ParamType::Int { min: 16, max: 4096 },
        default: ParamDefault::Int(336),
        doc: "Short side in pixels of the `resized` guide (mmcv imrescale with a 2048 long-side \
              cap); set it to the spec's `[inference] short_side`. Unused with `original`.",
    },
];
