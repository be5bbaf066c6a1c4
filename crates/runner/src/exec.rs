//! Step 3: run the configurations, image-major, and save a record per configuration.
//!
//! Configurations that share the model, the dataset and every setting before the last block
//! (resize, windows, batch) form a group: each image's backbone prefix is computed once and every
//! configuration's tail runs on it (`segsweep_infer::prepare` / `finish`). Counts are additive
//! integers, so a configuration's partial counts are checkpointed (`counts/<hash>.partial.json`,
//! written atomically) between image batches at most every 2 seconds, and whenever
//! the run stops (finished, Ctrl-C, an error): Ctrl-C and errors lose at most the image in
//! flight, a kill at most the last two seconds and the batch in flight, and a resume gives
//! identical numbers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use segsweep_clip::{build_classifier, ClipModel, IMAGENET_TEMPLATES};
use segsweep_core::{Backbone, Classifier, Refiner, Stage};
use segsweep_data::{ClassNames, CustomConfig, Dataset, IouCounts, Sample, Subset};
use segsweep_report::{write_atomic, Counts, Metrics, Record, SweptValue};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunnerError};
use crate::memory::{FeatureCache, MemoryPlan, MemoryStats, PrefixCtx, PrefixSlot, Spill};
use crate::spec::{DatasetSection, ModelSection};
use crate::sweep::{hex12, Config, Experiment};

/// How to run an experiment.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run directory name under `<output_dir>/<experiment>/`; default: derived from the
    /// configurations' hashes, so re-running the same spec resumes the same run.
    pub run_id: Option<String>,
    /// Where registered datasets live when `[dataset] root` is not set (default `data`).
    pub data_dir: PathBuf,
    /// Where text-classifier embeddings are cached (default: `<output_dir>/.cache`).
    pub cache_dir: Option<PathBuf>,
    /// Show progress bars.
    pub progress: bool,
    /// Set to stop after the image in flight (Ctrl-C).
    pub cancel: Arc<AtomicBool>,
    /// Share each image's backbone prefix across the configurations that can (default true);
    /// false runs every configuration on its own (same numbers, more time).
    pub share_prefix: bool,
    /// Stop as if interrupted after this many images (over all groups); used to test and
    /// demonstrate resuming.
    pub stop_after_images: Option<usize>,
    /// Take a configuration's finished record from another run directory under the same
    /// `output_dir` (any experiment) when one exists for its hash and the same weights, instead
    /// of computing it again (default true; `--no-reuse` turns it off).
    pub reuse: bool,
    /// Compute the next image batch's backbone prefixes on a second thread while this one runs
    /// the configurations of the current batch: meant for a GPU, where each thread launches on
    /// its own stream, so the device computes the next prefixes while the host post-processes
    /// (on a CPU both share the same cores). `None` (default): off, until it has been measured
    /// and checked on a GPU. Results do not depend on it.
    pub pipeline: Option<bool>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_id: None,
            data_dir: "data".into(),
            cache_dir: None,
            progress: false,
            cancel: Arc::new(AtomicBool::new(false)),
            stop_after_images: None,
            share_prefix: true,
            reuse: true,
            pipeline: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    /// Every record of the run, in configuration order (finished earlier or now).
    pub records: Vec<Record>,
    /// Configurations skipped because an earlier run had finished them (in this run directory,
    /// or in another one: see `reused`).
    pub resumed: usize,
    /// Of `resumed`, those whose records were copied from other run directories, and which.
    pub reused: usize,
    pub reused_from: Vec<PathBuf>,
    /// Configurations computed by this call.
    pub ran: usize,
    /// Intermediates held, spilled and recomputed by this call (also in `memory.json`).
    pub memory: MemoryStats,
}

/// The default run id: a hash over the configuration hashes, so the same spec maps to the
/// same run directory.
pub fn default_run_id(exp: &Experiment) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for c in &exp.configs {
        h.update(c.hash.as_bytes());
    }
    format!("run-{}", hex12(&h.finalize()))
}

/// The run directory of an experiment.
pub fn run_dir(exp: &Experiment, opts: &RunOptions) -> PathBuf {
    let e = &exp.spec.raw.experiment;
    let id = opts.run_id.clone().unwrap_or_else(|| default_run_id(exp));
    e.output_dir.join(&e.name).join(id)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Partial {
    next_image: usize,
    counts: IouCounts,
    seconds: f64,
    skipped: usize,
    /// The weights the counts so far were computed with ([`BackboneInfo::file_hash`]); a
    /// resume with other weights under the same `model.source` is refused.
    ///
    /// [`BackboneInfo::file_hash`]: segsweep_core::BackboneInfo::file_hash
    #[serde(default)]
    model_file_hash: String,
    /// Images counted so far whose last block ran on a prefix read back from f16 (spill or
    /// feature cache): see [`Record::f16_prefix_images`].
    #[serde(default)]
    f16_prefix_images: usize,
    /// SHA-256 of the dataset's sample ids in order ([`samples_hash`]): a resume on another
    /// sample list (other files under the root, another `--data-dir`, a changed split) is
    /// refused instead of counting two lists' images as one. Empty in older checkpoints.
    #[serde(default)]
    samples: String,
}

/// SHA-256 (first 12 hex digits) of sample ids in order, one per line.
fn samples_hash(ids: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex12(&h.finalize())
}

impl Partial {
    /// Nothing counted yet, over `n_classes` classes.
    fn new(n_classes: usize) -> Partial {
        Partial {
            next_image: 0,
            counts: IouCounts::new(n_classes),
            seconds: 0.0,
            skipped: 0,
            model_file_hash: String::new(),
            f16_prefix_images: 0,
            samples: String::new(),
        }
    }
}

fn partial_path(dir: &Path, hash: &str) -> PathBuf {
    dir.join("counts").join(format!("{hash}.partial.json"))
}

fn record_path(dir: &Path, hash: &str) -> PathBuf {
    dir.join("counts").join(format!("{hash}.json"))
}

/// Run every configuration not finished yet, writing results as they complete.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunSummary> {
    if let Some(id) = &opts.run_id {
        crate::sweep::check_dir_name(id).map_err(|msg| {
            RunnerError::spec(
                &exp.spec.file(),
                "--run-id",
                msg,
                Some("a run id names one directory under <output_dir>/<experiment>/: letters, digits, `-`, `_`, `.` or `+`".into()),
            )
        })?;
    }
    let dir = run_dir(exp, opts);
    let mut pending: Vec<&Config> = Vec::new();
    let mut finished_configs: Vec<&Config> = Vec::new();
    let mut resumed = 0;
    for c in &exp.configs {
        // A record that scored no image (written by an older segsweep) is no result.
        let path = record_path(&dir, &c.hash);
        let finished =
            path.exists() && !matches!(segsweep_report::load_record(&path), Ok(r) if r.images == 0);
        if finished {
            finished_configs.push(c);
            resumed += 1;
        } else {
            pending.push(c);
        }
    }
    if resumed > 0 {
        check_finished_weights(exp, &dir)?;
        tracing::info!(
            "{resumed} configuration(s) already finished in {}; skipping them",
            dir.display()
        );
    }
    let reusable = if opts.reuse {
        reusable_records(exp, opts, &dir, &pending)
    } else {
        Vec::new()
    };
    pending.retain(|c| !reusable.iter().any(|(h, _, _)| *h == c.hash));
    let reused = reusable.len();
    let resumed = resumed + reused;
    let ran = pending.len();
    let mut models: HashMap<ModelSection, Arc<ClipModel>> = HashMap::new();
    let mut tally = Tally {
        images_done: 0,
        memory: MemoryStats::new(&exp.memory),
        empty: Vec::new(),
    };
    let groups = if opts.share_prefix {
        groups(&pending)
    } else {
        pending.iter().map(|c| vec![*c]).collect()
    };
    // Everything that can fail on a bad spec or missing files (dataset roots, class files,
    // plugin parameters and checkpoints, weights) fails here, before the run directory exists.
    let inputs = groups
        .iter()
        .map(|g| preflight(exp, opts, g, &mut models))
        .collect::<Result<Vec<_>>>()?;
    // Ctrl-C during preflight or the trials: stop before the run directory exists.
    for (group, input) in groups.iter().zip(&inputs) {
        if opts.cancel.load(Ordering::SeqCst) {
            return Err(RunnerError::InterruptedBeforeStart);
        }
        // The trial's own checks (while its prefix was computed) stop it as an interrupt too:
        // still before the run directory exists.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            trial(exp, opts, group, input)
        }))
        .unwrap_or_else(|panic| Err(panicked(panic)))
        .map_err(|e| {
            if e.is_interrupt() {
                RunnerError::InterruptedBeforeStart
            } else {
                e
            }
        })?;
    }
    // `stop_after_images = 0` stops as an interrupt before the first image would.
    if opts.cancel.load(Ordering::SeqCst) || (opts.stop_after_images == Some(0) && ran > 0) {
        return Err(RunnerError::InterruptedBeforeStart);
    }
    prepare_run_dir(exp, &dir)?;
    // Only now, with this spec's spec.toml and order.txt written: finished records take its
    // names (an interrupt or error before this point leaves the directory as it was).
    for c in &finished_configs {
        relabel(&record_path(&dir, &c.hash), c)?;
    }
    let mut reused_from: Vec<PathBuf> = Vec::new();
    for (hash, record, src) in &reusable {
        let json = serde_json::to_string_pretty(record)
            .map_err(|e| RunnerError::spec("record", "json", e.to_string(), None))?;
        write_atomic(&record_path(&dir, hash), json.as_bytes())?;
        // A checkpoint of this configuration from an interrupted earlier call is obsolete.
        let _ = std::fs::remove_file(partial_path(&dir, hash));
        // The record keeps the run id that computed it (provenance).
        let run = src
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if !reused_from.contains(&run) {
            reused_from.push(run);
        }
    }
    if reused > 0 {
        tracing::info!(
            "{reused} configuration(s) finished in other runs with the same weights are reused, not computed again ({}); --no-reuse computes them again",
            reused_from
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Two bars: configurations finished, and images of the group in flight.
    let multi = if opts.progress {
        indicatif::MultiProgress::new()
    } else {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    };
    let configs_bar = multi.add(indicatif::ProgressBar::new(ran as u64));
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("configurations [{bar:40}] {pos}/{len} ({elapsed})")
    {
        configs_bar.set_style(style.progress_chars("=> "));
    }
    let bars = Bars {
        multi: &multi,
        configs: &configs_bar,
    };
    for (group, input) in groups.iter().zip(inputs) {
        run_group(exp, opts, &dir, group, input, &mut tally, &bars)?;
    }
    configs_bar.finish_and_clear();
    // The default scratch directory goes when empty (spill files are deleted after each image).
    if exp.memory.spill_dir.is_none() {
        let _ = std::fs::remove_dir(dir.join("cache"));
    }
    let records = finalize(exp, &dir, true)?;
    // A configuration that scored nothing has no result: it has no record, and the run fails.
    if let Some((label, skipped)) = tally.empty.first() {
        return Err(RunnerError::spec(
            &exp.spec.file(),
            "dataset",
            format!(
                "{} configuration(s) scored no image, e.g. {label}: all {skipped} sample(s) were skipped; no record was written for them",
                tally.empty.len()
            ),
            Some("skip_bad skipped every sample (the warnings above say why); fix the data or the [dataset] settings and run again (the other configurations are kept)".into()),
        ));
    }
    Ok(RunSummary {
        run_dir: dir,
        records,
        resumed,
        reused,
        reused_from,
        ran,
        memory: tally.memory,
    })
}

/// A caught panic's payload as an error (the panic hook has printed its location).
fn panicked(panic: Box<dyn std::any::Any + Send>) -> RunnerError {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    RunnerError::Panicked { msg }
}

/// A finished record keeps the numbers of its configuration hash, but takes this spec's names:
/// after variants are renamed (names are not hashed), the same command resumes the run
/// directory, and its tables, charts and `--baseline` must show the new names. A record that
/// cannot be read is left for [`finalize`] to report by name.
fn relabel(path: &Path, c: &Config) -> Result<()> {
    let Ok(mut r) = segsweep_report::load_record(path) else {
        return Ok(());
    };
    let swept = swept_values(c);
    if r.variant == c.variant && r.swept == swept {
        return Ok(());
    }
    r.variant = c.variant.clone();
    r.swept = swept;
    let json = serde_json::to_string_pretty(&r)
        .map_err(|e| RunnerError::spec("record", "json", e.to_string(), None))?;
    write_atomic(path, json.as_bytes())?;
    Ok(())
}

/// Finished records of `pending` configurations in other run directories under the spec's
/// `output_dir` (`<output_dir>/<experiment>/<run>/counts/<hash>.json`, any experiment: the hash
/// holds every setting of the configuration that can change a number), as `(hash, record)`.
/// A record is taken only when it passes every check `plot` makes, scored at least one image,
/// and what the hash does not hold agrees: the weights `model.source` holds now (weights that
/// cannot be told without loading or network, a hub repo not in the cache, are computed
/// instead), the kernels the device would use, and the dataset's sample ids (a registered
/// dataset's location is not hashed, so a copy with other samples must not lend its numbers).
/// The first run directory in name order wins. The record's `variant` and `swept` are the
/// current spec's (the numbers are the configuration's; the names are this spec's). Each comes
/// with the file it was read from.
fn reusable_records(
    exp: &Experiment,
    opts: &RunOptions,
    dir: &Path,
    pending: &[&Config],
) -> Vec<(String, Record, PathBuf)> {
    let root = &exp.spec.raw.experiment.output_dir;
    // Records whose numbers came from f16-stored prefixes are reused only by a run that may
    // store them in f16 itself.
    let f16_here = exp.memory.spill == Spill::F16 || exp.memory.feature_cache == Spill::F16;
    let subdirs = |p: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        v.sort();
        v
    };
    let counts_dirs: Vec<PathBuf> = subdirs(root)
        .iter()
        .flat_map(|e| subdirs(e))
        .filter(|run| run.as_path() != dir)
        .map(|run| run.join("counts"))
        .filter(|c| c.is_dir())
        .collect();
    if counts_dirs.is_empty() {
        return Vec::new();
    }
    let hub = segsweep_clip::HubEnv::from_env();
    let mut weights: HashMap<&str, Option<String>> = HashMap::new();
    // Per dataset section and seed: its sample ids and class display names (`None`: it does
    // not open, so nothing of it is reused and preflight reports why).
    type Identity = Option<(Vec<String>, Vec<String>)>;
    let mut datasets: HashMap<String, Identity> = HashMap::new();
    let this_rev = crate::git_rev();
    let mut other_revs = std::collections::BTreeSet::new();
    let mut found = Vec::new();
    for c in pending {
        let source = c.model.source.as_str();
        let Some(current) = weights
            .entry(source)
            .or_insert_with(|| ClipModel::weights_hash(source, &hub))
            .clone()
        else {
            continue;
        };
        let kernels = segsweep_kernels::kernels_for_name(&c.model.device);
        let dataset_name = dataset_display_name(c);
        for counts in &counts_dirs {
            let path = counts.join(format!("{}.json", c.hash));
            if !path.is_file() {
                continue;
            }
            // The dataset is opened (quietly: preflight reports its warnings) only for a
            // configuration that has a candidate, once per dataset section and seed.
            let key = format!("{:?} {}", c.dataset, c.seed);
            let Some((ids, class_display)) = datasets
                .entry(key)
                .or_insert_with(|| {
                    let ds = open_dataset_quiet(&c.dataset, c.seed, &opts.data_dir).ok()?;
                    let names = class_names(&c.dataset, &ds).ok()?.display_names();
                    Some((ds.ids(), names))
                })
                .clone()
            else {
                break;
            };
            let why_not = match segsweep_report::load_record(&path) {
                Ok(mut r) => {
                    let why = if r.model_file_hash != current {
                        "computed with other weights than model.source holds now"
                    } else if r.images == 0 {
                        "it scored no image"
                    } else if r.kernels != kernels {
                        "computed with other kernels"
                    } else if r.f16_prefix_images > 0 && !f16_here {
                        "computed on prefixes read back from f16, and this run keeps them exact"
                    } else if r.sample_ids != ids || r.images + r.skipped != ids.len() {
                        "computed on other samples"
                    } else if r.dataset != dataset_name || r.class_names != class_display {
                        "another dataset or class list"
                    } else if r.device != c.model.device || r.dtype != c.model.dtype {
                        "another device or dtype"
                    } else {
                        if r.git_rev != this_rev && r.git_rev != "unknown" {
                            other_revs.insert(r.git_rev.clone());
                        }
                        r.variant = c.variant.clone();
                        r.swept = swept_values(c);
                        // Provenance: the run that computed it, with its experiment when that
                        // is another one (run ids are unique only within an experiment).
                        let source_exp = counts
                            .parent()
                            .and_then(Path::parent)
                            .and_then(Path::file_name)
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        if source_exp != exp.spec.raw.experiment.name && !r.run_id.contains('/') {
                            r.run_id = format!("{source_exp}/{}", r.run_id);
                        }
                        found.push((c.hash.clone(), r, path.clone()));
                        break;
                    };
                    why.to_string()
                }
                Err(e) => format!("damaged ({e})"),
            };
            tracing::info!("not reusing {}: {why_not}", path.display());
        }
    }
    warn_other_revisions("reused records", &this_rev, other_revs, "pass --no-reuse");
    found
}

/// The dataset name a record holds: a custom dataset is known by the name its
/// `[dataset.custom]` table gives it.
fn dataset_display_name(c: &Config) -> String {
    match (&c.dataset.custom, c.dataset.name.as_str()) {
        (Some(custom), "custom") => custom.name.clone(),
        _ => c.dataset.name.clone(),
    }
}

/// Warn that `what` (records being kept or reused) came from other git revisions of segsweep
/// than `this_rev`: the hash covers parameters and plugin versions, not code. Silent when
/// either side's revision is unknown (built outside a checkout).
fn warn_other_revisions(
    what: &str,
    this_rev: &str,
    revs: std::collections::BTreeSet<String>,
    instead: &str,
) {
    if !revs.is_empty() && this_rev != "unknown" {
        tracing::warn!(
            "{what} were computed by segsweep at git revision {} (this build: {this_rev}); they are kept, not recomputed. If a change since then alters what a plugin computes, bump that plugin's `version` (it is part of the hash) or {instead}",
            revs.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
}

/// A configuration's swept values as its record holds them.
pub fn swept_values(c: &Config) -> Vec<SweptValue> {
    c.swept
        .iter()
        .map(|(k, v)| SweptValue {
            path: k.clone(),
            value: v.to_string(),
            number: v.as_float().or_else(|| v.as_integer().map(|i| i as f64)),
        })
        .collect()
}

/// A finished configuration is skipped on resume; refuse that when the files behind its
/// `model.source` now hold other weights than its record was computed with (a checkpoint is
/// checked the same way in `run_group`). Sources whose hash cannot be told without loading
/// or network (a hub repo not in the cache) are not checked. Records written by another git
/// revision of segsweep get a warning.
fn check_finished_weights(exp: &Experiment, dir: &Path) -> Result<()> {
    let hub = segsweep_clip::HubEnv::from_env();
    let mut now: HashMap<&str, Option<String>> = HashMap::new();
    let this_rev = crate::git_rev();
    let mut other_revs = std::collections::BTreeSet::new();
    for c in &exp.configs {
        let path = record_path(dir, &c.hash);
        if !path.exists() {
            continue;
        }
        let source = c.model.source.as_str();
        let text = std::fs::read_to_string(&path).map_err(|e| RunnerError::Io {
            path: path.clone(),
            cause: e,
            hint: Some("a finished configuration's record must be readable to resume".into()),
        })?;
        // Only these fields; a damaged record is reported with every check by `finalize`.
        let value = serde_json::from_str::<serde_json::Value>(&text).ok();
        // A record that scored no image is no result: it is computed again, not resumed.
        if value.as_ref().and_then(|v| v.get("images")?.as_u64()) == Some(0) {
            continue;
        }
        let field = |k: &str| value.as_ref()?.get(k)?.as_str().map(str::to_string);
        if let Some(rev) = field("git_rev").filter(|r| *r != this_rev && r != "unknown") {
            other_revs.insert(rev);
        }
        let recorded = field("model_file_hash");
        let Some(current) = now
            .entry(source)
            .or_insert_with(|| ClipModel::weights_hash(source, &hub))
            .as_deref()
        else {
            continue;
        };
        if let Some(recorded) = recorded.filter(|r| !r.is_empty() && r != current) {
            return Err(RunnerError::spec(
                &path.display().to_string(),
                "(finished configuration)",
                format!(
                    "its results come from weights {recorded} but {source} now holds weights {current}"
                ),
                Some("the files behind model.source changed since this run: pass --run-id NEW to compute the new weights' results beside these, or restore the old files".into()),
            ));
        }
    }
    // The hash covers parameters and plugin versions, not code: say when another build wrote
    // the results being kept.
    warn_other_revisions(
        &format!("finished configurations in {}", dir.display()),
        &this_rev,
        other_revs,
        "pass --run-id NEW --no-reuse",
    );
    Ok(())
}

fn prepare_run_dir(exp: &Experiment, dir: &Path) -> Result<()> {
    let unwritable = |p: &Path, e: std::io::Error| RunnerError::Io {
        path: p.to_path_buf(),
        cause: e,
        hint: Some(
            "choose a writable [experiment] output_dir (or --set experiment.output_dir=...)".into(),
        ),
    };
    for sub in ["configs", "counts", "charts"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| unwritable(&dir.join(sub), e))?;
    }
    let spec_copy = dir.join("spec.toml");
    // Another spec run into this directory (a reused --run-id): the earlier one is kept as
    // spec.N.toml, so the records it produced can still be read against it.
    if let Ok(old) = std::fs::read_to_string(&spec_copy) {
        if old != exp.spec.text {
            let kept = (1..)
                .map(|n| dir.join(format!("spec.{n}.toml")))
                .find(|p| !p.exists())
                .unwrap_or_else(|| dir.join("spec.old.toml"));
            std::fs::rename(&spec_copy, &kept).map_err(|e| unwritable(&kept, e))?;
            tracing::info!(
                "{} held another spec; kept as {}",
                spec_copy.display(),
                kept.display()
            );
        }
    }
    write_atomic(&spec_copy, exp.spec.text.as_bytes()).map_err(|e| match e {
        // The report error names the same path: keep only its cause.
        segsweep_report::ReportError::Write { cause, .. } => unwritable(&spec_copy, cause),
        other => other.into(),
    })?;
    for c in &exp.configs {
        let header = format!(
            "# segsweep resolved configuration {}\n# variant: {}\n# swept: {}\n\n",
            c.hash,
            c.variant,
            c.swept
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        write_atomic(
            &dir.join("configs").join(format!("{}.toml", c.hash)),
            (header + &c.resolved).as_bytes(),
        )?;
    }
    let order: Vec<&str> = exp.configs.iter().map(|c| c.hash.as_str()).collect();
    // One hash per line, each ended by a newline (`while read` and `wc -l` see them all).
    let mut text = order.join("\n");
    text.push('\n');
    write_atomic(&dir.join("order.txt"), text.as_bytes())?;
    Ok(())
}

/// Group configurations that can share each image's backbone prefix.
fn groups<'a>(pending: &[&'a Config]) -> Vec<Vec<&'a Config>> {
    let key = |c: &Config| {
        let i = &c.inference;
        format!(
            "{:?}|{}|{}|{:?}|{}|{}|{:?}|{}",
            c.model,
            serde_json::to_string(&c.dataset).unwrap_or_default(),
            c.seed,
            i.mode,
            i.crop,
            i.stride,
            i.short_side,
            i.batch_size
        )
    };
    let mut out: Vec<(String, Vec<&Config>)> = Vec::new();
    for c in pending {
        let k = key(c);
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(c),
            None => out.push((k, vec![c])),
        }
    }
    out.into_iter().map(|(_, v)| v).collect()
}

fn device_of(m: &ModelSection) -> Result<Device> {
    if m.device == "cpu" {
        return Ok(Device::Cpu);
    }
    let n: usize = m.device.trim_start_matches("cuda:").parse().unwrap_or(0);
    segsweep_kernels::cuda_device(n).map_err(|e| {
        RunnerError::spec(
            "[model]",
            "model.device",
            format!(
                "cannot open {}: {}",
                m.device,
                segsweep_core::without_backtrace(e)
            ),
            Some(
                "a GPU run needs an NVIDIA driver and CUDA 13 libraries, and a binary built with `just build-cuda` (cargo feature `cuda`)".into(),
            ),
        )
    })
}

fn dtype_of(m: &ModelSection) -> DType {
    match m.dtype.as_str() {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => DType::F32,
    }
}

fn load_model(
    m: &ModelSection,
    cache: &mut HashMap<ModelSection, Arc<ClipModel>>,
) -> Result<Arc<ClipModel>> {
    if let Some(model) = cache.get(m) {
        return Ok(model.clone());
    }
    tracing::info!("loading model {} ({}, {})", m.source, m.dtype, m.device);
    let model = Arc::new(load_clip(m)?);
    cache.insert(m.clone(), model.clone());
    Ok(model)
}

/// Load the CLIP model a `[model]` section describes (source, device, dtype, normalisation).
pub fn load_clip(m: &ModelSection) -> Result<ClipModel> {
    let model = ClipModel::load(&m.source, &device_of(m)?, dtype_of(m))?;
    Ok(match m.normalisation.as_str() {
        "imagenet" => model
            .with_input_normalisation(segsweep_clip::IMAGENET_MEAN, segsweep_clip::IMAGENET_STD),
        _ => model,
    })
}

/// Open the dataset of a configuration, with its subset applied.
pub fn open_dataset(d: &DatasetSection, seed: u64, data_dir: &Path) -> Result<Dataset> {
    let ds = open_dataset_quiet(d, seed, data_dir)?;
    for w in &ds.warnings {
        tracing::warn!("{w}");
    }
    Ok(ds)
}

/// [`open_dataset`] without logging the listing's warnings.
fn open_dataset_quiet(d: &DatasetSection, seed: u64, data_dir: &Path) -> Result<Dataset> {
    let ds = match d.name.as_str() {
        "synthetic" => Dataset::synthetic(d.synthetic_images, seed),
        "custom" => {
            let cfg: &CustomConfig = d
                .custom
                .as_ref()
                .ok_or_else(|| RunnerError::spec("[dataset]", "dataset.custom", "missing", None))?;
            Dataset::custom(cfg)?
        }
        name => {
            let spec = segsweep_data::dataset_spec(name)?;
            let root = d.root.clone().unwrap_or_else(|| spec.root_under(data_dir));
            Dataset::registered(name, &root)?
        }
    };
    let subset = match (d.num_samples, d.subset.as_str()) {
        (None, _) => Subset::All,
        (Some(n), "random") => Subset::Random { n, seed },
        (Some(n), _) => Subset::First { n },
    };
    let mut ds = ds;
    if d.name == "synthetic" {
        if let Some(root) = &d.root {
            ds.warnings.push(format!(
                "[dataset] root = {:?} is ignored: the synthetic dataset is generated, not read",
                root.display().to_string()
            ));
        }
    }
    if let Some(n) = d.num_samples.filter(|&n| n > ds.len()) {
        ds.warnings.push(format!(
            "[dataset] num_samples = {n}, but dataset `{}` has {} samples: all of them are used",
            ds.info.name,
            ds.len()
        ));
    }
    Ok(ds.subset(&subset))
}

fn class_names(d: &DatasetSection, ds: &Dataset) -> Result<ClassNames> {
    match &d.classes {
        Some(path) => {
            // The file replaces the prompts; the dataset's background stays `background` in
            // tables and charts, as with the dataset's own class list.
            let mut names = ClassNames::from_file(path)?;
            if let Some(b) = ds.info.background_class {
                names.name_background(b);
            }
            Ok(names)
        }
        None => Ok(ds.info.classes.clone()),
    }
}

struct Job<'a> {
    config: &'a Config,
    /// [`upstream_key`] of the configuration, computed once.
    upstream: String,
    /// [`probs_key`] of the configuration, computed once.
    probs: String,
    refiners: &'a [Box<dyn Refiner>],
    partial: Partial,
    /// `partial` has changed since its checkpoint was last written.
    dirty: bool,
}

/// The progress bars of a run.
struct Bars<'a> {
    multi: &'a indicatif::MultiProgress,
    configs: &'a indicatif::ProgressBar,
}

/// What a group of configurations needs before its first image, checked and built up front.
struct GroupInputs {
    ds: Dataset,
    classes: ClassNames,
    /// Per configuration of the group, in order: its refiners, built.
    refiners: Vec<Vec<Box<dyn Refiner>>>,
    model: Arc<ClipModel>,
}

/// Open the group's dataset, read its class names, build every refiner and load the model:
/// everything that fails on a bad spec or a missing file, so it fails before any work.
fn preflight(
    exp: &Experiment,
    opts: &RunOptions,
    group: &[&Config],
    models: &mut HashMap<ModelSection, Arc<ClipModel>>,
) -> Result<GroupInputs> {
    let first = group[0];
    let ds = open_dataset(&first.dataset, first.seed, &opts.data_dir)?;
    if ds.is_empty() {
        return Err(RunnerError::spec(
            &exp.spec.file(),
            "dataset",
            format!("dataset `{}` has no samples", ds.info.name),
            Some(if first.dataset.name == "custom" {
                "check [dataset.custom] root, image_dir, img_suffix and split_file: no image matched".into()
            } else {
                "check [dataset] root and `segsweep data check NAME`".into()
            }),
        ));
    }
    // A missing image or label would stop the run at that image, after the run directory
    // exists; without `skip_bad` it is an error now, before any work.
    if !first.dataset.skip_bad {
        let missing = ds.missing_files();
        if let Some(line) = ds.describe_missing(&missing) {
            return Err(RunnerError::spec(
                &exp.spec.file(),
                "dataset",
                line,
                Some("restore the files (check [dataset] root; some datasets need `segsweep data prepare`), or set [dataset] skip_bad = true to skip those samples (counted in `skipped`)".into()),
            ));
        }
    }
    // The class file is read here, not by `validate` (a spec may be checked on another
    // machine): its error names the key.
    let classes =
        class_names(&first.dataset, &ds).map_err(|e| match (&first.dataset.classes, e) {
            (Some(_), RunnerError::Data(e)) => {
                RunnerError::spec(&exp.spec.file(), "dataset.classes", e.to_string(), None)
            }
            (_, e) => e,
        })?;
    if classes.len() != ds.info.n_classes() {
        return Err(RunnerError::spec(
            &exp.spec.file(),
            "dataset.classes",
            format!(
                "{} has {} classes but dataset `{}` has {} (its label ids index them)",
                first
                    .dataset
                    .classes
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                classes.len(),
                ds.info.name,
                ds.info.n_classes()
            ),
            Some(
                "a class file replaces the names (synonyms, prompts) one for one; keep one line per class, in the dataset's order".into(),
            ),
        ));
    }
    let refiners = group
        .iter()
        .map(|c| {
            c.pipeline
                .iter()
                .map(|s| (s.plugin.build)(&s.params))
                .collect::<segsweep_core::Result<Vec<_>>>()
        })
        .collect::<segsweep_core::Result<Vec<_>>>()?;
    let model = load_model(&first.model, models)?;
    for (c, refs) in group.iter().zip(&refiners) {
        check_refiners(c, refs, model.info().layers, &exp.spec.file())?;
    }
    Ok(GroupInputs {
        ds,
        classes,
        refiners,
        model,
    })
}

/// The refiners built for configuration `c` against a model with `layers` blocks: each
/// returns the name it registers, and every layer it asks the prefix to record exists (a layer
/// number is a plugin parameter whose range depends on the model, so it is checked once the
/// model is loaded). Errors name the pipeline entry; `file` is the spec (or a label for it).
pub fn check_refiners(
    c: &Config,
    refiners: &[Box<dyn Refiner>],
    layers: usize,
    file: &str,
) -> Result<()> {
    for (step, r) in c.pipeline.iter().zip(refiners) {
        if r.name() != step.plugin.name {
            return Err(RunnerError::spec(
                file,
                format!("pipeline entry `{}`", step.id),
                format!(
                    "plugin `{}` builds a refiner whose name() is `{}`",
                    step.plugin.name,
                    r.name()
                ),
                Some("in the plugin's code, Refiner::name must return the name it registers (errors and logs use it)".into()),
            ));
        }
        let needs = r.needs();
        if let Some(n) = needs
            .attn_probs
            .iter()
            .chain(&needs.qkv)
            .find(|&&n| n == 0 || n > layers)
        {
            return Err(RunnerError::spec(
                file,
                format!("pipeline entry `{}`", step.id),
                format!(
                    "plugin `{}` needs layer {n} of the backbone, which has layers 1..={layers}",
                    step.plugin.name
                ),
                Some(format!(
                    "`segsweep plugins {}` shows the parameter that picks the layer",
                    step.plugin.name
                )),
            ));
        }
    }
    Ok(())
}

fn run_group(
    exp: &Experiment,
    opts: &RunOptions,
    dir: &Path,
    group: &[&Config],
    input: GroupInputs,
    tally: &mut Tally,
    bars: &Bars,
) -> Result<()> {
    let first = group[0];
    let GroupInputs {
        ds,
        classes,
        refiners,
        model,
    } = input;
    let mut jobs: Vec<Job> = Vec::new();
    let weights = model.info().file_hash.clone();
    let samples = samples_hash(&ds.ids());
    for (c, refiners) in group.iter().zip(&refiners) {
        let mut partial = read_partial(dir, &c.hash, classes.len(), ds.len(), &samples)?;
        if partial.model_file_hash.is_empty() {
            partial.model_file_hash = weights.clone();
        } else if partial.model_file_hash != weights {
            return Err(RunnerError::spec(
                &partial_path(dir, &c.hash).display().to_string(),
                "(checkpoint)",
                format!(
                    "its counts come from weights {} but {} now holds weights {weights}",
                    partial.model_file_hash, c.model.source
                ),
                Some("the files behind model.source changed: delete the checkpoint to recompute with the new weights, or restore the old ones".into()),
            ));
        }
        jobs.push(Job {
            upstream: upstream_key(c),
            probs: probs_key(c),
            config: c,
            refiners,
            partial,
            dirty: false,
        });
    }
    let cache_dir = cache_dir(exp, opts);
    let classifier = build_classifier(
        model.as_ref(),
        &classes.classes,
        &IMAGENET_TEMPLATES,
        Some(&cache_dir),
    )?;
    let person = match &first.dataset.classes {
        Some(_) => classes.find("person"),
        None => ds.info.person_class,
    };
    let background = ds.info.background_class;

    let needs = needs_of(&jobs);
    let start = jobs.iter().map(|j| j.partial.next_image).min().unwrap_or(0);
    let bar = bars.multi.add(progress_bar(
        opts,
        ds.len() as u64,
        &format!("{} config(s) on {}", jobs.len(), ds.info.name),
    ));
    bar.set_position(start as u64);
    let spill_dir = exp
        .memory
        .spill_dir
        .clone()
        .unwrap_or_else(|| dir.join("cache"));
    let feature_cache = FeatureCache::new(&exp.memory, cache_dir.join("features"));
    let ctx = ImageCtx {
        model: model.as_ref(),
        classifier: &classifier,
        prefix: PrefixCtx {
            backbone: model.as_ref(),
            cfg: &first.inference,
            needs: &needs,
            plan: &exp.memory,
            spill_dir: &spill_dir,
            cache: feature_cache.as_ref(),
        },
        background,
        ignore_index: ds.info.ignore_index,
        dir,
        visualise: exp.spec.raw.experiment.save_visualisations,
        max_vis: exp.spec.raw.experiment.max_visualisations,
    };

    // Images in batches whose windows fill `batch_size` crops, so the backbone's batches span
    // images (a VOC image has 8 windows; a GPU wants more per batch). Samples are decoded ahead
    // on a background thread (`load_ahead`).
    let ahead = exp
        .spec
        .raw
        .experiment
        .load_ahead
        .unwrap_or_else(crate::memory::default_load_ahead);
    // Prefixes of the next image batch computed on a second thread while this one runs the
    // configurations, where asked (`RunOptions::pipeline`); off by default until it has run on
    // a GPU.
    let pipeline = opts.pipeline.unwrap_or(false);
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        std::thread::scope(|scope| {
            let mut loader = crate::loader::Loader::new(scope, &ds, start, ahead);
            run_chunks(
                exp,
                opts,
                &ctx,
                &ds,
                &mut loader,
                &mut jobs,
                tally,
                &bar,
                pipeline,
            )
        })
    }));
    // The checkpoints of every image done since the last write, on every way out: finished,
    // Ctrl-C, stop_after_images, an error, a panic (a plugin's, say: each job's counts and
    // `next_image` change together, after its plugins ran, so what is written is consistent).
    let flushed = write_checkpoints(dir, &mut jobs);
    // A panic (a plugin's, most likely) becomes an error after the checkpoints are written, so
    // the command ends with a line saying what is kept, as after any other error.
    let ran = ran.unwrap_or_else(|panic| Err(panicked(panic)));
    ran?;
    flushed?;
    bar.finish_and_clear();
    bars.configs.inc(jobs.len() as u64);
    let m = &tally.memory;
    if m.images_over_budget > 0 {
        tracing::warn!(
            "{}; one configuration needs a prefix and a dense-logits map at once, so raise [experiment] memory_budget_mb to at least {} to keep prefixes for later configurations",
            m.summary(),
            m.peak_held_bytes.div_ceil(1 << 20)
        );
    } else {
        tracing::info!("{}", m.summary());
    }
    let mut memory_json = serde_json::to_string_pretty(&tally.memory)
        .map_err(|e| RunnerError::spec("memory.json", "json", e.to_string(), None))?;
    memory_json.push('\n');
    write_atomic(&dir.join("memory.json"), memory_json.as_bytes())?;
    let ids = ds.ids();
    for job in &jobs {
        if job.partial.counts.images == 0 {
            // No result: no record (it would be "finished" for ever; one an older segsweep
            // wrote goes too), no checkpoint.
            let _ = std::fs::remove_file(partial_path(dir, &job.config.hash));
            let _ = std::fs::remove_file(record_path(dir, &job.config.hash));
            tally.empty.push((
                format!("{} ({})", job.config.hash, job.config.label()),
                job.partial.skipped,
            ));
            continue;
        }
        let record = make_record(dir, job, &ids, &classes, person, model.as_ref());
        write_atomic(
            &record_path(dir, &job.config.hash),
            serde_json::to_string_pretty(&record)
                .map_err(|e| RunnerError::spec("record", "json", e.to_string(), None))?
                .as_bytes(),
        )?;
        let _ = std::fs::remove_file(partial_path(dir, &job.config.hash));
        tracing::info!(
            "finished {} [{}]: mIoU {} person IoU {} ({} weights)",
            job.config.hash,
            job.config.label(),
            fmt_pct(record.metrics.miou_pct),
            fmt_pct(record.metrics.person_iou_pct),
            record.weights
        );
    }
    // Tables and charts after each group, so a later failure leaves them current.
    finalize(exp, dir, false)?;
    Ok(())
}

/// One chunk of consecutive samples whose windows fill `batch_size` crops (`None`: a bad
/// sample skipped with `skip_bad`).
type Chunk = Vec<(usize, Option<Sample>)>;

/// Forms the chunks of a group's images, from `next` on, loading samples through the loader.
struct ChunkFormer<'a, 'l> {
    exp: &'a Experiment,
    opts: &'a RunOptions,
    ds: &'a Dataset,
    loader: &'a mut crate::loader::Loader<'l>,
    cfg: &'a segsweep_core::InferConfig,
    patch: usize,
    skip_bad: bool,
    next: usize,
}

impl ChunkFormer<'_, '_> {
    /// The next chunk, and how the run ends after it: `Some(Ok(()))` at the dataset's end,
    /// `Some(Err(..))` on a cancel, at `stop_after_images` (`Interrupted`) or at a bad sample
    /// without `skip_bad` (the chunk then holds the images before it, which still run, so that
    /// "finished images are kept" holds for the whole batch).
    fn next_chunk(&mut self, tally: &mut Tally) -> (Chunk, Option<Result<()>>) {
        let (ds, opts) = (self.ds, self.opts);
        let batch = self.cfg.batch_size.max(1);
        let mut chunk: Chunk = Vec::new();
        let mut windows = 0;
        while windows < batch {
            if self.next >= ds.len() {
                return (chunk, Some(Ok(())));
            }
            let budget_spent = opts
                .stop_after_images
                .is_some_and(|n| tally.images_done >= n);
            if opts.cancel.load(Ordering::SeqCst) {
                // Ctrl-C: the images loaded for this chunk are not in flight; drop them.
                return (Vec::new(), Some(Err(RunnerError::Interrupted)));
            }
            if budget_spent {
                return (chunk, Some(Err(RunnerError::Interrupted)));
            }
            let i = self.next;
            tally.images_done += 1;
            // A sample that cannot be read, or whose size the settings cannot segment (a very
            // thin image), is a bad sample: skipped with skip_bad, else the run stops at it.
            let loaded = self
                .loader
                .load(i)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    match segsweep_infer::window_count_for(
                        s.image.h, s.image.w, self.cfg, self.patch,
                    ) {
                        Ok(n) => Ok((s, n)),
                        Err(e) => Err(format!(
                            "{}: {e}",
                            ds.sample_ref(i)
                                .map(|r| r.image.display().to_string())
                                .unwrap_or_else(|| format!("sample {}", s.id))
                        )),
                    }
                });
            match loaded {
                Ok((s, n)) => {
                    windows += n;
                    chunk.push((i, Some(s)));
                }
                Err(e) if self.skip_bad => {
                    tracing::warn!("skipping sample {}: {e}", ds.id(i).unwrap_or("?"));
                    chunk.push((i, None));
                }
                Err(e) => {
                    return (
                        chunk,
                        Some(Err(RunnerError::spec(
                            &self.exp.spec.file(),
                            "dataset",
                            e,
                            Some("fix the file and run again (finished images are kept), or set [dataset] skip_bad = true to skip unreadable or mismatched samples (counted in `skipped`)".into()),
                        ))),
                    );
                }
            }
            self.next += 1;
        }
        (chunk, None)
    }
}

/// A chunk's backbone prefixes ([`prepare_chunk`]): each loaded image's prepared pass and
/// feature-cache key, in order, the counters of the work, and its seconds.
struct PreparedChunk {
    prepared: Vec<(segsweep_infer::Prepared, Option<String>)>,
    stats: MemoryStats,
    seconds: f64,
}

/// The backbone prefixes of a chunk's loaded images, batched across them
/// ([`crate::memory::prepare_batch`]); on a GPU, finished before this returns (another thread
/// may read them).
fn prepare_chunk(
    prefix: &PrefixCtx,
    plan: &MemoryPlan,
    chunk: &[(usize, Option<Sample>)],
    synchronize: bool,
) -> Result<PreparedChunk> {
    let images: Vec<&segsweep_core::RgbImage> = chunk
        .iter()
        .filter_map(|(_, s)| s.as_ref().map(|s| &s.image))
        .collect();
    let mut stats = MemoryStats::new(plan);
    let t0 = Instant::now();
    let prepared = crate::memory::prepare_batch(prefix, &images, &mut stats);
    if synchronize {
        // On a GPU this thread launched on its own stream (candle's per-thread default stream).
        // On an error too: the other thread may free what this one's kernels still read.
        let synced = prefix
            .backbone
            .device()
            .synchronize()
            .map_err(|e| RunnerError::Infer(segsweep_core::CoreError::from(e).into()));
        if prepared.is_ok() {
            synced?;
        }
    }
    let prepared = prepared?;
    Ok(PreparedChunk {
        prepared,
        stats,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The images from the jobs' first unfinished one to the dataset's end, in chunks whose windows
/// fill `batch_size` crops, stopping early on a cancel, at `stop_after_images`, or at a bad
/// sample (after running the images before it). With `pipeline`, a second thread computes the
/// next chunk's backbone prefixes while this thread runs the configurations of the current
/// one: on a GPU each thread launches on its own stream, so the device runs the next prefix
/// while the host post-processes. Results are those of one chunk after the other.
#[allow(clippy::too_many_arguments)]
fn run_chunks(
    exp: &Experiment,
    opts: &RunOptions,
    ctx: &ImageCtx,
    ds: &Dataset,
    loader: &mut crate::loader::Loader<'_>,
    jobs: &mut [Job],
    tally: &mut Tally,
    bar: &indicatif::ProgressBar,
    pipeline: bool,
) -> Result<()> {
    let first = jobs[0].config;
    let mut former = ChunkFormer {
        exp,
        opts,
        ds,
        loader,
        cfg: ctx.prefix.cfg,
        patch: ctx.model.info().patch_size,
        skip_bad: first.dataset.skip_bad,
        next: jobs.iter().map(|j| j.partial.next_image).min().unwrap_or(0),
    };
    let mut written = Instant::now();
    let mut checkpoint = |jobs: &mut [Job]| -> Result<()> {
        if written.elapsed() >= CHECKPOINT_INTERVAL {
            write_checkpoints(ctx.dir, jobs)?;
            written = Instant::now();
        }
        Ok(())
    };
    let plan = &exp.memory;
    if !pipeline {
        loop {
            checkpoint(jobs)?;
            let (chunk, end) = former.next_chunk(tally);
            if !chunk.is_empty() {
                let p = prepare_chunk(&ctx.prefix, plan, &chunk, false)?;
                run_batch(ctx, jobs, &chunk, p, 0, &mut tally.memory, opts, bar)?;
            }
            if let Some(end) = end {
                return end;
            }
        }
    }
    std::thread::scope(|scope| {
        let (to_worker, requests) = std::sync::mpsc::channel::<Chunk>();
        let (to_main, results) = std::sync::mpsc::channel::<(Chunk, Result<PreparedChunk>)>();
        let prefix = &ctx.prefix;
        scope.spawn(move || {
            for chunk in requests {
                // A panic here reaches the runner's thread as an error with its message (the
                // scope would otherwise re-raise it as "a scoped thread panicked").
                let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    prepare_chunk(prefix, plan, &chunk, true)
                }))
                .unwrap_or_else(|panic| Err(panicked(panic)));
                if to_main.send((chunk, p)).is_err() {
                    return; // the run stopped
                }
            }
        });
        // The chunk whose prefixes are ready, and the bytes of the next chunk's (being computed
        // meanwhile; estimated by this chunk's) for the memory budget.
        let mut ready: Option<(Chunk, Result<PreparedChunk>)> = None;
        let run_ready = |ready: &mut Option<(Chunk, Result<PreparedChunk>)>,
                         next_in_flight: bool,
                         jobs: &mut [Job],
                         tally: &mut Tally|
         -> Result<()> {
            if let Some((chunk, p)) = ready.take() {
                let p = p?;
                let reserve = match next_in_flight {
                    true => p.prepared.iter().map(|(p, _)| p.prefix_bytes()).sum(),
                    false => 0,
                };
                run_batch(ctx, jobs, &chunk, p, reserve, &mut tally.memory, opts, bar)?;
            }
            Ok(())
        };
        loop {
            checkpoint(jobs)?;
            let (chunk, end) = former.next_chunk(tally);
            let sent = !chunk.is_empty();
            if sent {
                to_worker.send(chunk).map_err(|_| {
                    RunnerError::Infer(segsweep_infer::InferError::Pipeline(
                        "the thread computing prefixes stopped".into(),
                    ))
                })?;
            }
            run_ready(&mut ready, sent, jobs, tally)?;
            if sent {
                ready = Some(results.recv().map_err(|_| {
                    RunnerError::Infer(segsweep_infer::InferError::Pipeline(
                        "the thread computing prefixes stopped".into(),
                    ))
                })?);
            }
            if let Some(end) = end {
                run_ready(&mut ready, false, jobs, tally)?;
                return end;
            }
        }
    })
}

/// Where a run caches text classifiers and (by default) features: `<output_dir>/.cache`.
fn cache_dir(exp: &Experiment, opts: &RunOptions) -> PathBuf {
    opts.cache_dir
        .clone()
        .unwrap_or_else(|| exp.spec.raw.experiment.output_dir.join(".cache"))
}

/// What the prefix must record for the jobs' plugins (the union of their `needs()`).
fn needs_of(jobs: &[Job]) -> segsweep_core::Needs {
    jobs.iter()
        .flat_map(|j| j.refiners.iter())
        .fold(segsweep_core::Needs::default(), |acc, r| {
            acc.union(&r.needs())
        })
}

/// A trial before the run directory exists: every configuration of the group on the group's
/// first readable image, through the same code as the run (shared prefix, per-key dense
/// logits, tails), with its checkpoints written to a scratch directory and nothing cached. A
/// plugin that fails on real inputs (a stage it does not implement, shapes it cannot take, a
/// position after a plugin whose output it cannot read) fails here, naming the configuration
/// and the image, instead of when its turn comes. Costs one image per group.
fn trial(
    exp: &Experiment,
    opts: &RunOptions,
    group: &[&Config],
    input: &GroupInputs,
) -> Result<()> {
    let patch = input.model.info().patch_size;
    let segmentable = |s: &Sample| {
        segsweep_infer::window_count_for(s.image.h, s.image.w, &group[0].inference, patch).is_ok()
    };
    let Some((i, sample)) = (0..input.ds.len().min(16))
        .find_map(|i| input.ds.load(i).ok().filter(segmentable).map(|s| (i, s)))
    else {
        // Bad first images are the run's to report (or to skip with skip_bad).
        return Ok(());
    };
    // Scratch space where the run would spill (the configured spill_dir), else TMPDIR.
    let scratch = match &exp.memory.spill_dir {
        Some(d) => std::fs::create_dir_all(d).and_then(|()| tempfile::tempdir_in(d)),
        None => tempfile::tempdir(),
    }
    .map_err(|e| RunnerError::Io {
        path: exp.memory.spill_dir.clone().unwrap_or_else(std::env::temp_dir),
        cause: e,
        hint: Some("the trial before a run needs a scratch directory ([experiment] spill_dir, else TMPDIR)".into()),
    })?;
    let counts = scratch.path().join("counts");
    std::fs::create_dir_all(&counts).map_err(|e| RunnerError::Io {
        path: counts.clone(),
        cause: e,
        hint: None,
    })?;
    let first = group[0];
    let model = input.model.as_ref();
    let classifier = build_classifier(
        model,
        &input.classes.classes,
        &IMAGENET_TEMPLATES,
        Some(&cache_dir(exp, opts)),
    )?;
    let mut jobs: Vec<Job> = group
        .iter()
        .zip(&input.refiners)
        .map(|(c, refiners)| Job {
            upstream: upstream_key(c),
            probs: probs_key(c),
            config: c,
            refiners,
            partial: Partial::new(input.classes.len()),
            dirty: false,
        })
        .collect();
    let needs = needs_of(&jobs);
    let ctx = ImageCtx {
        model,
        classifier: &classifier,
        prefix: PrefixCtx {
            backbone: model,
            cfg: &first.inference,
            needs: &needs,
            plan: &exp.memory,
            spill_dir: scratch.path(),
            cache: None,
        },
        background: input.ds.info.background_class,
        ignore_index: input.ds.info.ignore_index,
        dir: scratch.path(),
        visualise: false,
        max_vis: 0,
    };
    tracing::info!(
        "trial: {} configuration(s) of the group of `{}` on image {} before the run starts",
        jobs.len(),
        first.label(),
        sample.id
    );
    let mut stats = MemoryStats::new(&exp.memory);
    let chunk = [(i, Some(sample))];
    let prepared = prepare_chunk(&ctx.prefix, &exp.memory, &chunk, false)?;
    run_batch(
        &ctx,
        &mut jobs,
        &chunk,
        prepared,
        0,
        &mut stats,
        opts,
        &indicatif::ProgressBar::hidden(),
    )?;
    write_checkpoints(scratch.path(), &mut jobs)
}

/// Counters over the groups of one `run` call.
struct Tally {
    /// Images started, for `stop_after_images`.
    images_done: usize,
    memory: MemoryStats,
    /// Configurations that scored no image (every sample skipped): label and skipped count.
    /// They get no record, so a later run computes them again.
    empty: Vec<(String, usize)>,
}

/// Everything fixed for the images of a group.
struct ImageCtx<'a> {
    model: &'a ClipModel,
    classifier: &'a Classifier,
    /// The prefix's inputs: the group's inference settings (every configuration agrees on what
    /// `prepare` reads), the union of the configurations' needs, memory plan and caches.
    prefix: PrefixCtx<'a>,
    background: Option<usize>,
    ignore_index: u32,
    dir: &'a Path,
    visualise: bool,
    max_vis: usize,
}

/// A chunk's configurations, image by image, on its prepared prefixes ([`prepare_chunk`]);
/// `chunk` holds `(dataset index, sample or None where it was skipped as bad)` in order.
/// First the dense logits of the first configuration group across the chunk's images where the
/// memory budget, less `reserve` bytes held elsewhere (the next chunk's prefixes, being
/// computed meanwhile), allows ([`first_group_dense`]), then [`run_image`] for each image.
/// On Ctrl-C it stops before the next image (the one in flight finishes).
#[allow(clippy::too_many_arguments)]
fn run_batch(
    ctx: &ImageCtx,
    jobs: &mut [Job],
    chunk: &[(usize, Option<Sample>)],
    prepared: PreparedChunk,
    reserve: usize,
    stats: &mut MemoryStats,
    opts: &RunOptions,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let PreparedChunk {
        prepared,
        stats: prepare_stats,
        seconds,
    } = prepared;
    stats.absorb(&prepare_stats);
    let loaded = prepared.len();
    let prefix_seconds = seconds / loaded.max(1) as f64;
    if opts.cancel.load(Ordering::SeqCst) {
        return Err(RunnerError::Interrupted);
    }
    let t1 = Instant::now();
    let first_dense = first_group_dense(ctx, jobs, chunk, &prepared, reserve)?;
    let dense_seconds = t1.elapsed().as_secs_f64() / loaded.max(1) as f64;
    if let Some((_, d)) = &first_dense {
        stats.dense_batched_images += d.len();
        // Every image's prefix and first dense map are held together until its turn.
        let held: usize = prepared
            .iter()
            .map(|(p, _)| p.prefix_bytes())
            .sum::<usize>()
            + d.iter().map(|d| d.bytes()).sum::<usize>()
            + reserve;
        stats.peak_held_bytes = stats.peak_held_bytes.max(held as u64);
    }
    let mut first_dense = first_dense.map(|(key, d)| (key, d.into_iter()));
    let mut prepared = prepared.into_iter();
    for (i, sample) in chunk.iter() {
        // Before every image, the first included: in pipelined mode a chunk whose prefixes
        // were computed while Ctrl-C arrived is not in flight.
        if opts.cancel.load(Ordering::SeqCst) {
            return Err(RunnerError::Interrupted);
        }
        match sample {
            Some(sample) => {
                let (p, key) = prepared.next().ok_or_else(|| {
                    RunnerError::Infer(segsweep_infer::InferError::Pipeline(
                        "fewer prepared images than loaded".into(),
                    ))
                })?;
                let slot = PrefixSlot::new(&ctx.prefix, &sample.image, key, p, reserve);
                let dense = first_dense.as_mut().and_then(|(key, d)| {
                    d.next().map(|d| PrecomputedDense {
                        upstream: key.clone(),
                        dense: d,
                        seconds: dense_seconds,
                    })
                });
                run_image(ctx, jobs, *i, sample, slot, prefix_seconds, dense, stats)?;
            }
            None => {
                for j in jobs.iter_mut().filter(|j| j.partial.next_image <= *i) {
                    j.partial.skipped += 1;
                    j.partial.next_image = i + 1;
                    j.dirty = true;
                }
            }
        }
        bar.inc(1);
    }
    Ok(())
}

/// Dense logits that [`run_batch`] computed for several images at once
/// ([`first_group_dense`]): those of the configurations with upstream key `upstream` on one
/// image, and this image's share of the time they took.
struct PrecomputedDense {
    upstream: String,
    dense: segsweep_infer::DenseLogits,
    seconds: f64,
}

/// The dense logits of the configuration group that runs first on the chunk's first image,
/// for every image of the chunk at once, where that group's pipeline lets the last block run
/// on the crops of several images together ([`segsweep_infer::dense_batches_across_images`]:
/// no attention- or feature-stage plugin, slide mode); on a GPU the last block of one image's
/// 8 crops is bound by launches. `None` where it does not, or for a single image. Results are
/// those of one image at a time ([`segsweep_infer::dense_logits_many`]). The maps are held
/// until each image's turn: one per image of the chunk (a chunk holds about `batch_size`
/// crops), on the device on a GPU; so only where the chunk's prefixes and maps fit the memory
/// budget together.
fn first_group_dense(
    ctx: &ImageCtx,
    jobs: &[Job],
    chunk: &[(usize, Option<Sample>)],
    prepared: &[(segsweep_infer::Prepared, Option<String>)],
    reserve: usize,
) -> Result<Option<(String, Vec<segsweep_infer::DenseLogits>)>> {
    let Some((first, sample)) = chunk.iter().find_map(|(i, s)| s.as_ref().map(|s| (*i, s))) else {
        return Ok(None);
    };
    // Jobs active on the first image are active on every later one of the chunk.
    let Some(job) = jobs.iter().find(|j| j.partial.next_image <= first) else {
        return Ok(None);
    };
    let steps = steps(job);
    if prepared.len() < 2
        || !segsweep_infer::dense_batches_across_images(&job.config.inference, &steps)
    {
        return Ok(None);
    }
    // Within the memory budget only: every image's prefix and its f32 dense map held at once.
    let queries = ctx.classifier.query_class.len();
    let held: usize = prepared
        .iter()
        .map(|(p, _)| {
            let (h, w) = p.original_size();
            p.prefix_bytes() + queries * h * w * 4
        })
        .sum();
    if (held + reserve) as u64 > ctx.prefix.plan.budget_bytes {
        return Ok(None);
    }
    let refs: Vec<&segsweep_infer::Prepared> = prepared.iter().map(|(p, _)| p).collect();
    let dense = segsweep_infer::dense_logits_many(
        ctx.model,
        &refs,
        ctx.classifier,
        &job.config.inference,
        &steps,
    )
    .map_err(|e| in_config(job.config, &sample.id, e.into()))?;
    Ok(Some((job.upstream.clone(), dense)))
}

/// One image for every configuration of a group not past it: the prefix (computed by
/// [`run_batch`], `prefix_seconds` of it) shared, then per upstream key (in first-appearance
/// order) one dense-logits map (`precomputed` where [`run_batch`] computed it with other
/// images') and the tails of its configurations. The prefix is kept for the next key only
/// within the memory budget.
#[allow(clippy::too_many_arguments)]
fn run_image(
    ctx: &ImageCtx,
    jobs: &mut [Job],
    i: usize,
    sample: &Sample,
    mut slot: PrefixSlot<'_>,
    prefix_seconds: f64,
    mut precomputed: Option<PrecomputedDense>,
    stats: &mut MemoryStats,
) -> Result<()> {
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        if job.partial.next_image > i {
            continue;
        }
        match runs
            .iter_mut()
            .find(|r| jobs[r[0]].upstream == job.upstream)
        {
            Some(r) => r.push(j),
            None => runs.push(vec![j]),
        }
    }
    let active = runs.iter().map(Vec::len).sum::<usize>().max(1);
    stats.images += 1;
    let model = ctx.model as &dyn Backbone;
    let prefix_share = prefix_seconds / active as f64;
    let mut warned = false;
    for (r, run) in runs.iter().enumerate() {
        let t1 = Instant::now();
        slot.ensure(stats)?;
        // Read back from f16 (spill or feature cache): recorded with each configuration.
        let rounded = slot.rounded();
        let first = &jobs[run[0]];
        let fail = |e: segsweep_infer::InferError| in_config(first.config, &sample.id, e.into());
        let (dense, dense_seconds) = match precomputed.take_if(|p| p.upstream == first.upstream) {
            Some(p) => (p.dense, p.seconds),
            None => {
                let d = segsweep_infer::dense_logits(
                    model,
                    slot.prepared(),
                    ctx.classifier,
                    &first.config.inference,
                    &steps(first),
                )
                .map_err(fail)?;
                (d, 0.0)
            }
        };
        let held = slot.prepared().prefix_bytes() + dense.bytes();
        if held as u64 > ctx.prefix.plan.budget_bytes && !warned {
            stats.images_over_budget += 1;
            warned = true;
            tracing::debug!(
                "image {}: prefix + dense logits = {held} bytes exceed the memory budget; one configuration needs both",
                sample.id
            );
        }
        slot.release(dense.bytes(), r + 1 < runs.len(), stats)?;
        let run_share = (t1.elapsed().as_secs_f64() + dense_seconds) / run.len() as f64;
        // The run's configurations by class probabilities (dense-stage plugins, logit scale):
        // each set computed once, then every configuration's thresholds and labels on it.
        let mut sets: Vec<Vec<usize>> = Vec::new();
        for &j in run {
            match sets.iter_mut().find(|g| jobs[g[0]].probs == jobs[j].probs) {
                Some(g) => g.push(j),
                None => sets.push(vec![j]),
            }
        }
        for set in sets {
            let t2 = Instant::now();
            let first = &jobs[set[0]];
            let probs = segsweep_infer::class_probabilities(
                model,
                slot.prepared(),
                &dense,
                ctx.classifier,
                &first.config.inference,
                &steps(first),
            )
            .map_err(|e| in_config(first.config, &sample.id, e.into()))?;
            let probs_share = t2.elapsed().as_secs_f64() / set.len() as f64;
            for j in set {
                let t3 = Instant::now();
                tail(
                    ctx,
                    &mut jobs[j],
                    slot.prepared(),
                    &probs,
                    rounded,
                    i,
                    sample,
                )?;
                jobs[j].partial.seconds +=
                    prefix_share + run_share + probs_share + t3.elapsed().as_secs_f64();
                jobs[j].dirty = true;
            }
        }
    }
    Ok(())
}

/// A job's plugins with their stages, in pipeline order.
fn steps<'a>(job: &'a Job) -> Vec<(Stage, &'a dyn Refiner)> {
    job.config
        .pipeline
        .iter()
        .zip(job.refiners)
        .map(|(s, r)| (s.plugin.stage, r.as_ref()))
        .collect()
}

/// One configuration's tail on one image, on its class probabilities (shared with the
/// configurations of the same [`probs_key`]): thresholds, label-stage plugins, counts, overlay;
/// advances its checkpoint (written by the caller). `rounded`: the prefix these probabilities
/// came from was read back from f16.
fn tail(
    ctx: &ImageCtx,
    job: &mut Job,
    prepared: &segsweep_infer::Prepared,
    probs: &segsweep_infer::ClassProbs,
    rounded: bool,
    i: usize,
    sample: &Sample,
) -> Result<()> {
    let config = job.config;
    let id = &sample.id;
    let fail = |e: RunnerError| in_config(config, id, e);
    let seg = segsweep_infer::labels_from_probs(
        ctx.model,
        prepared,
        probs,
        ctx.classifier,
        &config.inference,
        &steps(job),
        ctx.background,
    )
    .map_err(|e| fail(e.into()))?;
    let pred: Vec<u32> = seg
        .labels
        .flatten_all()
        .and_then(|t| t.to_vec1::<u32>())
        .map_err(|e| fail(segsweep_core::CoreError::from(e).into()))?;
    // The overlay first: if it cannot be written, the image is neither counted nor marked
    // done, so the checkpoint (written on the way out) stays consistent and a resume scores
    // it once.
    if ctx.visualise && i < ctx.max_vis {
        let path = ctx
            .dir
            .join("visualisations")
            .join(&config.hash)
            .join(format!("{}.png", sanitize(id)));
        segsweep_report::overlay::save_overlay(
            &path,
            sample.image.h,
            sample.image.w,
            &sample.image.data,
            &pred,
        )?;
    }
    job.partial
        .counts
        .add(&pred, &sample.label.data, ctx.ignore_index)
        .map_err(|e| fail(e.into()))?;
    job.partial.f16_prefix_images += usize::from(rounded);
    job.partial.next_image = i + 1;
    Ok(())
}

/// What a configuration's dense logits depend on beyond its group: the last block and every
/// attention- and feature-stage plugin with its resolved parameters.
fn upstream_key(c: &Config) -> String {
    // An attention-stage plugin replaces the built-in attention (not in the hash either).
    let replaced = c
        .pipeline
        .iter()
        .any(|s| s.plugin.stage == Stage::Attention);
    let mut key = if replaced {
        String::new()
    } else {
        c.inference.attention.clone()
    };
    for s in c
        .pipeline
        .iter()
        .filter(|s| s.plugin.stage <= Stage::Features)
    {
        key.push('|');
        key.push_str(&s.id);
        key.push_str(&toml::to_string(&s.params.to_toml()).unwrap_or_default());
    }
    key
}

/// What a configuration's class probabilities depend on beyond its dense logits: the
/// dense-stage plugins with their resolved parameters, the logit scale of the softmax, and the
/// short side (which dense-stage plugins see). Thresholds and label-stage plugins come after.
fn probs_key(c: &Config) -> String {
    let mut key = format!(
        "{}#{}#{:?}",
        upstream_key(c),
        c.inference.logit_scale.to_bits(),
        c.inference.short_side
    );
    for s in c
        .pipeline
        .iter()
        .filter(|s| s.plugin.stage == Stage::DenseLogits)
    {
        key.push('|');
        key.push_str(&s.id);
        key.push_str(&toml::to_string(&s.params.to_toml()).unwrap_or_default());
    }
    key
}

fn fmt_pct(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}%"))
        .unwrap_or_else(|| "n/a".into())
}

/// A file name for sample `id`: the id with anything but ASCII letters, digits, `-` and `.`
/// (not leading) replaced by `_`, and, where that changed it, 8 hex digits of the id's SHA-256 appended, so
/// two ids never share a name (`x/y` and `x_y`, `a/é` and `a/ü`).
fn sanitize(id: &str) -> String {
    let plain: String = id
        .chars()
        .enumerate()
        .map(|(i, c)| {
            // No leading dot: `..` and hidden files are not names to write.
            if c.is_ascii_alphanumeric() || c == '-' || (c == '.' && i > 0) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if plain == id {
        plain
    } else {
        use sha2::{Digest, Sha256};
        let h = Sha256::digest(id.as_bytes());
        format!("{plain}-{}", &hex12(&h)[..8])
    }
}

fn in_config(c: &Config, image: &str, cause: RunnerError) -> RunnerError {
    RunnerError::InConfig {
        hash: c.hash.clone(),
        label: c.label(),
        image: image.to_string(),
        cause: Box::new(cause),
    }
}

/// The checkpoint of configuration `hash` (a fresh one if there is none), checked against the
/// dataset it continues: `n_classes` counts per array, `next_image` at most `n_images`.
/// The checkpoint of configuration `hash` in run directory `dir`, checked against the dataset
/// it continues (`n_classes`, `n_images`, `samples`: [`samples_hash`] of its ids), or a new one.
fn read_partial(
    dir: &Path,
    hash: &str,
    n_classes: usize,
    n_images: usize,
    samples: &str,
) -> Result<Partial> {
    let p = partial_path(dir, hash);
    let damaged = |msg: String| {
        RunnerError::spec(
            &p.display().to_string(),
            "(checkpoint)",
            msg,
            Some("delete the file to recompute this configuration from the start".into()),
        )
    };
    match std::fs::read_to_string(&p) {
        Ok(text) => {
            let mut partial: Partial =
                serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
            // Another sample list first: its other length would read as damage below.
            if !partial.samples.is_empty() && partial.next_image > 0 && partial.samples != samples {
                return Err(RunnerError::spec(
                    &p.display().to_string(),
                    "(checkpoint)",
                    format!(
                        "its {} images were counted on another list of samples than the dataset now gives (the files under its root, the --data-dir or the split changed)",
                        partial.next_image
                    ),
                    Some("resume with the samples it started on, delete the checkpoint to recompute this configuration on the new ones, or use another --run-id".into()),
                ));
            }
            partial.samples = samples.to_string();
            counts_of(&partial.counts)
                .check(n_classes)
                .map_err(damaged)?;
            if partial.next_image as u64 != partial.counts.images + partial.skipped as u64 {
                return Err(damaged(format!(
                    "next_image {} disagrees with its {} counted and {} skipped images",
                    partial.next_image, partial.counts.images, partial.skipped
                )));
            }
            if partial.f16_prefix_images as u64 > partial.counts.images {
                return Err(damaged(format!(
                    "f16_prefix_images {} is more than its {} counted images",
                    partial.f16_prefix_images, partial.counts.images
                )));
            }
            if partial.next_image > n_images {
                return Err(damaged(format!(
                    "next_image {} is past the dataset's {n_images} images",
                    partial.next_image
                )));
            }
            tracing::info!("resuming {hash} at image {}", partial.next_image);
            Ok(partial)
        }
        // Absent means absent: a dangling link in its place is a damaged checkpoint.
        Err(e) if is_absent(&p, &e) => Ok(Partial {
            samples: samples.to_string(),
            ..Partial::new(n_classes)
        }),
        // Unreadable is not absent: starting over would throw away the images counted so far.
        Err(e) => Err(RunnerError::Io {
            path: p,
            cause: e,
            hint: Some(
                "fix or delete the file (deleting recomputes this configuration from the start)"
                    .into(),
            ),
        }),
    }
}

/// `path` does not exist, not even as a (dangling) link.
fn is_absent(path: &Path, e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound && std::fs::symlink_metadata(path).is_err()
}

/// How often the runner writes checkpoints while it runs (between image batches): each is an
/// fsync'd file per configuration, ~0.35 ms on this repository's machine and more on network
/// disks, which per image and configuration cost a 16-configuration sweep on a GPU more time
/// than its inference. The runner also writes them whenever it stops.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Write the checkpoint of every job whose counts changed since its last one.
fn write_checkpoints(dir: &Path, jobs: &mut [Job]) -> Result<()> {
    for j in jobs.iter_mut().filter(|j| j.dirty) {
        write_partial(dir, &j.config.hash, &j.partial)?;
        j.dirty = false;
    }
    Ok(())
}

fn write_partial(dir: &Path, hash: &str, p: &Partial) -> Result<()> {
    let json = serde_json::to_string(p)
        .map_err(|e| RunnerError::spec("checkpoint", "json", e.to_string(), None))?;
    write_atomic(&partial_path(dir, hash), json.as_bytes())?;
    Ok(())
}

fn make_record(
    dir: &Path,
    job: &Job,
    ids: &[String],
    classes: &ClassNames,
    person: Option<usize>,
    model: &dyn Backbone,
) -> Record {
    let c = job.config;
    let info = model.info();
    let s = job.partial.counts.summary(person);
    let images = job.partial.next_image - job.partial.skipped;
    let data_kind = match c.dataset.name.as_str() {
        "synthetic" => "synthetic",
        "custom" => "custom",
        _ => "benchmark",
    };
    Record {
        run_id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        config_hash: c.hash.clone(),
        variant: c.variant.clone(),
        swept: swept_values(c),
        dataset: dataset_display_name(c),
        data_kind: data_kind.into(),
        images,
        skipped: job.partial.skipped,
        sample_ids: ids.to_vec(),
        class_names: classes.display_names(),
        person_class: person,
        counts: counts_of(&job.partial.counts),
        metrics: metrics_of(&s),
        seconds: job.partial.seconds,
        ms_per_image: if images > 0 {
            1000.0 * job.partial.seconds / images as f64
        } else {
            0.0
        },
        model_id: info.model_id.clone(),
        model_file_hash: info.file_hash.clone(),
        device: info.device.clone(),
        dtype: info.dtype.clone(),
        segsweep_version: env!("CARGO_PKG_VERSION").into(),
        git_rev: crate::git_rev(),
        weights: info.weights.to_string(),
        kernels: segsweep_kernels::kernels_for(model.device()).into(),
        f16_prefix_images: job.partial.f16_prefix_images,
    }
}

/// The report's copy of the metric state.
pub fn counts_of(c: &IouCounts) -> Counts {
    Counts {
        intersect: c.intersect.clone(),
        union: c.union.clone(),
        pred: c.pred.clone(),
        label: c.label.clone(),
    }
}

/// The report's copy of the derived metrics.
pub fn metrics_of(s: &segsweep_data::IouSummary) -> Metrics {
    Metrics {
        miou_pct: s.miou_pct,
        person_iou_pct: s.person_iou_pct,
        aacc_pct: s.aacc_pct,
        macc_pct: s.macc_pct,
        fwiou_pct: s.fwiou_pct,
        per_class_iou_pct: s.iou_pct.clone(),
        per_class_acc_pct: s.acc_pct.clone(),
    }
}

/// Rewrite `summary.csv`, `per_class.csv` and the charts from every saved record.
/// Tables and charts of the spec's finished configurations (`order.txt`); records that an
/// earlier spec left in the run directory (a reused `--run-id`) stay on disk but are not shown,
/// with a warning when `warn` is set.
pub fn finalize(exp: &Experiment, dir: &Path, warn: bool) -> Result<Vec<Record>> {
    let segsweep_report::RunRecords { records, others } = segsweep_report::load_run(dir)?;
    if warn && !others.is_empty() {
        tracing::warn!(
            "{} record(s) in {} belong to no configuration of this spec (another spec run with this run id, or configurations whose hash has changed since, e.g. after a plugin's `version` was bumped: {}); they stay in counts/ but are left out of the tables and charts",
            others.len(),
            dir.display(),
            others.join(", ")
        );
    }
    segsweep_report::write_tables(dir, &records)?;
    segsweep_report::draw_charts(dir, &records, exp.spec.raw.sweep.baseline.as_deref())?;
    Ok(records)
}

fn progress_bar(opts: &RunOptions, len: u64, msg: &str) -> indicatif::ProgressBar {
    if !opts.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} images ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn sample_ids_map_to_distinct_file_names() {
        assert_eq!(sanitize("2007_000033"), "2007_000033");
        assert_eq!(sanitize("frankfurt-1.v2"), "frankfurt-1.v2");
        let ids = ["x/é", "x/ü", "x/y", "x_y", "x y", "..", ".hidden"];
        let names: std::collections::HashSet<String> = ids.iter().map(|i| sanitize(i)).collect();
        assert_eq!(names.len(), ids.len(), "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| !n.contains('/') && !n.starts_with('.')),
            "{names:?}"
        );
    }
}
