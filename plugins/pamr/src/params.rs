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
        ty: ParamType::Choice(&["resized", "original"]),
        default: ParamDefault::Str("resized"),
        doc: "Which image guides the affinities. `resized` (default; the reference's guide, \
              methods.md §0): the image as the pipeline resized it for the backbone (short side \
              = `[dataset] short_side` or the dataset's default, or `guide_short_side` when set; mmcv-exact bilinear on \
              uint8), bilinearly resized back to the original size, i.e. slightly blurred; the \
              original image when the pipeline does not resize. `original`: the image at its own \
              size.",
    },
    ParamSpec {
        name: "guide_short_side",
        ty: ParamType::Int { min: 16, max: 4096 },
        default: ParamDefault::None,
        doc: "Optional override of the `resized` guide's short side in pixels (mmcv imrescale \
              with a 2048 long-side cap). Unset: the running pipeline's `[inference] \
              short_side`, as the reference. An error with `guide = \"original\"`.",
    },
];
