//! segsweep-runner: from a TOML experiment spec to saved result records.
//!
//! Reading a spec is two steps: [`spec::load`] layers the raw sections (defaults < file <
//! `SEGSWEEP_*` environment < `--set`) into `deny_unknown_fields` structs, then
//! [`sweep::expand`] expands the sweep (variants × grid × zip × list) and validates every
//! configuration — plugins, parameters, stage order, ranges — into [`Config`]s with stable content
//! hashes, before any weights load. [`exec::run`] then runs them image-major, sharing each
//! image's backbone prefix across configurations, and writes one record per configuration.
//!
//! It does not draw or format results (that is `segsweep-report`) and does not implement any
//! model or method (those are `segsweep-clip`, `segsweep-infer` and the plugins).
//!
//! Design decision: a configuration is identified by the SHA-256 of its fully resolved settings,
//! not by its position in the sweep, so adding a value to a sweep never renames existing results
//! and a re-run skips exactly the configurations whose records exist.

pub mod error;
pub mod exec;
mod loader;
pub mod memory;
pub mod spec;
pub mod sweep;

pub use error::{Result, RunnerError};
pub use exec::{
    check_refiners, counts_of, default_run_id, finalize, load_clip, metrics_of, open_dataset, run,
    run_dir, swept_values, RunOptions, RunSummary,
};
pub use memory::{MemoryPlan, MemoryStats, Spill};
pub use spec::{load, load_text, parse_set, DatasetSection, LoadedSpec, RawSpec};
pub use sweep::{expand, Config, Experiment, Step, ATTENTIONS};

/// Read, layer and expand a spec in one call (what `segsweep validate` does).
pub fn load_experiment(path: &std::path::Path, sets: &[String]) -> Result<Experiment> {
    let sets: Vec<(String, toml::Value)> =
        sets.iter().map(|s| parse_set(s)).collect::<Result<_>>()?;
    let spec = load(path, &sets)?;
    expand(spec, &sets)
}

/// The git revision segsweep was built from (`unknown` outside a checkout).
pub fn git_rev() -> String {
    option_env!("SEGSWEEP_GIT_REV")
        .unwrap_or("unknown")
        .to_string()
}
