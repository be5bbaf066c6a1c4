//! The `segsweep` command line: sweeps, validation, plugin listing, plots, single-image
//! prediction, dataset tools, evaluation and stand-alone DenseCRF.
//!
//! Errors are printed with their whole chain, each cause once and hints last (see `render`),
//! and a non-zero exit code.

// Doc comments on clap arguments are the `--help` text users read, written for a terminal
// (`<output_dir>/<experiment>`, `[dataset] root`), not rustdoc markup.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

// The linker drops plugin crates that nothing names, and their registrations with them
// (inventory issue #50): name every plugin crate once, here.
use segsweep_plugin_clip_rc as _;
use segsweep_plugin_cliptrase as _;
use segsweep_plugin_densecrf as _;
use segsweep_plugin_loftup as _;
use segsweep_plugin_pamr as _;
use segsweep_plugin_resclip as _;

mod cmd_data;
mod cmd_plugins;
mod cmd_predict;
mod cmd_sweep;

use std::io::{IsTerminal, Write};

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "segsweep", version, about = "Sweeps of training-free open-vocabulary segmentation with CLIP", long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every configuration of an experiment spec and write tables and charts.
    Sweep(cmd_sweep::SweepArgs),
    /// Check a spec and print the expanded configurations (a dry run; loads no weights).
    Validate(cmd_sweep::ValidateArgs),
    /// List the registered refiner plugins, or show one with its parameters.
    Plugins(cmd_plugins::PluginsArgs),
    /// Redraw every chart and table of a run directory from its saved records.
    Plot(cmd_sweep::PlotArgs),
    /// Segment single images: probabilities (.npy), label PNG and overlay per image.
    Predict(Box<cmd_predict::PredictArgs>),
    /// Dataset tools: prepare, check, list.
    #[command(subcommand)]
    Data(cmd_data::DataCommand),
    /// Score a directory of prediction PNGs against a dataset's labels.
    Eval(cmd_data::EvalArgs),
    /// Refine a probability map (C × H × W .npy) with a fully connected CRF.
    Densecrf(cmd_data::DenseCrfArgs),
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,segsweep=info,segsweep_runner=info",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn main() {
    // candle attaches a stack trace to its errors, printed as part of the message, whenever
    // RUST_BACKTRACE or RUST_LIB_BACKTRACE asks for library backtraces; a user who set
    // RUST_BACKTRACE=1 for panics must not get 30 lines of frames inside an error message. Unless
    // library backtraces were asked for by name, turn them off (panics still follow
    // RUST_BACKTRACE). This runs first, while the process has one thread, and before std reads
    // and caches the variable. The error types strip candle's backtraces as well (explicit opt-in).
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // With SEGSWEEP_PIPELINE=1 a sweep on a GPU computes the next image batch's prefixes on a
    // second thread (its own stream), and cuBLAS gives the same bits with concurrent streams
    // only with fixed workspaces (its documented setting for reproducible results, which may
    // cost some speed, so only then). Set here, before cuBLAS starts, unless the user chose one.
    #[cfg(feature = "cuda")]
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none()
        && std::env::var("SEGSWEEP_PIPELINE").as_deref() == Ok("1")
    {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    // Rust ignores SIGPIPE, so `segsweep validate spec.toml | head -1` panicked in `println!`
    // once `head` closed the pipe. Restore the default action, as other command-line tools
    // have: the process ends quietly. (A sweep killed this way keeps everything but the image
    // in flight, as after Ctrl-C.)
    #[cfg(unix)]
    // SAFETY: called before any other thread exists; SIG_DFL is a valid action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Sweep(a) => cmd_sweep::sweep(a),
        Command::Validate(a) => cmd_sweep::validate(a),
        Command::Plugins(a) => cmd_plugins::run(a),
        Command::Plot(a) => cmd_sweep::plot(a),
        Command::Predict(a) => cmd_predict::run(*a),
        Command::Data(c) => cmd_data::data(c),
        Command::Eval(a) => cmd_data::eval(a),
        Command::Densecrf(a) => cmd_data::densecrf(a),
    };
    if let Err(e) = result {
        tracing::debug!("error chain: {e:?}");
        // Not eprintln!: with the terminal gone (a hangup) it would panic instead of exiting.
        let _ = writeln!(std::io::stderr(), "error: {}", render(&e));
        // An interrupt is not a failure of the inputs: 130 (128 + SIGINT), as shells report
        // a Ctrl-C, so scripts can tell the two apart.
        let interrupted = e
            .downcast_ref::<segsweep_runner::RunnerError>()
            .is_some_and(segsweep_runner::RunnerError::is_interrupt);
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}

const HINT: &str = "\n  hint: ";

/// `e` and its causes joined by ": " like anyhow's `{:#}`, but each cause once and hints last.
///
/// segsweep's error types hold their cause's text in their message and return no `source()`;
/// some other libraries' errors do both, so a cause whose text is already printed is skipped.
/// A hint (`"\n  hint: ..."`) of any layer moves to the end, after the innermost cause.
fn render(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut hints: Vec<String> = Vec::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        let (body, hint) = match msg.split_once(HINT) {
            Some((body, hint)) => (body, Some(hint)),
            None => (msg.as_str(), None),
        };
        // Some layers (plugin parameters, the binary's own checks) end their message with an
        // inline ` (hint: ...)`; it is printed like every other hint.
        let (body, inline) = split_inline_hint(body);
        if !body.is_empty() && !text.contains(body) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(body);
        }
        for h in [inline, hint].into_iter().flatten() {
            if !hints.iter().any(|x| x == h) {
                hints.push(h.to_string());
            }
        }
    }
    for h in hints {
        text.push_str(HINT);
        text.push_str(&h);
    }
    text
}

/// `"msg (hint: h)"` → `("msg", Some("h"))` when the message ends with the hint and its
/// parentheses balance; anything else is returned whole.
fn split_inline_hint(msg: &str) -> (&str, Option<&str>) {
    const OPEN: &str = " (hint: ";
    // The last ` (hint: ` first: a message may quote an inner error with a hint of its own.
    if let (Some(at), true) = (msg.rfind(OPEN), msg.ends_with(')')) {
        let hint = &msg[at + OPEN.len()..msg.len() - 1];
        if hint.matches('(').count() == hint.matches(')').count() {
            return (&msg[..at], Some(hint));
        }
    }
    (msg, None)
}

#[cfg(test)]
mod tests {
    use super::{render, split_inline_hint};

    #[test]
    fn an_inline_hint_moves_to_the_hint_lines() {
        assert_eq!(
            split_inline_hint("bad `x` (hint: use (a) or b)"),
            ("bad `x`", Some("use (a) or b"))
        );
        assert_eq!(split_inline_hint("f(x) is (odd)"), ("f(x) is (odd)", None));
        assert_eq!(
            split_inline_hint("A (hint: x); B (hint: y)"),
            ("A (hint: x); B", Some("y"))
        );
        let e = anyhow::anyhow!("plugin `p`, parameter `k`: out of range (hint: in [0, 1])")
            .context("spec.toml: pipeline[0]\n  hint: see README");
        assert_eq!(
            render(&e),
            "spec.toml: pipeline[0]: plugin `p`, parameter `k`: out of range\n  hint: see README\n  hint: in [0, 1]"
        );
    }

    /// An error that prints its cause and also returns it from `source()`, as some libraries do.
    #[derive(Debug)]
    struct Both {
        path: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for Both {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}\n  hint: check the path", self.path, self.source)
        }
    }

    impl std::error::Error for Both {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_printed_by_its_wrapper_is_not_printed_again_and_the_hint_comes_last() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(Both {
            path: "x.toml".into(),
            source: io,
        })
        .context("sweep x.toml");
        assert_eq!(
            render(&e),
            "sweep x.toml: x.toml: entity not found\n  hint: check the path"
        );
    }

    #[test]
    fn a_chain_of_distinct_causes_is_joined_like_anyhow_alternate() {
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(render(&e), format!("{e:#}"));
    }
}
