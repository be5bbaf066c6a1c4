//! `segsweep eval`: score a directory of prediction PNGs with the benchmark metric.
//!
//! Predictions are label PNGs (palette or grayscale ids) at the label's resolution, named
//! `<id>.png` after the dataset's sample id (`2007_000033.png`; Cityscapes
//! `frankfurt/frankfurt_000000_000294.png`), or `<basename of id>.png` in a flat directory;
//! a directory of `segsweep predict` outputs is read as `<id>.pred.png` (overlays ignored),
//! and the weights predict recorded in those PNGs are reported.
//! Samples without a prediction (for `--gt DIR`: label files `<id><label_suffix>` under the
//! directory with no prediction) are not scored; they are counted and named in the report and
//! logged as a warning, so a directory holding the predictions of a subset scores that subset
//! and says so.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::classes::ClassNames;
use crate::dataset::{check_ids, rel_id, walk, CustomConfig, Dataset};
use crate::error::{DataError, Result};
use crate::io::{
    load_label, png_text, LabelMap, IGNORE_INDEX, PREDICTION_MODEL_KEY, PREDICTION_WEIGHTS_KEY,
};
use crate::metric::{IouCounts, IouSummary};
use crate::progress::ProgressFn;

/// Where the ground truth comes from.
#[derive(Debug, Clone)]
pub enum GtSource {
    /// A registered dataset under `root`.
    Registered { name: String, root: PathBuf },
    /// A custom dataset.
    Custom(CustomConfig),
    /// A bare directory of label PNGs `<id><label_suffix>` and a class-name file
    /// (`--gt DIR --classes FILE`).
    Dir {
        gt_dir: PathBuf,
        classes: PathBuf,
        label_suffix: String,
        ignore_index: u32,
        reduce_zero_label: bool,
    },
}

impl GtSource {
    /// `--gt DIR --classes FILE` with mmseg's defaults: `.png`, ignore 255, no zero reduction.
    pub fn dir(gt_dir: impl Into<PathBuf>, classes: impl Into<PathBuf>) -> GtSource {
        GtSource::Dir {
            gt_dir: gt_dir.into(),
            classes: classes.into(),
            label_suffix: ".png".into(),
            ignore_index: IGNORE_INDEX,
            reduce_zero_label: false,
        }
    }
}

/// Options of [`eval_dir`].
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// On a bad file (unreadable, wrong size, bad ids), warn, count it and go on instead of
    /// failing.
    pub skip_bad: bool,
    /// Suffix of prediction files; `None` (the default): `.png`, or `.pred.png` for a
    /// directory of `segsweep predict` outputs.
    pub pred_suffix: Option<String>,
    /// A class-name file replacing the ground truth's class names (`eval --dataset NAME
    /// --classes FILE`, like `[dataset] classes` in a sweep). It must list as many classes as
    /// the labels use; only the names in the report change, never the scoring.
    pub classes: Option<PathBuf>,
}

/// A file left out by `skip_bad`, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub reason: String,
}

/// What [`eval_dir`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    /// One display name per class.
    pub class_names: Vec<String>,
    pub person_class: Option<usize>,
    /// The additive metric state.
    pub counts: IouCounts,
    pub summary: IouSummary,
    /// Ids of the samples scored, in order.
    pub scored: Vec<String>,
    /// Samples of the dataset (labels of `--gt DIR`) with no prediction file.
    pub without_prediction: usize,
    /// Their ids, sorted.
    pub without_prediction_ids: Vec<String>,
    /// Files skipped with `skip_bad`.
    pub skipped: Vec<SkippedFile>,
    /// What made the scored predictions, where `segsweep predict` recorded it in the PNG
    /// (`segsweep:weights`, `segsweep:model`): the distinct weights kinds and models, sorted.
    pub prediction_weights: Vec<String>,
    pub prediction_models: Vec<String>,
    /// Scored predictions that do not say what made them (from outside segsweep).
    pub unlabelled_predictions: usize,
    /// The prediction file suffix used (`.pred.png` when the directory holds `predict`'s
    /// outputs and no other suffix was asked for).
    pub pred_suffix: String,
}

struct Pair {
    id: String,
    pred: PathBuf,
    gt: PathBuf,
}

struct Scoring {
    name: String,
    classes: ClassNames,
    ignore: u32,
    reduce_zero_label: bool,
    person: Option<usize>,
    /// The dataset's background class, displayed as `background`.
    background: Option<usize>,
}

/// Score every prediction in `pred_dir` against `gt` (see the module doc for file naming).
///
/// Errors (without `skip_bad`, or when nothing could be scored) name the file: a missing root or
/// prediction directory, an unreadable or truncated PNG, a prediction of another size than its
/// label, ids that are neither a class nor the ignore index. With `skip_bad` a bad pair is
/// logged and listed in [`EvalReport::skipped`]; what was accumulated is kept.
pub fn eval_dir(
    gt: &GtSource,
    pred_dir: &Path,
    opts: &EvalOptions,
    progress: ProgressFn<'_>,
) -> Result<EvalReport> {
    if !pred_dir.is_dir() {
        return Err(DataError::Missing {
            dataset: "predictions".into(),
            what: "prediction directory".into(),
            path: pred_dir.to_path_buf(),
            hint: None,
        });
    }
    // `segsweep predict` writes <stem>.pred.png beside .overlay.png and .probs.npy: with the
    // default suffix, a directory holding such files is read as predict's output.
    let pred_suffix = match (opts.pred_suffix.as_deref(), predict_outputs(pred_dir)?) {
        (Some(given), _) => given.to_string(),
        (None, (true, false)) => {
            tracing::info!(
                "{} holds `segsweep predict` outputs: scoring <id>.pred.png",
                pred_dir.display()
            );
            PREDICT_SUFFIX.to_string()
        }
        (None, (true, true)) => {
            return Err(DataError::Config {
                key: pred_dir.display().to_string(),
                msg: "the directory holds both `segsweep predict` outputs (<id>.pred.png) and other <id>.png files; pass --pred-suffix .pred.png or --pred-suffix .png to say which to score".into(),
            })
        }
        (None, _) => ".png".to_string(),
    };
    let (mut scoring, pairs, without) = pairs(gt, pred_dir, &pred_suffix)?;
    if let Some(path) = &opts.classes {
        scoring.classes = override_classes(&scoring, path)?;
    }
    if pairs.is_empty() {
        return Err(DataError::Missing {
            dataset: scoring.name.clone(),
            what: format!("any prediction `<id>{pred_suffix}` matching a label"),
            path: pred_dir.to_path_buf(),
            hint: Some("predictions are named after sample ids, e.g. 2007_000033.png".into()),
        });
    }
    let n = scoring.classes.len();
    let mut counts = IouCounts::new(n);
    let mut scored = Vec::new();
    let mut skipped = Vec::new();
    let mut weights = std::collections::BTreeSet::new();
    let mut models = std::collections::BTreeSet::new();
    let mut unlabelled = 0;
    for (k, p) in pairs.iter().enumerate() {
        match score_pair(&scoring, p) {
            Ok((pred, label)) => {
                counts.add(&pred.data, &label.data, scoring.ignore)?;
                scored.push(p.id.clone());
                let text = png_text(&p.pred).unwrap_or_default();
                let get = |key: &str| text.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
                match get(PREDICTION_WEIGHTS_KEY) {
                    Some(w) => {
                        weights.insert(w);
                        models.extend(get(PREDICTION_MODEL_KEY));
                    }
                    None => unlabelled += 1,
                }
            }
            Err(e) if opts.skip_bad => {
                tracing::warn!("skipped: {e}");
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| p.pred.clone());
                skipped.push(SkippedFile {
                    path,
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(e),
        }
        progress(k + 1, pairs.len());
    }
    let summary = counts.summary(scoring.person);
    if let Some(w) = without_warning(&scoring.name, &without) {
        tracing::warn!("{w}");
    }
    Ok(EvalReport {
        dataset: scoring.name,
        class_names: scoring.classes.display_names(),
        person_class: scoring.person,
        counts,
        summary,
        scored,
        without_prediction: without.len(),
        without_prediction_ids: without,
        skipped,
        prediction_weights: weights.into_iter().collect(),
        prediction_models: models.into_iter().collect(),
        unlabelled_predictions: unlabelled,
        pred_suffix,
    })
}

/// The suffix of `segsweep predict`'s label maps.
pub const PREDICT_SUFFIX: &str = ".pred.png";

/// Whether `dir` holds files named like `predict`'s label maps (`<stem>.pred.png`), and
/// whether it holds other `.png` files (not predict's `.pred.png` or `.overlay.png`).
fn predict_outputs(dir: &Path) -> Result<(bool, bool)> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let names: Vec<&str> = files
        .iter()
        .filter_map(|f| f.file_name().and_then(|n| n.to_str()))
        .filter(|n| !n.starts_with('.'))
        .collect();
    let pred = names.iter().any(|n| n.ends_with(PREDICT_SUFFIX));
    let other = names
        .iter()
        .any(|n| n.ends_with(".png") && !is_predict_output(n));
    Ok((pred, other))
}

/// Whether a file name is one of `predict`'s PNG outputs (`.pred.png`, `.overlay.png`).
fn is_predict_output(name: &str) -> bool {
    name.ends_with(PREDICT_SUFFIX) || name.ends_with(".overlay.png")
}

fn score_pair(s: &Scoring, p: &Pair) -> Result<(LabelMap, LabelMap)> {
    let mut label = load_label(&p.gt)?;
    if s.reduce_zero_label {
        label.reduce_zero_label();
    }
    check_ids(&label, s.classes.len(), s.ignore, &p.gt)?;
    // The prediction is read with the label reader; its errors say "prediction".
    let pred = load_label(&p.pred).map_err(|e| match e {
        DataError::Decode { path, msg, .. } => DataError::Decode {
            path,
            what: "prediction PNG",
            msg,
        },
        other => other,
    })?;
    if (pred.h, pred.w) != (label.h, label.w) {
        return Err(DataError::SizeMismatch {
            path: p.pred.clone(),
            got: (pred.h, pred.w),
            other: format!("its label {}", p.gt.display()),
            expected: (label.h, label.w),
        });
    }
    // A prediction may use the ignore index for "no class" (counted nowhere, as in mmseg).
    check_ids(&pred, s.classes.len(), s.ignore, &p.pred).map_err(|e| match e {
        DataError::IdOutOfRange {
            path,
            id,
            n_classes,
            ignore,
            ..
        } => DataError::IdOutOfRange {
            path,
            id,
            n_classes,
            ignore,
            hint: Some(format!(
                "a prediction holds class ids 0–{} (or {ignore} for no class); was it made with another class list?",
                n_classes.saturating_sub(1)
            )),
        },
        other => other,
    })?;
    Ok((pred, label))
}

/// The (prediction, label) pairs to score, and the ids of the samples that lack a prediction.
fn pairs(
    gt: &GtSource,
    pred_dir: &Path,
    pred_suffix: &str,
) -> Result<(Scoring, Vec<Pair>, Vec<String>)> {
    match gt {
        GtSource::Registered { name, root } => {
            from_dataset(&Dataset::registered(name, root)?, pred_dir, pred_suffix)
        }
        GtSource::Custom(cfg) => from_dataset(&Dataset::custom(cfg)?, pred_dir, pred_suffix),
        GtSource::Dir {
            gt_dir,
            classes,
            label_suffix,
            ignore_index,
            reduce_zero_label,
        } => {
            if !gt_dir.is_dir() {
                return Err(DataError::Missing {
                    dataset: "--gt".into(),
                    what: "label directory".into(),
                    path: gt_dir.clone(),
                    hint: None,
                });
            }
            let classes = ClassNames::from_file(classes)?;
            let mut files = Vec::new();
            walk(pred_dir, &mut files)?;
            // With `.png`, predict's own outputs beside plain predictions are not predictions.
            let predict_output = |f: &PathBuf| {
                pred_suffix == ".png"
                    && f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(is_predict_output)
            };
            let mut pairs: Vec<Pair> = files
                .iter()
                .filter(|f| !predict_output(f))
                .filter_map(|f| rel_id(pred_dir, f, pred_suffix).map(|id| (id, f)))
                .map(|(id, f)| Pair {
                    gt: gt_dir.join(format!("{id}{label_suffix}")),
                    pred: f.clone(),
                    id,
                })
                .collect();
            pairs.sort_by(|a, b| a.id.cmp(&b.id));
            let stray: Vec<&Pair> = pairs.iter().filter(|p| !p.gt.is_file()).collect();
            if let Some(first) = stray.first() {
                return Err(DataError::Missing {
                    dataset: gt_dir.display().to_string(),
                    what: format!(
                        "the label of {} prediction(s) ({}{})",
                        stray.len(),
                        stray.iter().take(5).map(|p| p.id.as_str()).collect::<Vec<_>>().join(", "),
                        if stray.len() > 5 { ", …" } else { "" }
                    ),
                    path: first.gt.clone(),
                    hint: Some(format!(
                        "every prediction <id>{pred_suffix} under {} needs the label <id>{label_suffix} under {}; remove stray predictions or check the suffixes",
                        pred_dir.display(),
                        gt_dir.display()
                    )),
                });
            }
            let without = labels_without_prediction(gt_dir, label_suffix, &pairs)?;
            let person = classes.find("person");
            let scoring = Scoring {
                name: gt_dir.display().to_string(),
                classes,
                ignore: *ignore_index,
                reduce_zero_label: *reduce_zero_label,
                person,
                background: None,
            };
            Ok((scoring, pairs, without))
        }
    }
}

fn from_dataset(
    ds: &Dataset,
    pred_dir: &Path,
    pred_suffix: &str,
) -> Result<(Scoring, Vec<Pair>, Vec<String>)> {
    for w in &ds.warnings {
        tracing::warn!("{w}");
    }
    let mut pairs = Vec::new();
    let mut without = Vec::new();
    for i in 0..ds.len() {
        let Some(r) = ds.sample_ref(i) else { continue };
        let nested = pred_dir.join(format!("{}{pred_suffix}", r.id));
        let base = r.id.rsplit('/').next().unwrap_or(&r.id);
        let flat = pred_dir.join(format!("{base}{pred_suffix}"));
        let pred = [nested, flat].into_iter().find(|p| p.is_file());
        match pred {
            Some(pred) => pairs.push(Pair {
                id: r.id.clone(),
                pred,
                gt: r.label.clone(),
            }),
            None => without.push(r.id.clone()),
        }
    }
    let info = &ds.info;
    let scoring = Scoring {
        name: info.name.clone(),
        classes: info.classes.clone(),
        ignore: info.ignore_index,
        reduce_zero_label: info.reduce_zero_label,
        person: info.person_class,
        background: info.background_class,
    };
    without.sort();
    Ok((scoring, pairs, without))
}

/// The ids of the label files `<id><label_suffix>` under `gt_dir` that no pair scores.
fn labels_without_prediction(
    gt_dir: &Path,
    label_suffix: &str,
    pairs: &[Pair],
) -> Result<Vec<String>> {
    let predicted: HashSet<&str> = pairs.iter().map(|p| p.id.as_str()).collect();
    let mut files = Vec::new();
    walk(gt_dir, &mut files)?;
    let mut without: Vec<String> = files
        .iter()
        .filter_map(|f| rel_id(gt_dir, f, label_suffix))
        .filter(|id| !predicted.contains(id.as_str()))
        .collect();
    without.sort();
    Ok(without)
}

/// One warning line naming up to five samples without a prediction.
fn without_warning(dataset: &str, ids: &[String]) -> Option<String> {
    const SHOWN: usize = 5;
    if ids.is_empty() {
        return None;
    }
    let more = ids.len().saturating_sub(SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Some(format!(
        "{dataset}: {} sample(s) have no prediction and are not scored: {}{more}",
        ids.len(),
        ids[..ids.len().min(SHOWN)].join(", ")
    ))
}

/// The class names of `--classes FILE`, which must match the ground truth's class count.
fn override_classes(s: &Scoring, path: &Path) -> Result<ClassNames> {
    let mut names = ClassNames::from_file(path)?;
    if names.len() != s.classes.len() {
        return Err(DataError::ClassNames {
            source_name: path.display().to_string(),
            msg: format!(
                "lists {} classes but `{}` has {} (label ids 0–{}); the names would not match \
                 the ids (hint: give a file with one line per class of the dataset, or leave \
                 out --classes to use the dataset's own names)",
                names.len(),
                s.name,
                s.classes.len(),
                s.classes.len().saturating_sub(1)
            ),
        });
    }
    if let Some(b) = s.background {
        names.name_background(b);
    }
    Ok(names)
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "n/a".into());
        let s = &self.summary;
        writeln!(
            f,
            "{}: {} images scored, {} without prediction, {} skipped",
            self.dataset,
            self.scored.len(),
            self.without_prediction,
            self.skipped.len()
        )?;
        if let Some(w) = without_warning(&self.dataset, &self.without_prediction_ids) {
            writeln!(f, "{w}")?;
        }
        writeln!(
            f,
            "mIoU {}  aAcc {}  mAcc {}  fwIoU {}  person IoU {}  ({} of {} classes scored)",
            pct(s.miou_pct),
            pct(s.aacc_pct),
            pct(s.macc_pct),
            pct(s.fwiou_pct),
            pct(s.person_iou_pct),
            s.classes_scored,
            self.class_names.len()
        )?;
        for sk in &self.skipped {
            writeln!(f, "skipped {}: {}", sk.path.display(), sk.reason)?;
        }
        Ok(())
    }
}
