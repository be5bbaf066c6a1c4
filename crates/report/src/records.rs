//! The result record of one configuration and its on-disk form.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ReportError, Result};

/// Raw per-class pixel counts summed over the dataset (the state of mmseg's `IoUMetric`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub intersect: Vec<u64>,
    pub union: Vec<u64>,
    pub pred: Vec<u64>,
    pub label: Vec<u64>,
}

impl Counts {
    /// Check that the counts describe `n_classes` classes consistently: one entry per class in
    /// each array and, per class, `union = pred + label − intersect` with `intersect` at most
    /// `pred` and `label` (how the metric defines them).
    pub fn check(&self, n_classes: usize) -> std::result::Result<(), String> {
        for (name, v) in [
            ("intersect", &self.intersect),
            ("union", &self.union),
            ("pred", &self.pred),
            ("label", &self.label),
        ] {
            if v.len() != n_classes {
                return Err(format!(
                    "counts.{name} has {} entries for {n_classes} class names",
                    v.len()
                ));
            }
        }
        for c in 0..n_classes {
            let (i, u, p, l) = (
                self.intersect[c],
                self.union[c],
                self.pred[c],
                self.label[c],
            );
            if i > p || i > l || p.checked_add(l).and_then(|s| s.checked_sub(i)) != Some(u) {
                return Err(format!(
                    "class {c}: intersect {i}, union {u}, pred {p}, label {l} are inconsistent (union must be pred + label − intersect)"
                ));
            }
        }
        Ok(())
    }
}

/// Metrics derived from [`Counts`] by the runner (percentages; `None` where undefined).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub miou_pct: Option<f64>,
    pub person_iou_pct: Option<f64>,
    pub aacc_pct: Option<f64>,
    pub macc_pct: Option<f64>,
    pub fwiou_pct: Option<f64>,
    pub per_class_iou_pct: Vec<Option<f64>>,
    pub per_class_acc_pct: Vec<Option<f64>>,
}

/// One swept parameter's value in a configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweptValue {
    /// Dotted path, e.g. `cliptrase.correlation_temperature` or `inference.prob_thd`.
    pub path: String,
    /// The value as TOML would write it (`0.05`, `"paper"`, `[8, 16]`).
    pub value: String,
    /// The value as a number, where it is one (used for line charts).
    pub number: Option<f64>,
}

impl SweptValue {
    /// The value for people: a TOML string without its quotes (`slide`, not `"slide"`),
    /// anything else as TOML writes it. Used in tables, chart legends and labels.
    pub fn display(&self) -> String {
        if self.value.starts_with('"') || self.value.starts_with('\'') {
            // A TOML document holding the value under a key reads it with its escapes.
            if let Ok(t) = format!("v = {}", self.value).parse::<toml::Table>() {
                if let Some(toml::Value::String(s)) = t.get("v") {
                    return s.clone();
                }
            }
        }
        self.value.clone()
    }

    /// The parameter's short name for labels: the last part of its path (`prob_thd`), or the
    /// whole path when another of `all` ends the same way (`a.alpha`, `b.alpha`).
    pub fn short_key(&self, all: &[SweptValue]) -> &str {
        let last = |p: &str| p.rsplit('.').next().unwrap_or("").to_string();
        let key = self.path.rsplit('.').next().unwrap_or(&self.path);
        if all
            .iter()
            .any(|o| o.path != self.path && last(&o.path) == key)
        {
            &self.path
        } else {
            key
        }
    }
}

/// The label of a configuration with `variant` and `swept` values, as tables, charts and the
/// console show it ([`Record::label`]).
pub fn label_of(variant: &str, swept: &[SweptValue]) -> String {
    let mut parts = vec![variant.to_string()];
    for s in swept {
        parts.push(format!("{}={}", s.short_key(swept), s.display()));
    }
    parts.retain(|p| !p.is_empty());
    if parts.is_empty() {
        "default".into()
    } else {
        parts.join(" ")
    }
}

/// The result of one configuration over a dataset: what `counts/<hash>.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub run_id: String,
    pub config_hash: String,
    pub variant: String,
    /// Swept parameters in sweep order.
    pub swept: Vec<SweptValue>,
    pub dataset: String,
    /// `benchmark`, `custom` or `synthetic`.
    pub data_kind: String,
    pub images: usize,
    /// Files skipped with `--skip-bad`.
    pub skipped: usize,
    /// Sample ids used, in order.
    pub sample_ids: Vec<String>,
    pub class_names: Vec<String>,
    pub person_class: Option<usize>,
    pub counts: Counts,
    pub metrics: Metrics,
    pub seconds: f64,
    pub ms_per_image: f64,
    pub model_id: String,
    pub model_file_hash: String,
    pub device: String,
    pub dtype: String,
    pub segsweep_version: String,
    pub git_rev: String,
    /// `real`, `random-fixture` or `synthetic` for a sweep; `external` for `segsweep eval`,
    /// whose predictions come from outside segsweep.
    pub weights: String,
    /// The kernels that computed it: `cpu`, `fused` (segsweep's CUDA kernels, the default on
    /// CUDA) or `candle` (candle's CUDA ops, `SEGSWEEP_CUDA_KERNELS=candle`); empty in records
    /// written before this field.
    #[serde(default)]
    pub kernels: String,
    /// Images whose last block ran on a backbone prefix read back from f16 (`spill = "f16"` or
    /// `feature_cache = "f16"` with an f32 or bf16 model): their numbers are close to, not
    /// identical with, a run without. 0 in records written before this field.
    #[serde(default)]
    pub f16_prefix_images: usize,
}

impl Record {
    /// A short label for charts and the console: the variant plus the swept values, or
    /// `default` when there are neither (as `validate` and the log name that configuration).
    pub fn label(&self) -> String {
        label_of(&self.variant, &self.swept)
    }

    /// Whether the numbers come from random weights or synthetic data (then every chart says so).
    pub fn is_not_benchmark(&self) -> bool {
        self.weights != "real" || self.data_kind == "synthetic"
    }
}

/// A metric for messages: its value, or `undefined` (`None`: no pixel to divide by).
fn show(v: Option<f64>) -> String {
    v.map(|x| x.to_string())
        .unwrap_or_else(|| "undefined".into())
}

impl Record {
    /// Check that the record holds together, since tables and charts are redrawn from records
    /// alone: counts consistent with each other and the class list ([`Counts::check`]), the
    /// person class among the classes, and every stored metric equal to the one mmseg's
    /// `IoUMetric` derives from the counts (`segsweep_data::IouCounts::summary`).
    pub fn check(&self) -> std::result::Result<(), String> {
        let n = self.class_names.len();
        self.counts.check(n)?;
        if let Some(p) = self.person_class.filter(|&p| p >= n) {
            return Err(format!("person_class {p} is not among the {n} classes"));
        }
        if self.f16_prefix_images > self.images {
            return Err(format!(
                "f16_prefix_images {} is more than its {} images",
                self.f16_prefix_images, self.images
            ));
        }
        let derived = segsweep_data::IouCounts {
            intersect: self.counts.intersect.clone(),
            union: self.counts.union.clone(),
            pred: self.counts.pred.clone(),
            label: self.counts.label.clone(),
            images: 0,
        }
        .summary(self.person_class);
        let m = &self.metrics;
        let same = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
            (None, None) => true,
            _ => false,
        };
        let scalars = [
            ("miou_pct", m.miou_pct, derived.miou_pct),
            ("person_iou_pct", m.person_iou_pct, derived.person_iou_pct),
            ("aacc_pct", m.aacc_pct, derived.aacc_pct),
            ("macc_pct", m.macc_pct, derived.macc_pct),
            ("fwiou_pct", m.fwiou_pct, derived.fwiou_pct),
        ];
        for (name, stored, want) in scalars {
            if !same(stored, want) {
                return Err(format!(
                    "metrics.{name} is {} but the counts give {}",
                    show(stored),
                    show(want)
                ));
            }
        }
        for (name, stored, want) in [
            ("per_class_iou_pct", &m.per_class_iou_pct, &derived.iou_pct),
            ("per_class_acc_pct", &m.per_class_acc_pct, &derived.acc_pct),
        ] {
            if stored.len() != n {
                return Err(format!(
                    "metrics.{name} has {} entries for {n} classes",
                    stored.len()
                ));
            }
            if let Some(c) = (0..n).find(|&c| !same(stored[c], want[c])) {
                return Err(format!(
                    "metrics.{name}[{c}] is {} but the counts give {}",
                    show(stored[c]),
                    show(want[c])
                ));
            }
        }
        Ok(())
    }
}

/// Write `bytes` to `path` atomically: a temp file in the same directory, then a rename, so a
/// crash never leaves a half-written result. The file gets the permissions a plain
/// `File::create` would give it (0666 less the umask).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| ReportError::Write {
        path: path.display().to_string(),
        cause: e,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut builder = tempfile::Builder::new();
    // Results are read by other users and tools: create the file as `File::create` would
    // (0666 less the umask), not with the temp file's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// One record file, checked: it parses, its counts and metrics agree ([`Record::check`]), and
/// it is named by the hash of the configuration it holds.
pub fn load_record(path: &Path) -> Result<Record> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::Io {
        path: path.display().to_string(),
        cause: e,
    })?;
    let bad = |msg: String| ReportError::BadRecord {
        path: path.display().to_string(),
        msg,
    };
    let r: Record = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    r.check().map_err(bad)?;
    // The runner names each record by its configuration's hash; a renamed or copied file
    // would show one configuration's numbers under another's name.
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != r.config_hash {
        return Err(bad(format!(
            "the file is named {stem}.json but holds configuration {}",
            r.config_hash
        )));
    }
    Ok(r)
}

/// Every finished record in `<run_dir>/counts/` (checked by [`load_record`]), in the order of
/// `order.txt` when the run has one (records it does not list last).
pub fn load_records(run_dir: &Path) -> Result<Vec<Record>> {
    let dir = run_dir.join("counts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| ReportError::Io {
            path: dir.display().to_string(),
            cause: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| !p.to_string_lossy().ends_with(".partial.json"))
        .collect();
    paths.sort();
    // (File names are unique, so with the name check no two records share a hash.)
    let mut records = paths
        .iter()
        .map(|p| load_record(p))
        .collect::<Result<Vec<_>>>()?;
    if let Some(pos) = run_order(run_dir) {
        records.sort_by_key(|r| {
            pos.iter()
                .position(|h| *h == r.config_hash)
                .unwrap_or(usize::MAX)
        });
    }
    Ok(records)
}

/// The configuration hashes of the run's spec, in sweep order (`order.txt`), if it has one.
pub fn run_order(run_dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(run_dir.join("order.txt")).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

/// The records of a run that its current spec lists (`order.txt`), in that order, and the
/// hashes of other records in `counts/` (left there by an earlier spec run into the same run
/// directory with `--run-id`): tables and charts show only the current ones. A run directory
/// without `order.txt` (records gathered by hand) shows every record.
pub fn load_run(run_dir: &Path) -> Result<RunRecords> {
    let all = load_records(run_dir)?;
    let Some(order) = run_order(run_dir) else {
        return Ok(RunRecords {
            records: all,
            others: Vec::new(),
        });
    };
    let (records, others): (Vec<Record>, Vec<Record>) = all
        .into_iter()
        .partition(|r| order.contains(&r.config_hash));
    Ok(RunRecords {
        records,
        others: others.into_iter().map(|r| r.config_hash).collect(),
    })
}

/// What [`load_run`] found.
#[derive(Debug, Clone)]
pub struct RunRecords {
    /// The current spec's finished configurations, in sweep order.
    pub records: Vec<Record>,
    /// Hashes of records in `counts/` that the current spec does not list.
    pub others: Vec<String>,
}
