//! The one error type of segsweep-infer.

use segsweep_core::CoreError;

/// Result alias of this crate.
pub type Result<T, E = InferError> = std::result::Result<T, E>;

/// Errors raised while preparing or finishing dense inference.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A core type, a plugin or the backbone failed.
    #[error(transparent)]
    Core(#[from] CoreError),

    /// A tensor operation failed. Built through `From`, which drops candle's backtrace; the
    /// message holds the cause, so `source()` does not return it again.
    #[error("tensor operation failed: {0}")]
    Candle(candle_core::Error),

    /// An inference setting is out of range.
    #[error("inference setting `{key}`: {msg}")]
    Config { key: &'static str, msg: String },

    /// `finish` was called with settings that differ from the ones `prepare` used.
    #[error(
        "the image was prepared with `{key}` = {prepared} but this configuration asks for {asked} \
         (hint: configurations that share a prepared image must agree on mode, crop, stride and short_side)"
    )]
    PreparedMismatch {
        key: &'static str,
        prepared: String,
        asked: String,
    },

    /// A plugin reads backbone state that the prepared pass did not record.
    #[error(
        "plugin `{plugin}` needs {what}, which the prepared backbone pass did not record \
         (hint: pass the union of every configuration's needs to `prepare`)"
    )]
    MissingNeeds { plugin: String, what: String },

    /// The plugin list breaks the pipeline's rules.
    #[error("pipeline: {0}")]
    Pipeline(String),

    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        what: &'static str,
        expected: String,
        got: Vec<usize>,
    },
}

impl From<candle_core::Error> for InferError {
    fn from(e: candle_core::Error) -> Self {
        InferError::Candle(segsweep_core::without_backtrace(e))
    }
}
