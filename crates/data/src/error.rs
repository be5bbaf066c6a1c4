//! The one error type of segsweep-data.

use std::fmt;
use std::path::{Path, PathBuf};

/// Result alias used across this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Errors raised while reading, preparing, checking or scoring datasets.
///
/// Every variant names the file, dataset or key involved and, where it helps, a hint. A message
/// holds its cause's text, so no variant returns that cause again from `source()` (the binary
/// prints that chain too), and a hint ends the message.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read or written.
    #[error("{}: {cause}{}", .path.display(), hint_suffix(.hint))]
    Io {
        path: PathBuf,
        cause: std::io::Error,
        hint: Option<String>,
    },

    /// An image or label file could not be decoded (truncated, corrupt or unsupported).
    #[error("{}: cannot decode {what}: {msg}", .path.display())]
    Decode {
        path: PathBuf,
        what: &'static str,
        msg: String,
    },

    /// A label or image could not be encoded into `path`.
    #[error("{}: cannot encode {what}: {msg}", .path.display())]
    Encode {
        path: PathBuf,
        what: &'static str,
        msg: String,
    },

    /// A dataset root or a required directory/file is missing.
    #[error("dataset `{dataset}`: {what} not found at {}{}", .path.display(), hint_suffix(.hint))]
    Missing {
        dataset: String,
        what: String,
        path: PathBuf,
        hint: Option<String>,
    },

    /// No dataset is registered under this name.
    #[error("unknown dataset `{name}`; registered datasets: {} (hint: `synthetic` is generated and `custom` is declared by a spec's [dataset.custom]; neither has files to prepare; check a custom one with `segsweep data check --spec SPEC`)", .known.join(", "))]
    UnknownDataset { name: String, known: Vec<String> },

    /// A label map does not have the size of its image (or of the prediction).
    #[error("{}: size {}×{} (h×w) differs from {other} {}×{}", .path.display(), .got.0, .got.1, .expected.0, .expected.1)]
    SizeMismatch {
        path: PathBuf,
        got: (usize, usize),
        other: String,
        expected: (usize, usize),
    },

    /// A label or prediction holds ids that are neither a class nor the ignore index.
    #[error("{}: label id {id} is out of range for {n_classes} classes (ignore index {ignore}){}", .path.display(), hint_suffix(.hint))]
    IdOutOfRange {
        path: PathBuf,
        id: u32,
        n_classes: usize,
        ignore: u32,
        hint: Option<String>,
    },

    /// A class-name file is malformed.
    #[error("class-name file {source_name}: {msg}")]
    ClassNames { source_name: String, msg: String },

    /// A configuration key has a bad value.
    #[error("`{key}`: {msg}")]
    Config { key: String, msg: String },

    /// Metric states of different class counts cannot be merged or scored together.
    #[error("metric: {0}")]
    Metric(String),

    /// A JSON (de)serialisation failed.
    #[error("{}: {cause}", .path.display())]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!(" (hint: {h})"))
        .unwrap_or_default()
}

impl DataError {
    /// An I/O error on `path`, without a hint.
    pub fn io(path: impl AsRef<Path>, cause: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().to_path_buf(),
            cause,
            hint: None,
        }
    }

    /// A decode error on `path`.
    pub fn decode(path: impl AsRef<Path>, what: &'static str, msg: impl fmt::Display) -> Self {
        DataError::Decode {
            path: path.as_ref().to_path_buf(),
            what,
            msg: msg.to_string(),
        }
    }

    /// A configuration error on `key`.
    pub fn config(key: impl fmt::Display, msg: impl fmt::Display) -> Self {
        DataError::Config {
            key: key.to_string(),
            msg: msg.to_string(),
        }
    }

    /// The file this error is about, where there is one (used by `--skip-bad` reports).
    pub fn path(&self) -> Option<&Path> {
        match self {
            DataError::Io { path, .. }
            | DataError::Decode { path, .. }
            | DataError::Encode { path, .. }
            | DataError::Missing { path, .. }
            | DataError::SizeMismatch { path, .. }
            | DataError::IdOutOfRange { path, .. }
            | DataError::Json { path, .. } => Some(path),
            _ => None,
        }
    }
}
