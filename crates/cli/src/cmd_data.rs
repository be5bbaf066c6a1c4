//! `segsweep data prepare|check|list`, `segsweep eval` and `segsweep densecrf`: thin wrappers
//! over `segsweep-data` and the DenseCRF plugin's library.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use segsweep_data::{dataset_spec, EvalOptions, GtSource, ProgressBar};
use segsweep_report::{Record, SweptValue};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Convert an extracted official release into the layout segsweep reads.
    Prepare {
        /// Dataset name (voc21, voc20, context60, context59, coco-stuff164k, coco-object,
        /// ade20k, cityscapes).
        name: String,
        /// The extracted release.
        #[arg(long = "from")]
        from: PathBuf,
        /// Where to write the prepared layout (default: `--from`).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Count images and labels, list missing pairs, the label-id histogram and bad ids.
    Check {
        /// A registered dataset name; or --spec.
        #[arg(required_unless_present = "spec", conflicts_with = "spec")]
        name: Option<String>,
        /// Check the dataset an experiment spec sweeps (its first configuration's `[dataset]`,
        /// a `[dataset.custom]` one included, with its subset) instead of a registered name.
        #[arg(long, conflicts_with = "root")]
        spec: Option<PathBuf>,
        /// Dataset root (default: data/<mmseg layout root>).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Where registered datasets live when --root is not given.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// The registered datasets with their layout root, classes and expected size.
    List,
}

pub fn data(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Prepare { name, from, root } => {
            let root = root.unwrap_or_else(|| from.clone());
            let bar = ProgressBar::new(format!("prepare {name}"));
            let report = segsweep_data::prepare(&name, &from, &root, &|d, t| bar.report(d, t))?;
            print!("{report}");
            if !report.is_complete() {
                bail!(
                    "dataset {name} prepared at {} is incomplete: {} sample(s), {} missing file(s) (listed above)\n  hint: the release under --from {} is incomplete or not the expected archive (see the README's dataset table); `segsweep data check {name} --root {}` lists what is missing",
                    root.display(),
                    report.samples,
                    report.missing_files.len(),
                    from.display(),
                    root.display()
                );
            }
        }
        DataCommand::Check {
            name,
            root,
            data_dir,
            spec,
        } => {
            let (label, report) = match (name, spec) {
                (_, Some(spec_path)) => {
                    let exp = segsweep_runner::load(&spec_path, &[])
                        .and_then(|s| segsweep_runner::expand(s, &[]))?;
                    let c = &exp.configs[0];
                    let ds = segsweep_runner::open_dataset(&c.dataset, c.seed, &data_dir)?;
                    let bar = ProgressBar::new(format!("check {}", ds.info.name));
                    let report = segsweep_data::check_dataset(&ds, &|d, t| bar.report(d, t))?;
                    (
                        format!("{} of {}", ds.info.name, spec_path.display()),
                        report,
                    )
                }
                (Some(name), None) => {
                    let spec = dataset_spec(&name)?;
                    let root = root.unwrap_or_else(|| spec.root_under(&data_dir));
                    let bar = ProgressBar::new(format!("check {name}"));
                    let report = segsweep_data::check(&name, &root, &|d, t| bar.report(d, t))?;
                    (format!("{name} at {}", root.display()), report)
                }
                (None, None) => bail!("give a dataset name or --spec SPEC"),
            };
            print!("{report}");
            if !report.is_ok() {
                bail!("dataset {label} has problems (listed above)");
            }
        }
        DataCommand::List => {
            println!(
                "{:<16} {:>7} {:>6}  {:<28} summary",
                "name", "classes", "val", "root (under data/)"
            );
            for d in segsweep_data::DATASETS {
                println!(
                    "{:<16} {:>7} {:>6}  {:<28} {}",
                    d.name, d.n_classes, d.val_size, d.default_root, d.summary
                );
            }
            let synth = segsweep_data::Dataset::synthetic(1, 0);
            println!(
                "{:<16} {:>7} {:>6}  {:<28} generated shapes in memory, for trying the machinery (synthetic_images, experiment.seed)",
                "synthetic",
                synth.info.n_classes(),
                "-",
                "(none: no files)"
            );
            println!(
                "\nIn a spec, `name = \"custom\"` with a [dataset.custom] table reads your own images, labels and class file."
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Registered dataset whose labels to score against.
    #[arg(long, conflicts_with = "gt")]
    pub dataset: Option<String>,
    /// Dataset root (default: data/<mmseg layout root>).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Directory of prediction PNGs named after sample ids.
    #[arg(long)]
    pub pred: PathBuf,
    /// A bare directory of label PNGs (with --classes) instead of a registered dataset.
    #[arg(long, requires = "classes")]
    pub gt: Option<PathBuf>,
    /// Class-name file (SCLIP format). Required with --gt; with --dataset it replaces the
    /// dataset's class names in the report (like `[dataset] classes` in a sweep) and must list
    /// as many classes as the dataset has.
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Warn about and count bad files instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Suffix of the prediction files: `<id><suffix>` (default `.png`; a directory of
    /// `segsweep predict` outputs is read as `.pred.png` by itself).
    #[arg(long)]
    pub pred_suffix: Option<String>,
    /// Where to write summary.csv and per_class.csv (default: the prediction directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where registered datasets live when --root is not given.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
}

/// The `weights` column of an eval row: the predictions come from outside segsweep, so no
/// weights of ours produced them (the sweep's values are `real`, `random-fixture`, `synthetic`).
pub const EXTERNAL_WEIGHTS: &str = "external";

pub fn eval(args: EvalArgs) -> Result<()> {
    if let Some(out) = args.out.as_ref().filter(|o| o.exists() && !o.is_dir()) {
        bail!(
            "--out {}: is a file, not a directory (hint: eval writes summary.csv and per_class.csv into that directory)",
            out.display()
        );
    }
    if args.pred.is_file() {
        bail!(
            "--pred {}: is a file, not a directory (hint: --pred takes the directory of prediction PNGs named <id>.png, or `segsweep predict`'s --out directory)",
            args.pred.display()
        );
    }
    let mut class_override = None;
    let gt = match (&args.dataset, &args.gt, &args.classes) {
        (Some(name), None, classes) => {
            class_override = classes.clone();
            let spec = dataset_spec(name)?;
            GtSource::Registered {
                name: spec.name.to_string(),
                root: args
                    .root
                    .clone()
                    .unwrap_or_else(|| spec.root_under(&args.data_dir)),
            }
        }
        (None, Some(dir), Some(classes)) => GtSource::dir(dir, classes),
        _ => bail!("give --dataset NAME, or --gt DIR with --classes FILE"),
    };
    let opts = EvalOptions {
        skip_bad: args.skip_bad,
        classes: class_override,
        pred_suffix: args.pred_suffix.clone(),
    };
    let bar = ProgressBar::new("eval");
    let report = segsweep_data::eval_dir(&gt, &args.pred, &opts, &|d, t| bar.report(d, t))
        .map_err(|e| with_prediction_hint(e, &args))?;
    let s = &report.summary;
    let pct = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "n/a".into());
    println!(
        "{}: {} images scored, {} skipped, {} without prediction\n  mIoU {}  person IoU {}  aAcc {}  mAcc {}  fwIoU {}",
        report.dataset,
        report.scored.len(),
        report.skipped.len(),
        report.without_prediction,
        pct(s.miou_pct),
        pct(s.person_iou_pct),
        pct(s.aacc_pct),
        pct(s.macc_pct),
        pct(s.fwiou_pct)
    );
    for sk in &report.skipped {
        // The reason names the file itself where it comes from the decoder.
        let path = sk.path.display().to_string();
        match sk.reason.strip_prefix(&path) {
            Some(rest) if rest.starts_with(": ") => println!("  skipped {path}{rest}"),
            _ => println!("  skipped {path}: {}", sk.reason),
        }
    }
    if report.scored.is_empty() {
        bail!(
            "--pred {}: no prediction could be scored: all {} were skipped (listed above), so there is no result to write\n  hint: a prediction PNG holds one class id per pixel at its label's size, as `segsweep predict` writes <stem>.pred.png",
            args.pred.display(),
            report.skipped.len()
        );
    }
    // What made the predictions, where `segsweep predict` wrote it into the PNGs.
    let (weights, model_id) = match (
        report.prediction_weights.as_slice(),
        report.unlabelled_predictions,
    ) {
        ([w], 0) => (
            w.clone(),
            match report.prediction_models.as_slice() {
                [m] => m.clone(),
                [] => "(unknown)".into(),
                _ => "(several models)".into(),
            },
        ),
        ([], _) => (
            EXTERNAL_WEIGHTS.to_string(),
            "(external predictions)".to_string(),
        ),
        _ => ("mixed".to_string(), "(several models)".to_string()),
    };
    let data_kind = if args.dataset.is_some() {
        "benchmark"
    } else {
        "custom"
    };
    match weights.as_str() {
        "real" if data_kind == "benchmark" => {}
        EXTERNAL_WEIGHTS => println!(
            "  [predictions from outside segsweep: a benchmark result only if a real model made them on the real {} data]",
            report.dataset
        ),
        w => println!("  [{w} weights, {data_kind} data: not a benchmark result]"),
    }
    let out = args.out.clone().unwrap_or_else(|| args.pred.clone());
    let record = Record {
        run_id: "eval".into(),
        config_hash: "eval".into(),
        variant: "eval".into(),
        swept: Vec::<SweptValue>::new(),
        dataset: report.dataset.clone(),
        data_kind: data_kind.into(),
        images: report.scored.len(),
        skipped: report.skipped.len(),
        sample_ids: report.scored.clone(),
        class_names: report.class_names.clone(),
        person_class: report.person_class,
        counts: segsweep_runner::counts_of(&report.counts),
        metrics: segsweep_runner::metrics_of(s),
        seconds: 0.0,
        ms_per_image: 0.0,
        model_id,
        model_file_hash: String::new(),
        device: String::new(),
        dtype: String::new(),
        segsweep_version: env!("CARGO_PKG_VERSION").into(),
        git_rev: segsweep_runner::git_rev(),
        weights,
        kernels: String::new(),
        f16_prefix_images: 0,
    };
    segsweep_report::write_tables(&out, &[record]).with_context(|| {
        format!(
            "{}: cannot write summary.csv / per_class.csv",
            out.display()
        )
    })?;
    println!(
        "wrote {} and per_class.csv",
        out.join("summary.csv").display()
    );
    Ok(())
}

/// A prediction that cannot be decoded or has the wrong size gets a hint saying what a
/// prediction PNG must be; other errors are returned as they are.
fn with_prediction_hint(e: segsweep_data::DataError, args: &EvalArgs) -> anyhow::Error {
    use segsweep_data::DataError;
    let bad_prediction = match &e {
        DataError::Decode { what, .. } => *what == "prediction PNG",
        DataError::SizeMismatch { path, .. } => path.starts_with(&args.pred),
        _ => false,
    };
    if !bad_prediction {
        return e.into();
    }
    let skip = if args.skip_bad {
        ""
    } else {
        "; --skip-bad scores the other predictions and lists the bad ones"
    };
    anyhow::anyhow!(
        "{e}\n  hint: a prediction PNG holds one class id per pixel (8- or 16-bit grayscale or palette, not RGB colours) at its label's size, as `segsweep predict` writes <stem>.pred.png{skip}"
    )
}

#[derive(Args, Debug)]
pub struct DenseCrfArgs {
    /// The RGB image the probabilities belong to.
    #[arg(long)]
    pub image: PathBuf,
    /// Probabilities, float32 .npy of shape (C, H, W) (e.g. `segsweep predict`'s .probs.npy).
    #[arg(long)]
    pub probs: PathBuf,
    /// Output: refined probabilities Q, float32 .npy (C, H, W).
    #[arg(long)]
    pub out: PathBuf,
    /// Parameter preset: pydensecrf (3/3, 80/13/10, 5 iterations) or deeplab (1/3, 67/3/4, 10).
    #[arg(long, default_value = "pydensecrf")]
    pub preset: String,
    /// Mean-field iterations (default: the preset's).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Gaussian (smoothness) kernel: spatial std in pixels (default: the preset's).
    #[arg(long)]
    pub gauss_sxy: Option<f32>,
    /// Gaussian kernel: weight (Potts compatibility; default: the preset's).
    #[arg(long)]
    pub gauss_compat: Option<f32>,
    /// Bilateral (appearance) kernel: spatial std in pixels (default: the preset's).
    #[arg(long)]
    pub bilateral_sxy: Option<f32>,
    /// Bilateral kernel: colour std in RGB units 0–255 (default: the preset's).
    #[arg(long)]
    pub bilateral_srgb: Option<f32>,
    /// Bilateral kernel: weight (Potts compatibility; default: the preset's).
    #[arg(long)]
    pub bilateral_compat: Option<f32>,
}

pub fn densecrf(args: DenseCrfArgs) -> Result<()> {
    use segsweep_plugin_densecrf::{npy, refine_probs, CrfParams, Preset};
    let preset: Preset = args.preset.parse().map_err(crf_flag_error)?;
    let mut p = CrfParams::preset(preset);
    if let Some(v) = args.iterations {
        p.iterations = v;
    }
    let set = |dst: &mut f32, v: Option<f32>| {
        if let Some(v) = v {
            *dst = v;
        }
    };
    set(&mut p.gauss_sxy, args.gauss_sxy);
    set(&mut p.gauss_compat, args.gauss_compat);
    set(&mut p.bilateral_sxy, args.bilateral_sxy);
    set(&mut p.bilateral_srgb, args.bilateral_srgb);
    set(&mut p.bilateral_compat, args.bilateral_compat);
    p.validate().map_err(crf_flag_error)?;
    let missing: Vec<String> = [("--image", &args.image), ("--probs", &args.probs)]
        .iter()
        .filter(|(_, path)| !path.is_file())
        .map(|(flag, path)| {
            format!(
                "{flag} {} ({})",
                path.display(),
                if path.is_dir() {
                    "a directory"
                } else {
                    "not found"
                }
            )
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "cannot read {} (hint: --probs is a float32 .npy of shape (C, H, W), e.g. `segsweep \
             predict`'s <stem>.probs.npy, and --image the image it was computed from)",
            missing.join(" and ")
        );
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the output's directory", dir.display()))?;
    }
    let image = segsweep_data::load_rgb(&args.image).context(
        "--image\n  hint: --image is the RGB image (JPEG, PNG, ...) the probabilities were computed from",
    )?;
    let probs = npy::read_map_npy(&args.probs)?;
    check_at_most_one(&args.probs, &probs.data, probs.shape)?;
    let (c, h, w) = probs.shape;
    if (h, w) != (image.h, image.w) {
        bail!(
            "{}: probabilities are {h}×{w} but {} is {}×{} (hint: the map must be at the image's size)",
            args.probs.display(),
            args.image.display(),
            image.h,
            image.w
        );
    }
    let q = refine_probs(&image, &probs.data, c, h, w, &p)
        .with_context(|| format!("{}", args.probs.display()))?;
    npy::write_map_npy(
        &args.out,
        &npy::Map3 {
            data: q,
            shape: (c, h, w),
        },
    )?;
    println!(
        "refined {c}×{h}×{w} probabilities ({preset}, {} iterations) → {}",
        p.iterations,
        args.out.display()
    );
    Ok(())
}

/// A densecrf parameter error names the command-line flag (`--iterations`, not the plugin key
/// `iterations`) and says what the flag takes.
fn crf_flag_error(e: segsweep_plugin_densecrf::CrfError) -> anyhow::Error {
    use segsweep_plugin_densecrf::{CrfError, Preset};
    let CrfError::Param { key, msg } = &e else {
        return e.into();
    };
    let flag = format!("--{}", key.replace('_', "-"));
    let hint = if key == "preset" {
        format!(
            "--preset takes one of: {} (`segsweep densecrf --help` shows their values)",
            Preset::NAMES.join(", ")
        )
    } else {
        format!(
            "{flag} overrides the preset's `{key}`; `segsweep plugins densecrf` lists each parameter's range and default"
        )
    };
    anyhow::anyhow!("{flag}: {msg}\n  hint: {hint}")
}

/// How far above 1 a probability may be (float rounding of a softmax) before it is taken for
/// a logit or a score.
const PROB_TOLERANCE: f32 = 1e-3;

/// The plugin rejects NaN and negative values; a value above 1 is just as surely not a
/// probability (logits, scores in 0–255, ...), and the CRF would clip it to 1 silently.
fn check_at_most_one(
    path: &std::path::Path,
    data: &[f32],
    (_, h, w): (usize, usize, usize),
) -> Result<()> {
    if let Some((i, v)) = data
        .iter()
        .enumerate()
        .find(|(_, v)| **v > 1.0 + PROB_TOLERANCE)
    {
        let (c, y, x) = (i / (h * w), i % (h * w) / w, i % w);
        bail!(
            "{}: probabilities: value {v} at (class {c}, y {y}, x {x}) is above 1 (hint: pass softmax probabilities, not logits)",
            path.display()
        );
    }
    Ok(())
}
