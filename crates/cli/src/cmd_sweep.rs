//! `segsweep sweep`, `validate` and `plot`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::Result;
use clap::Args;
use segsweep_runner::{load_experiment, run, run_dir, RunOptions};

#[derive(Args, Debug)]
pub struct SpecArgs {
    /// The experiment spec (TOML).
    pub spec: PathBuf,
    /// Override a value: SECTION.KEY=VALUE or PIPELINE_ID.PARAM=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Device for every configuration: cpu or cuda:N (= --set model.device=DEVICE; applied
    /// after the spec, the environment and --set).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Compute dtype: f32, f16 or bf16 (= --set model.dtype=DTYPE; applied last, like --device).
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<String>,
}

impl SpecArgs {
    /// The `--set` overrides followed by `--device` and `--dtype` as `model.*` overrides, which
    /// therefore win over a `--set` of the same key.
    pub fn overrides(&self) -> Vec<String> {
        let mut sets = self.set.clone();
        if let Some(d) = &self.device {
            sets.push(format!("model.device={}", toml_string(d)));
        }
        if let Some(d) = &self.dtype {
            sets.push(format!("model.dtype={}", toml_string(d)));
        }
        sets
    }
}

/// `s` as a quoted TOML string, so `cuda:0` is not read as TOML syntax.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Run directory name under <output_dir>/<experiment>/ (default: derived from the
    /// configurations, so re-running the same spec resumes).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Where registered datasets live when [dataset] root is unset.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Stop as if interrupted after this many images (to try out resuming).
    #[arg(long, value_name = "N")]
    pub stop_after_images: Option<usize>,
    /// Compute every configuration not finished in this run directory, even when another run
    /// directory under the output_dir holds its finished record (by default those are reused).
    #[arg(long)]
    pub no_reuse: bool,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A run directory (results/<experiment>/<run-id>).
    pub results_dir: PathBuf,
    /// Variant the delta chart compares against (default: the spec's, else `baseline`).
    #[arg(long)]
    pub baseline: Option<String>,
}

pub fn validate(args: ValidateArgs) -> Result<()> {
    let exp = load_experiment(&args.spec.spec, &args.spec.overrides())?;
    let e = &exp.spec.raw.experiment;
    println!(
        "{}: experiment `{}`, {} configuration(s), results in {}",
        exp.spec.file(),
        e.name,
        exp.configs.len(),
        run_dir(&exp, &RunOptions::default()).display()
    );
    let width = exp
        .configs
        .iter()
        .map(|c| c.label().chars().count())
        .max()
        .unwrap_or(0)
        .max(40);
    for (i, c) in exp.configs.iter().enumerate() {
        let pipe: Vec<String> = c.pipeline.iter().map(|s| s.id.clone()).collect();
        // An attention-stage plugin replaces the built-in attention.
        let attention = c
            .pipeline
            .iter()
            .find(|s| s.plugin.stage == segsweep_core::Stage::Attention)
            .map(|s| format!("{} (plugin)", s.id))
            .unwrap_or_else(|| c.inference.attention.clone());
        println!(
            "  #{:<3} {}  {:<width$} pipeline: [{}]  {:?} attention={} logit_scale={} prob_thd={} device={} dtype={}",
            i + 1,
            c.hash,
            c.label(),
            pipe.join(", "),
            c.inference.mode,
            attention,
            c.inference.logit_scale,
            c.inference.prob_thd,
            c.model.device,
            c.model.dtype
        );
        // What the variant sets is part of the configuration but not of its label.
        if let Some(v) = exp
            .spec
            .raw
            .sweep
            .variants
            .iter()
            .find(|v| v.name == c.variant && !v.set.is_empty())
        {
            let set: Vec<String> = v.set.iter().map(|(k, x)| format!("{k}={x}")).collect();
            println!("        variant `{}` sets: {}", v.name, set.join(", "));
        }
    }
    Ok(())
}

pub fn sweep(args: SweepArgs) -> Result<()> {
    let exp = load_experiment(&args.spec.spec, &args.spec.overrides())?;
    let opts = RunOptions {
        run_id: args.run_id,
        data_dir: args.data_dir,
        progress: !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        stop_after_images: args.stop_after_images,
        reuse: !args.no_reuse,
        pipeline: pipeline_from_env(),
        ..RunOptions::default()
    };
    let cancel = opts.cancel.clone();
    // First Ctrl-C (or SIGTERM, as `timeout`, `docker stop`, systemd and Slurm send, or SIGHUP
    // when the terminal closes): finish the image in flight, checkpoint, exit. Second: exit at
    // once (the checkpoints written so far are atomic, so what they hold is kept; the images
    // since the last one, written every 2 s between image batches, are computed again on
    // resume). A second signal within a second of the first is the same interrupt delivered
    // twice (a terminal's Ctrl-C reaches the whole process group, and `timeout -s INT` signals
    // the child and its group), not a request to quit now.
    // The messages ignore write errors: after a hangup the terminal is gone.
    let first_at: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let hangup_ignored = hangup_ignored();
    let _ = ctrlc::set_handler(move || {
        use std::io::Write;
        let mut first = first_at.lock().unwrap_or_else(|p| p.into_inner());
        if cancel.swap(true, Ordering::SeqCst) {
            if first.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return;
            }
            let _ = writeln!(std::io::stderr(), "\ninterrupt: quitting now; images up to the last checkpoint (written every 2 seconds between image batches) are saved, re-run the same command to resume");
            std::process::exit(130);
        }
        *first = Some(std::time::Instant::now());
        let _ = writeln!(
            std::io::stderr(),
            "\ninterrupt: stopping after the image in flight (Ctrl-C again to quit now)"
        );
    });
    // `nohup segsweep sweep ... &` ignores SIGHUP so that the sweep outlives the terminal;
    // the handler above took SIGHUP over, so give it back to the ignore `nohup` asked for.
    if hangup_ignored {
        ignore_hangup();
    }
    let summary = run(&exp, &opts).map_err(|e| {
        // Name the spec unless the message opens with it already (a spec key's error).
        let spec = args.spec.spec.display().to_string();
        if e.to_string().starts_with(&spec) {
            anyhow::Error::new(e)
        } else {
            anyhow::Error::new(e).context(format!("sweep {spec}"))
        }
    })?;
    if opts.cancel.load(Ordering::SeqCst) {
        // The interrupt came after the last image: the tables were still written.
        eprintln!("interrupt: it came after the last image; the sweep finished and its results are complete");
    }
    println!(
        "{} configuration(s): {} computed, {} already finished. Results: {}",
        summary.records.len(),
        summary.ran,
        summary.resumed,
        summary.run_dir.display()
    );
    if summary.reused > 0 {
        println!(
            "{} of the finished ones reused from {} (same configuration hash and weights; --no-reuse computes them again)",
            summary.reused,
            summary
                .reused_from
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let width = summary
        .records
        .iter()
        .map(|r| r.label().chars().count())
        .max()
        .unwrap_or(0)
        .max(40);
    for r in &summary.records {
        let caveat = if r.is_not_benchmark() {
            format!(
                "  [{} weights, {} data: not a benchmark result]",
                r.weights, r.data_kind
            )
        } else {
            String::new()
        };
        let rounded = if r.f16_prefix_images > 0 {
            format!(
                "  [{} of {} images on prefixes read back from f16: close to, not identical with, a run without]",
                r.f16_prefix_images, r.images
            )
        } else {
            String::new()
        };
        println!(
            "  {} {:<width$} mIoU {:>7}  person IoU {:>7}{}{}",
            r.config_hash,
            r.label(),
            pct(r.metrics.miou_pct),
            pct(r.metrics.person_iou_pct),
            caveat,
            rounded
        );
    }
    Ok(())
}

/// Whether SIGHUP is ignored (as under `nohup`).
#[cfg(unix)]
fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current disposition into `old`,
    // a zeroed plain C struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(not(unix))]
fn hangup_ignored() -> bool {
    false
}

/// Ignore SIGHUP again.
#[cfg(unix)]
fn ignore_hangup() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

#[cfg(not(unix))]
fn ignore_hangup() {}

/// A run directory without a readable `counts/` is the wrong directory: say so, and which
/// sub-directories are run directories. Other errors (a corrupt record) name their own file.
fn not_a_run_dir(dir: &Path, e: segsweep_report::ReportError) -> anyhow::Error {
    let counts = dir.join("counts");
    match &e {
        segsweep_report::ReportError::Io { path, .. } if Path::new(path) == counts => {
            let mut runs: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|d| d.ok())
                .filter(|d| d.path().join("counts").is_dir())
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .collect();
            runs.sort();
            let hint = if runs.is_empty() {
                "pass a run directory, the `Results:` path `segsweep sweep` prints \
                 (<output_dir>/<experiment>/<run-id>)"
                    .to_string()
            } else {
                format!("run directories here: {}", runs.join(", "))
            };
            anyhow::anyhow!(
                "{}: not a segsweep run directory (expected counts/*.json): {e}\n  hint: {hint}",
                dir.display()
            )
        }
        _ => e.into(),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "n/a".into())
}

pub fn plot(args: PlotArgs) -> Result<()> {
    let dir = &args.results_dir;
    let segsweep_report::RunRecords { records, others } =
        segsweep_report::load_run(dir).map_err(|e| not_a_run_dir(dir, e))?;
    if records.is_empty() {
        return Err(nothing_to_plot(dir, &others));
    }
    if !others.is_empty() {
        eprintln!(
            "warning: {} record(s) in {}/counts belong to no configuration of the run's last spec (order.txt): {}; left out of the tables and charts",
            others.len(),
            dir.display(),
            others.join(", ")
        );
    }
    let charts = dir.join("charts");
    if charts.exists() && !charts.is_dir() {
        anyhow::bail!(
            "{}: is a file, not a directory; plot draws its charts into it\n  hint: remove or rename that file, then run `segsweep plot {}` again",
            charts.display(),
            dir.display()
        );
    }
    if let Some(b) = &args.baseline {
        let mut variants: Vec<&str> = Vec::new();
        for r in &records {
            if !variants.contains(&r.variant.as_str()) {
                variants.push(&r.variant);
            }
        }
        anyhow::ensure!(
            variants.contains(&b.as_str()),
            "{}: no configuration has the variant `{b}` for --baseline\n  hint: variants in this run: {}",
            dir.display(),
            if variants.iter().all(|v| v.is_empty()) {
                "(none: the spec has no [[sweep.variants]])".to_string()
            } else {
                variants.join(", ")
            }
        );
    }
    let baseline = args.baseline.or_else(|| {
        let spec = std::fs::read_to_string(dir.join("spec.toml")).ok()?;
        let t: toml::Table = spec.parse().ok()?;
        t.get("sweep")?.get("baseline")?.as_str().map(String::from)
    });
    segsweep_report::write_tables(dir, &records)?;
    let files = segsweep_report::draw_charts(dir, &records, baseline.as_deref())?;
    println!(
        "redrew {} tables and {} chart files in {}",
        2,
        files.paths.len(),
        dir.display()
    );
    Ok(())
}

/// Why a run directory has no record to plot: its `order.txt` lists none of the records in
/// `counts/` (damaged, or another spec's run), or the sweep has finished no configuration yet.
fn nothing_to_plot(dir: &Path, others: &[String]) -> anyhow::Error {
    let partial = std::fs::read_dir(dir.join("counts"))
        .into_iter()
        .flatten()
        .filter_map(|d| d.ok())
        .filter(|d| d.file_name().to_string_lossy().ends_with(".partial.json"))
        .count();
    let resume = format!(
        "re-run the same `segsweep sweep SPEC` command (same spec, --set and --run-id; the spec it ran is saved as {}) to resume it",
        dir.join("spec.toml").display()
    );
    let unfinished = if partial > 0 {
        format!(
            "counts/ holds {partial} checkpoint(s) (*.partial.json) but no finished record: the sweep has not finished a configuration yet; {resume}"
        )
    } else {
        format!("the sweep has not finished a configuration yet; {resume}")
    };
    if others.is_empty() {
        return anyhow::anyhow!(
            "{}: no finished configuration to plot (counts/ has no record)\n  hint: {unfinished}",
            dir.display()
        );
    }
    let mut msg = format!(
        "{}: lists none of the {} record(s) in counts/ ({}), so no configuration is left to plot\n  hint: order.txt lists the configuration hashes of the run's last spec, one per line (counts/<hash>.json); if it was damaged, re-running the `segsweep sweep SPEC` that made the run (same spec, --set and --run-id) writes it again and computes nothing already finished",
        dir.join("order.txt").display(),
        others.len(),
        others.join(", ")
    );
    if partial > 0 {
        msg.push_str(&format!("\n  hint: {unfinished}"));
    }
    anyhow::anyhow!(msg)
}

/// `SEGSWEEP_PIPELINE`: `1` computes the next image batch's prefixes on a second thread, `0`
/// does not, unset (or anything else, with a warning) leaves it to the runner's default (off).
/// Results do not depend on it.
fn pipeline_from_env() -> Option<bool> {
    match std::env::var("SEGSWEEP_PIPELINE").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        Ok(other) => {
            tracing::warn!(
                "SEGSWEEP_PIPELINE={other:?}: expected 0 or 1; left to the runner's default (off)"
            );
            None
        }
        Err(_) => None,
    }
}
