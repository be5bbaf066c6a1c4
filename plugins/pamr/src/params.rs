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
];
