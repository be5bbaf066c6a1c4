//! The one error type of segsweep-clip.

use std::path::PathBuf;

/// What a model source may be, for hints.
const SOURCE_HINT: &str = "`[model] source` in a spec, `--model` on the command line: a local directory with config.json and model.safetensors (or pytorch_model.bin), a Hugging Face repo id such as `openai/clip-vit-base-patch16` (or `hf:openai/clip-vit-base-patch16`; downloaded once with network access), or `builtin:tiny-random`";

/// Errors raised while loading or running a CLIP model. Each variant names the file, key,
/// repo or prompt involved and, where it helps, how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// A tensor operation failed (shape mismatch, device, dtype). Built through `From`, which
    /// drops candle's backtrace.
    #[error("tensor operation failed: {0}")]
    Candle(candle_core::Error),

    /// An error from segsweep-core (passed through).
    #[error(transparent)]
    Core(#[from] segsweep_core::CoreError),

    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// `config.json` is missing, not JSON, or describes something this crate cannot run.
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },

    /// A weights file lacks a tensor or has one of the wrong shape.
    #[error("{path}: {msg} (hint: a damaged or partly downloaded file: download it again; otherwise the file must use the Hugging Face `CLIPModel` layout, e.g. `vision_model.encoder.layers.0.self_attn.q_proj.weight`, with the sizes config.json gives)")]
    Weights { path: PathBuf, msg: String },

    /// The source string is neither a directory, a repo id nor a `builtin:` name.
    #[error("model source `{spec}`: {msg} (hint: {SOURCE_HINT})")]
    Source { spec: String, msg: String },

    /// `HF_HUB_OFFLINE` is set and the repo is not in the local cache.
    #[error("model `{repo}` is not in the Hugging Face cache at {cache} and HF_HUB_OFFLINE is set (hint: download it once with network access, e.g. `HF_HUB_OFFLINE=0 segsweep predict --model hf:{repo} ...`, or `huggingface-cli download {repo} config.json model.safetensors`, or pass a local directory)")]
    Offline { repo: String, cache: PathBuf },

    /// Downloading from the Hugging Face hub failed.
    #[error("downloading `{file}` of `{repo}` from the Hugging Face hub failed: {msg} (hint: check the network, HF_ENDPOINT and HF_TOKEN, or pass a local directory)")]
    Hub {
        repo: String,
        file: String,
        msg: String,
    },

    /// A prompt could not be tokenised for the text tower.
    #[error("prompt `{prompt}`: {msg}")]
    Prompt { prompt: String, msg: String },

    /// A request the model cannot serve (unknown strategy, layer out of range, ...).
    #[error("{0}")]
    Invalid(String),
}

impl ClipError {
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        ClipError::Io {
            path: path.into(),
            cause,
        }
    }
}

impl From<candle_core::Error> for ClipError {
    fn from(e: candle_core::Error) -> Self {
        ClipError::Candle(segsweep_core::without_backtrace(e))
    }
}

/// Errors cross the `Backbone` trait as `CoreError`; the message keeps the file/key context.
impl From<ClipError> for segsweep_core::CoreError {
    fn from(e: ClipError) -> Self {
        match e {
            ClipError::Candle(c) => segsweep_core::CoreError::Candle(c),
            ClipError::Core(c) => c,
            other => segsweep_core::CoreError::Msg(format!("clip: {other}")),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ClipError> = std::result::Result<T, E>;
