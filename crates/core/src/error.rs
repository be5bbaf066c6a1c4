//! The one error type of segsweep-core.

use std::fmt;

/// Result alias used across core and plugins.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Errors raised by core types, parameter validation, the registry and plugins.
///
/// Every variant names what went wrong (plugin, key, shape) and, where it helps, a hint.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// A plugin parameter is missing, of the wrong type or out of range.
    #[error("plugin `{plugin}`, parameter `{key}`: {msg}{}", hint_suffix(.hint))]
    Param {
        plugin: String,
        key: String,
        msg: String,
        hint: Option<String>,
    },

    /// No plugin is registered under this name.
    #[error("unknown plugin `{name}`{}; registered plugins: {}", nearest_suffix(.nearest), .known.join(", "))]
    UnknownPlugin {
        name: String,
        known: Vec<String>,
        nearest: Option<String>,
    },

    /// Two plugin crates registered the same name.
    #[error("plugin name `{0}` is registered twice; plugin names must be unique")]
    DuplicatePlugin(String),

    /// A plugin was asked to run at a stage it does not implement.
    #[error("plugin `{plugin}` does not implement the {stage} stage")]
    WrongStage { plugin: String, stage: String },

    /// A tensor had an unexpected shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        what: String,
        expected: String,
        got: Vec<usize>,
    },

    /// A plugin failed for a reason of its own.
    #[error("plugin `{plugin}`: {msg}")]
    Plugin { plugin: String, msg: String },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Anything else, with a message that says what and where.
    #[error("{0}")]
    Msg(String),
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!(" (hint: {h})"))
        .unwrap_or_default()
}

fn nearest_suffix(nearest: &Option<String>) -> String {
    nearest
        .as_ref()
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default()
}

impl CoreError {
    /// Shorthand for a [`CoreError::Plugin`] error.
    pub fn plugin(plugin: impl fmt::Display, msg: impl fmt::Display) -> Self {
        CoreError::Plugin {
            plugin: plugin.to_string(),
            msg: msg.to_string(),
        }
    }

    /// Shorthand for a [`CoreError::Shape`] error.
    pub fn shape(what: impl fmt::Display, expected: impl fmt::Display, got: &[usize]) -> Self {
        CoreError::Shape {
            what: what.to_string(),
            expected: expected.to_string(),
            got: got.to_vec(),
        }
    }
}
