//! The `loftup` plugin's parameters.

use segsweep_core::{ParamDefault, ParamSpec, ParamType};

/// `input_norm` choices: the statistics the guidance image (and, for `maskclip-rerun`, the CLIP
/// input) is re-normalised with.
pub const INPUT_NORMS: &[&str] = &["imagenet", "clip"];

/// `feature_source` choices.
pub const FEATURE_SOURCES: &[&str] = &["maskclip-rerun", "maskclip", "pipeline"];

pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "checkpoint",
        ty: ParamType::Str,
        default: ParamDefault::Str(crate::checkpoint::DEFAULT_REPO),
        doc: "LoftUp weights: a `pytorch_model.bin` path, a directory holding one, or a Hugging \
              Face repo id looked up in the hf-hub cache first (HF_HOME, HF_HUB_OFFLINE honoured). \
              Default: the released CLIP ViT-B/16 upsampler `haiwen/loftup-clip`. Read at build \
              time: a missing file fails before any work starts.",
    },
    ParamSpec {
        name: "input_norm",
        ty: ParamType::Choice(INPUT_NORMS),
        default: ParamDefault::Str("imagenet"),
        doc: "Normalisation of the guidance image (crops are de-normalised with the backbone's \
              mean/std first) and of the CLIP input for `feature_source = \"maskclip-rerun\"`. \
              `imagenet` (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225) is what the checkpoint was \
              trained with (upstream `layers.py` `norm`). For the guidance alone the choice only \
              changes rounding: LoftUp min-max scales each channel first.",
    },
    ParamSpec {
        name: "feature_source",
        ty: ParamType::Choice(FEATURE_SOURCES),
        default: ParamDefault::Str("maskclip-rerun"),
        doc: "Which LR features are upsampled. `maskclip-rerun` (default; what the checkpoint \
              was trained on): re-run the backbone prefix on the crops re-normalised with \
              `input_norm`, then ln_post(out_proj(v_proj(ln_1 x))) @ proj with no residual and \
              no FFN; faithful whatever the spec's attention and normalisation, at one extra \
              backbone pass per crop (none when the crops already have `input_norm`'s \
              statistics). `maskclip`: the same block on the pipeline's cached prefix (faithful \
              with `[model] normalisation = \"imagenet\"`). `pipeline` (a deviation): the \
              incoming patch features, i.e. whatever `[inference] attention` and earlier \
              feature plugins produced; SCLIP/ResCLIP features are outside LoftUp's training \
              distribution.",
    },
    ParamSpec {
        name: "output_stride",
        ty: ParamType::Int { min: 1, max: 16 },
        default: ParamDefault::Int(1),
        doc: "Output features at the crop size divided by this (rounded up), by area-averaging \
              the guidance image first (LoftUp outputs at the guidance resolution). 1 = per-pixel \
              as upstream; 2 and 4 cost about 4× and 16× less time and memory.",
    },
    ParamSpec {
        name: "tile_rows",
        ty: ParamType::Int { min: 1, max: 4096 },
        default: ParamDefault::Int(16),
        doc: "Output rows processed at once. Bounds peak memory (the 532-channel maps and the \
              3×3 convolutions' im2col buffers grow with rows × width); results do not depend on \
              it beyond float rounding.",
    },
];
