//! The one error type of the LoftUp plugin.

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading or running the LoftUp checkpoint.
///
/// Each variant names the file, tensor key or shape involved; checkpoint errors say how to get
/// the file. A message holds its cause's text, so no variant returns that cause again from
/// `source()`; candle errors lose their backtrace on the way in.
#[derive(Debug, thiserror::Error)]
pub enum LoftUpError {
    /// The checkpoint is neither a readable file, nor a directory holding `pytorch_model.bin`,
    /// nor in the Hugging Face cache (and could not be downloaded).
    #[error("LoftUp checkpoint `{source_name}` not found: {reason}. {hint}")]
    CheckpointMissing {
        /// What the spec asked for (a path or a repo id).
        source_name: String,
        reason: String,
        hint: String,
    },

    /// The file exists but candle's pickle reader could not read it as a torch state dict.
    #[error("{path}: cannot read as a PyTorch state dict (`torch.save(state_dict)` zip format): {cause} (hint: the loftup entry's `checkpoint` names a LoftUp state dict such as haiwen/loftup-clip's pytorch_model.bin, by path or repo id; a partly downloaded file must be downloaded again)")]
    Read {
        path: PathBuf,
        cause: candle_core::Error,
    },

    /// A key the LoftUp architecture needs is absent from the state dict.
    #[error("{path}: missing tensor `{key}` (is this a LoftUp `UpsamplerwithChannelNorm` state dict such as haiwen/loftup-clip?)")]
    MissingKey { path: PathBuf, key: String },

    /// The state dict has keys the architecture does not use (torch's strict `load_state_dict`
    /// would refuse it too).
    #[error("{path}: unexpected tensors {keys:?} (not a LoftUp checkpoint with the `sine` LR positional encoding?)")]
    UnexpectedKeys { path: PathBuf, keys: Vec<String> },

    /// A tensor of the checkpoint, or an input, has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        what: String,
        expected: String,
        got: Vec<usize>,
    },

    /// A configuration value is inconsistent (e.g. channels not divisible by the heads).
    #[error("LoftUp configuration: {0}")]
    Config(String),

    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for LoftUpError {
    fn from(e: candle_core::Error) -> Self {
        LoftUpError::Candle(segsweep_core::without_backtrace(e))
    }
}

impl LoftUpError {
    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl Into<String>,
        got: &[usize],
    ) -> Self {
        LoftUpError::Shape {
            what: what.into(),
            expected: expected.into(),
            got: got.to_vec(),
        }
    }
}

impl From<LoftUpError> for segsweep_core::CoreError {
    fn from(e: LoftUpError) -> Self {
        segsweep_core::CoreError::plugin("loftup", e)
    }
}

/// Result alias of this crate.
pub type Result<T, E = LoftUpError> = std::result::Result<T, E>;
