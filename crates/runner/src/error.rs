//! The runner's error type: every variant names the spec file, the key path or the plugin.

use std::path::PathBuf;

/// Errors while reading a spec, expanding a sweep or running it.
///
/// A variant's message holds its cause's text, so no variant returns that cause again from
/// `source()` (the binary prints the `source()` chain); a hint ends the message.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The spec is malformed or a value is invalid.
    #[error("{file}: {key}: {msg}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Spec {
        file: String,
        key: String,
        msg: String,
        hint: Option<String>,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {cause}{}", path.display(), hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
        hint: Option<String>,
    },
    #[error(transparent)]
    Core(#[from] segsweep_core::CoreError),
    #[error(transparent)]
    Clip(#[from] segsweep_clip::ClipError),
    #[error(transparent)]
    Data(#[from] segsweep_data::DataError),
    #[error(transparent)]
    Infer(#[from] segsweep_infer::InferError),
    #[error(transparent)]
    Report(#[from] segsweep_report::ReportError),
    #[error("configuration {hash} ({label}), image {image}: {cause}")]
    InConfig {
        hash: String,
        label: String,
        image: String,
        cause: Box<RunnerError>,
    },
    #[error("interrupted: every finished image is saved (checkpoints in counts/); re-run the same command to resume")]
    Interrupted,
    /// Code run by the sweep (a plugin's, most likely) panicked; the checkpoints were written.
    #[error("a panic during the run: {msg} (hint: its location is printed above; in a plugin of your own, return an error instead; what was finished before it is kept, so re-running the same command after the fix resumes)")]
    Panicked { msg: String },
    /// An interrupt before this call's run directory was set up (during the checks, model load
    /// or trials): nothing of this call was computed, and earlier calls' files are untouched.
    #[error("interrupted before the first image: this call computed nothing (the files of earlier calls, if any, are untouched)")]
    InterruptedBeforeStart,
}

pub type Result<T, E = RunnerError> = std::result::Result<T, E>;

impl RunnerError {
    /// Whether the run stopped for an interrupt (Ctrl-C, SIGTERM, `stop_after_images`), either
    /// kind: not a failure of the inputs.
    pub fn is_interrupt(&self) -> bool {
        matches!(self, Self::Interrupted | Self::InterruptedBeforeStart)
    }

    pub(crate) fn spec(
        file: &str,
        key: impl Into<String>,
        msg: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        RunnerError::Spec {
            file: file.to_string(),
            key: key.into(),
            msg: msg.into(),
            hint,
        }
    }
}
