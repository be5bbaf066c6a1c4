//! The `segsweep` command line: sweeps, validation, plugin listing, plots, single-image
//! prediction, dataset tools, evaluation and stand-alone DenseCRF.
//!
//! Errors are printed with their whole chain (`{:#}`) and a non-zero exit code.

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

use std::io::IsTerminal;

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
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
