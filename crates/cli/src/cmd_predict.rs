//! `segsweep predict`: segment single images with the same code the runner uses.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use segsweep_core::{Refiner, Stage};
use segsweep_runner::{expand, load_text, parse_set, Config};

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Model: Hugging Face repo id, local directory, or builtin:tiny-random [default:
    /// openai/clip-vit-base-patch16, or the spec's `[model] source` with --spec; an explicit
    /// --model wins over the spec].
    #[arg(long)]
    pub model: Option<String>,
    /// Class-name file (SCLIP format: one class per line, synonyms split by ", ") [with --spec,
    /// default: the class list of the configuration's dataset].
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Images to segment. Outputs are named after the file stem, so two images may not share
    /// one (`a/x.jpg` and `b/x.png` is an error before any work).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Multiplier on cosine logits before the softmax (SCLIP default 40).
    #[arg(long)]
    pub logit_scale: Option<f64>,
    /// Pixels whose max probability is below this become class 0.
    #[arg(long)]
    pub prob_thd: Option<f64>,
    /// Drop foreground classes covering at most this share of foreground pixels.
    #[arg(long)]
    pub area_thd: Option<f64>,
    /// `slide` (default) or `whole`.
    #[arg(long)]
    pub mode: Option<String>,
    /// Resize so the short side is this many pixels (default 336).
    #[arg(long)]
    pub short_side: Option<usize>,
    /// Window size and stride in pixels (default 224 / 112).
    #[arg(long)]
    pub crop: Option<usize>,
    #[arg(long)]
    pub stride: Option<usize>,
    /// Built-in last-block attention: vanilla, sclip (default), naclip, maskclip.
    #[arg(long)]
    pub attention: Option<String>,
    /// Crops per backbone batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Refiner plugins in pipeline order, e.g. `cliptrase,clip-rc`.
    #[arg(long, value_delimiter = ',')]
    pub pipeline: Vec<String>,
    /// Override a value: PLUGIN.PARAM=VALUE or inference.KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Take model, inference settings and pipeline from one configuration of a spec (see
    /// --config; default its first, as `validate` numbers them); every flag given on the
    /// command line, --model included, overrides it.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// With --spec: which configuration, as `validate` lists them: its number (1 = the
    /// first), its hash, or its label (e.g. a variant name).
    #[arg(long, requires = "spec", value_name = "N|HASH|LABEL")]
    pub config: Option<String>,
    /// Device: cpu or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// f32, f16 or bf16.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Class 0 is not a background class (area_thd then counts every class).
    #[arg(long)]
    pub no_background: bool,
}

/// The model when neither --model nor --spec names one.
const DEFAULT_MODEL: &str = "openai/clip-vit-base-patch16";

/// The name outputs are written under: the file stem.
fn stem_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

/// Outputs are `<stem>.*`: refuse two inputs with one stem before any work, or the second
/// would silently overwrite the first's outputs.
fn check_distinct_stems(images: &[PathBuf]) -> Result<()> {
    let mut seen: std::collections::HashMap<String, &PathBuf> = Default::default();
    for p in images {
        if let Some(first) = seen.insert(stem_of(p), p) {
            bail!(
                "{} and {} have the same file stem `{}`, so their outputs (`{}.pred.png`, ...) \
                 would overwrite each other (hint: rename or link one of them, or run predict \
                 once per directory with a different --out)",
                first.display(),
                p.display(),
                stem_of(p),
                stem_of(p)
            );
        }
    }
    Ok(())
}

/// The configuration of `spec` that `selector` names (default the first), as a spec tree
/// without `[sweep]`, with a line for the user saying which one it is.
fn spec_config(spec: &Path, selector: Option<&str>) -> Result<(toml::Table, String)> {
    if !spec.is_file() {
        bail!(
            "{}: cannot read spec: not found\n  hint: --spec takes an experiment spec, e.g. experiments/demo.toml",
            spec.display()
        );
    }
    let exp = segsweep_runner::load(spec, &[]).and_then(|s| expand(s, &[]))?;
    let selector = selector.unwrap_or("1");
    let hits: Vec<(usize, &Config)> = exp
        .configs
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            selector.parse::<usize>().ok() == Some(i + 1)
                || c.hash == selector
                || c.label() == selector
                || c.variant == selector
                // The label tables, charts and the console show.
                || segsweep_report::label_of(&c.variant, &segsweep_runner::swept_values(c))
                    == selector
        })
        .collect();
    let listing = || {
        exp.configs
            .iter()
            .enumerate()
            .take(12)
            .map(|(i, c)| format!("#{} {} {}", i + 1, c.hash, c.label()))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match hits.as_slice() {
        [(i, c)] => Ok((
            c.spec_tree.clone(),
            format!(
                "configuration #{} {} ({}) of {}",
                i + 1,
                c.hash,
                c.label(),
                spec.display()
            ),
        )),
        [] => bail!(
            "--config {selector}: no configuration of {} has that number, hash or label (hint: `segsweep validate {}` lists them: {}{})",
            spec.display(),
            spec.display(),
            listing(),
            if exp.configs.len() > 12 { "; ..." } else { "" }
        ),
        many => bail!(
            "--config {selector}: {} configurations of {} match (hint: give a number, a hash or a whole label: {})",
            many.len(),
            spec.display(),
            many.iter()
                .map(|(i, c)| format!("#{} {} {}", i + 1, c.hash, c.label()))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// Build the spec text the flags describe, so predict validates exactly like a sweep.
fn spec_text(args: &PredictArgs) -> Result<String> {
    let mut tree: toml::Table = match &args.spec {
        Some(p) => {
            let (tree, which) = spec_config(p, args.config.as_deref())?;
            let overridden = args.model.is_some()
                || args.logit_scale.is_some()
                || args.prob_thd.is_some()
                || args.area_thd.is_some()
                || args.mode.is_some()
                || args.short_side.is_some()
                || args.crop.is_some()
                || args.stride.is_some()
                || args.attention.is_some()
                || args.batch_size.is_some()
                || !args.pipeline.is_empty()
                || !args.set.is_empty()
                || args.device.is_some()
                || args.dtype.is_some();
            eprintln!(
                "predict: {which}{}",
                if overridden {
                    ", with the command line's flags over it"
                } else {
                    ""
                }
            );
            tree
        }
        None => toml::Table::new(),
    };
    tree.remove("sweep");
    let section = |tree: &mut toml::Table, name: &str| -> toml::Table {
        tree.remove(name)
            .and_then(|v| v.as_table().cloned())
            .unwrap_or_default()
    };
    let mut model = section(&mut tree, "model");
    match (&args.model, &args.spec) {
        (Some(m), _) => {
            model.insert("source".into(), m.clone().into());
        }
        (None, None) => {
            model.insert("source".into(), DEFAULT_MODEL.into());
        }
        (None, Some(_)) => {} // the spec's source (or the spec default)
    }
    if let Some(d) = &args.device {
        model.insert("device".into(), d.clone().into());
    }
    if let Some(d) = &args.dtype {
        model.insert("dtype".into(), d.clone().into());
    }
    tree.insert("model".into(), model.into());
    let mut inf = section(&mut tree, "inference");
    let mut put = |k: &str, v: Option<toml::Value>| {
        if let Some(v) = v {
            inf.insert(k.into(), v);
        }
    };
    put("logit_scale", args.logit_scale.map(Into::into));
    put("prob_thd", args.prob_thd.map(Into::into));
    put("area_thd", args.area_thd.map(Into::into));
    put("mode", args.mode.clone().map(Into::into));
    put("crop", args.crop.map(|v| (v as i64).into()));
    put("stride", args.stride.map(|v| (v as i64).into()));
    put("attention", args.attention.clone().map(Into::into));
    put("batch_size", args.batch_size.map(|v| (v as i64).into()));
    tree.insert("inference".into(), inf.into());
    let mut ds = section(&mut tree, "dataset");
    if args.short_side.is_some() || args.spec.is_none() {
        ds.insert(
            "short_side".into(),
            (args.short_side.unwrap_or(336) as i64).into(),
        );
    }
    tree.insert("dataset".into(), ds.into());
    if !args.pipeline.is_empty() {
        let entries: Vec<toml::Value> = args
            .pipeline
            .iter()
            .map(|p| {
                let mut t = toml::Table::new();
                t.insert("plugin".into(), p.trim().to_string().into());
                t.into()
            })
            .collect();
        tree.insert("pipeline".into(), entries.into());
    }
    Ok(toml::to_string(&tree)?)
}

fn config(args: &PredictArgs) -> Result<Config> {
    let sets: Vec<(String, toml::Value)> = args
        .set
        .iter()
        .map(|s| parse_set(s))
        .collect::<segsweep_runner::Result<_>>()?;
    let label = args
        .spec
        .clone()
        .unwrap_or_else(|| PathBuf::from("(predict flags)"));
    let spec = load_text(&label, spec_text(args)?, &sets)?;
    let mut exp = expand(spec, &sets)?;
    Ok(exp.configs.remove(0))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("SEGSWEEP_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/segsweep")))
        .unwrap_or_else(|| PathBuf::from(".segsweep-cache"))
}

const OUT_HINT: &str = "--out is the directory predict writes <stem>.probs.npy, <stem>.pred.png \
     and <stem>.overlay.png into (created if missing); give a new or existing directory, or \
     remove or rename what is in the way";

/// `--out` must be a directory or not exist yet: refuse a file before the model loads, where
/// creating the directory would fail with only "File exists".
fn check_out_dir(out: &Path) -> Result<()> {
    if let Some(file) = out.ancestors().find(|a| a.is_file()) {
        let which = if file == out {
            String::new()
        } else {
            format!("{} ", file.display())
        };
        bail!(
            "--out {}: {which}is a file, not a directory\n  hint: {OUT_HINT}",
            out.display()
        );
    }
    Ok(())
}

/// Every input must be a file: refuse missing paths and directories before the model loads.
fn check_inputs_exist(images: &[PathBuf]) -> Result<()> {
    let bad: Vec<String> = images
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| {
            let what = if p.is_dir() {
                "a directory"
            } else {
                "not found"
            };
            format!("{} ({what})", p.display())
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "{} input image(s) cannot be read: {} (hint: predict takes image files (JPEG, PNG, \
             ...); for a directory pass its files, e.g. `DIR/*.jpg`)",
            bad.len(),
            bad.join(", ")
        );
    }
    Ok(())
}

/// Decode every input once and check the settings can segment its size with the model's
/// `patch`-pixel patches, before any output is written: a bad file stops the command at its start, not
/// halfway through the list.
fn check_inputs_decode(images: &[PathBuf], cfg: &Config, patch: usize) -> Result<()> {
    let mut bad: Vec<String> = Vec::new();
    for path in images {
        let problem = match segsweep_data::load_rgb(path) {
            Ok(img) => segsweep_infer::window_count_for(img.h, img.w, &cfg.inference, patch)
                .err()
                .map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(p) = problem {
            // The data error names the file already; the window error does not.
            let shown = path.display().to_string();
            bad.push(if p.contains(&shown) {
                p
            } else {
                format!("{shown}: {p}")
            });
        }
    }
    if !bad.is_empty() {
        bail!(
            "{} input image(s) cannot be segmented, nothing was written: {} (hint: remove them \
             from the list; a very thin image needs another --short-side, --crop or --mode whole)",
            bad.len(),
            bad.join("; ")
        );
    }
    Ok(())
}

/// The class list a configuration's dataset section gives, as a sweep would prompt with it
/// (`[dataset] classes`, a custom dataset's class file, the synthetic classes or a registered
/// dataset's built-in list; no dataset files are needed), and the dataset's background class,
/// as the sweep thresholds with it.
fn spec_classes(
    d: &segsweep_runner::DatasetSection,
) -> Result<(segsweep_data::ClassNames, Option<usize>)> {
    let (mut classes, background) = match (d.name.as_str(), &d.custom) {
        ("synthetic", _) => (
            segsweep_data::synthetic_classes(),
            segsweep_data::synthetic_info().background_class,
        ),
        ("custom", Some(c)) => {
            let classes = segsweep_data::ClassNames::from_file(c.root.join(&c.classes))?;
            let background = match &c.background_class {
                Some(name) => Some(classes.find(name).ok_or_else(|| {
                    anyhow::anyhow!(
                        "[dataset.custom] background_class: class `{name}` is not in {}\n  hint: name a class by any of its names on its line of the file, or leave the key out",
                        c.root.join(&c.classes).display()
                    )
                })?),
                None => None,
            };
            (classes, background)
        }
        (name, _) => {
            let spec = segsweep_data::dataset_spec(name)?;
            (spec.classes(), spec.background_class)
        }
    };
    if let Some(path) = &d.classes {
        classes = segsweep_data::ClassNames::from_file(path)?;
    }
    Ok((classes, background))
}

pub fn run(args: PredictArgs) -> Result<()> {
    check_inputs_exist(&args.images)?;
    check_distinct_stems(&args.images)?;
    check_out_dir(&args.out)?;
    let cfg = config(&args)?;
    // The background class: 0 for a class file given here (the convention of SCLIP's files),
    // the dataset's own for the class list a spec's dataset gives, as its sweep uses it.
    let (classes, dataset_background) = match (&args.classes, &args.spec) {
        (Some(path), _) => (segsweep_data::ClassNames::from_file(path)?, Some(0)),
        (None, Some(_)) => spec_classes(&cfg.dataset)?,
        (None, None) => bail!(
            "--classes is required without --spec\n  hint: give a class-name file (one class per line, synonyms split by \", \"; e.g. crates/data/classnames/voc21.txt), or --spec SPEC to take the class list of its dataset"
        ),
    };
    let model = segsweep_runner::load_clip(&cfg.model)?;
    let patch = segsweep_core::Backbone::info(&model).patch_size;
    check_inputs_decode(&args.images, &cfg, patch)?;
    let classifier = segsweep_clip::build_classifier(
        &model,
        &classes.classes,
        &segsweep_clip::IMAGENET_TEMPLATES,
        Some(&cache_dir()),
    )?;
    let refiners: Vec<Box<dyn Refiner>> = cfg
        .pipeline
        .iter()
        .map(|s| (s.plugin.build)(&s.params))
        .collect::<segsweep_core::Result<_>>()?;
    // The checks a sweep makes once the model is loaded, before any image.
    let label = args
        .spec
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(predict flags)".into());
    segsweep_runner::check_refiners(
        &cfg,
        &refiners,
        segsweep_core::Backbone::info(&model).layers,
        &label,
    )?;
    let steps: Vec<(Stage, &dyn Refiner)> = cfg
        .pipeline
        .iter()
        .zip(&refiners)
        .map(|(s, r)| (s.plugin.stage, r.as_ref()))
        .collect();
    let background = dataset_background.filter(|_| !args.no_background);
    std::fs::create_dir_all(&args.out).with_context(|| {
        format!(
            "--out {}: cannot create the output directory\n  hint: {OUT_HINT}",
            args.out.display()
        )
    })?;
    let info = segsweep_core::Backbone::info(&model);
    if info.weights != segsweep_core::WeightsKind::Real {
        eprintln!(
            "note: {} weights ({}): predictions are not meaningful segmentations",
            info.weights, info.model_id
        );
    }
    for path in &args.images {
        let image = segsweep_data::load_rgb(path)?;
        let seg = segsweep_infer::segment(
            &model,
            &image,
            &classifier,
            &cfg.inference,
            &steps,
            background,
        )
        .with_context(|| format!("{}: segmentation failed", path.display()))?;
        write_outputs(&args.out, path, &image, &seg, info)?;
    }
    println!(
        "wrote {} image(s) to {}",
        args.images.len(),
        args.out.display()
    );
    Ok(())
}

/// Write `<stem>.probs.npy`, `<stem>.pred.png` (16-bit when there are over 256 classes; its
/// text chunks say which weights and model made it, for `eval`) and `<stem>.overlay.png`.
fn write_outputs(
    out: &Path,
    path: &Path,
    image: &segsweep_core::RgbImage,
    seg: &segsweep_infer::Segmentation,
    info: &segsweep_core::BackboneInfo,
) -> Result<()> {
    let stem = stem_of(path);
    let (c, h, w) = seg.probs.dims3()?;
    if (h, w) != (image.h, image.w) {
        bail!(
            "{}: probabilities are {h}×{w}, the image {}×{}",
            path.display(),
            image.h,
            image.w
        );
    }
    let probs: Vec<f32> = seg
        .probs
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let arr = ndarray::Array3::from_shape_vec((c, h, w), probs)?;
    let npy = out.join(format!("{stem}.probs.npy"));
    ndarray_npy::write_npy(&npy, &arr)
        .with_context(|| format!("{}: cannot write", npy.display()))?;
    let labels = segsweep_data::LabelMap::new(h, w, seg.labels.flatten_all()?.to_vec1()?)?;
    let weights = info.weights.to_string();
    segsweep_data::save_label_png_with(
        out.join(format!("{stem}.pred.png")),
        &labels,
        c > 256,
        &[
            (segsweep_data::PREDICTION_WEIGHTS_KEY, weights.as_str()),
            (segsweep_data::PREDICTION_MODEL_KEY, info.model_id.as_str()),
        ],
    )?;
    segsweep_report::overlay::save_overlay(
        &out.join(format!("{stem}.overlay.png")),
        h,
        w,
        &image.data,
        &labels.data,
    )?;
    Ok(())
}
