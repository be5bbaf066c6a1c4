//! The one error type of the DenseCRF crate.

use segsweep_core::CoreError;

/// Result alias of this crate.
pub type Result<T, E = CrfError> = std::result::Result<T, E>;

/// What can go wrong when refining probabilities; each variant names the input or key.
#[derive(Debug, thiserror::Error)]
pub enum CrfError {
    /// An input had the wrong size or shape.
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },

    /// A parameter is out of range or unknown.
    #[error("parameter `{key}`: {msg}")]
    Param { key: String, msg: String },

    /// A probability was NaN, infinite or negative.
    #[error("probabilities: value {value} at (class {c}, y {y}, x {x}) is not a finite number ≥ 0 (hint: pass softmax probabilities, not logits)")]
    BadProbability {
        value: f32,
        c: usize,
        y: usize,
        x: usize,
    },

    /// An `.npy` file could not be read or written.
    #[error("{path}: {msg}")]
    Npy { path: String, msg: String },

    /// An error from segsweep-core (parameter access, tensors).
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl CrfError {
    pub(crate) fn core(e: CoreError) -> CrfError {
        CrfError::Core(e)
    }
}

impl From<CrfError> for CoreError {
    fn from(e: CrfError) -> CoreError {
        match e {
            CrfError::Core(c) => c,
            other => CoreError::plugin("densecrf", other),
        }
    }
}
