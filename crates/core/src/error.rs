//! The one error type of segsweep-core.

use std::fmt;

/// Result alias used across core and plugins.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Errors raised by core types, parameter validation, the registry and plugins.
///
/// Every variant names what went wrong (plugin, key, shape) and, where it helps, a hint.
///
/// Like every error enum of the workspace, a variant's message is complete: it holds its cause's
/// text and does not also return the cause from `source()`, so a printer that walks the chain
/// (`{:#}` in the binary) shows each cause once and a hint stays last.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A tensor operation failed (built through `From`, which drops candle's backtrace).
    #[error("tensor operation failed: {0}")]
    Candle(candle_core::Error),

    /// A plugin parameter is missing, of the wrong type or out of range.
    #[error("plugin `{plugin}`, parameter `{key}`: {msg}{}", hint_suffix(.hint))]
    Param {
        plugin: String,
        key: String,
        msg: String,
        hint: Option<String>,
    },

    /// No plugin is registered under this name.
    #[error("unknown plugin `{name}`{}; registered plugins: {} (a plugin crate of your own registers only when crates/cli/src/main.rs names it: `use segsweep_plugin_NAME as _;`, see README \"Writing a plugin\")", nearest_suffix(.nearest), .known.join(", "))]
    UnknownPlugin {
        name: String,
        known: Vec<String>,
        nearest: Option<String>,
    },

    /// Two plugin crates registered the same name.
    #[error("plugin name `{0}` is registered twice; plugin names must be unique (hint: two crates named in crates/cli/src/main.rs register `{0}` with `register_plugin!`: rename one `PluginSpec::name`; until then no command can read the plugin registry)")]
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
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },

    /// Anything else, with a message that says what and where.
    #[error("{0}")]
    Msg(String),
}

impl From<candle_core::Error> for CoreError {
    fn from(e: candle_core::Error) -> Self {
        CoreError::Candle(without_backtrace(e))
    }
}

/// `e` without the stack traces candle attaches when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` is
/// set (`Error::WithBacktrace`, also inside `Context` and `WithPath`): candle prints them as
/// part of the message, and a user-facing message must not hold 30 lines of frames. Every
/// conversion of a candle error into a segsweep error goes through here.
pub fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => without_backtrace(*inner),
        E::Context { inner, context } => E::Context {
            inner: Box::new(without_backtrace(*inner)),
            context,
        },
        E::WithPath { inner, path } => E::WithPath {
            inner: Box::new(without_backtrace(*inner)),
            path,
        },
        other => other,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_candle_error_loses_its_backtrace_also_inside_context_and_path() {
        let traced = |msg: &str| candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg(msg.into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert_eq!(
            CoreError::from(traced("bad shape")).to_string(),
            "tensor operation failed: bad shape"
        );
        let nested = traced("no tensor")
            .with_path("w.safetensors")
            .context("loading");
        let msg = CoreError::from(nested).to_string();
        assert!(
            msg.ends_with("no tensor") && !msg.contains("Backtrace"),
            "{msg}"
        );
        assert!(msg.lines().count() <= 2, "{msg}");
    }

    #[test]
    fn an_io_error_is_printed_by_display_only_not_again_as_source() {
        let e = CoreError::Io {
            path: "x.npy".into(),
            cause: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(e.to_string(), "x.npy: entity not found");
        assert!(e.source().is_none());
    }
}
