//! A dataset: an ordered list of (image, label) samples plus what is needed to score them.
//!
//! Three sources give the same [`Dataset`]: a registered benchmark on disk
//! ([`Dataset::registered`]), a custom directory ([`Dataset::custom`]) and the in-memory
//! synthetic set ([`Dataset::synthetic`]). Listing is cheap (paths only); pixels are read by
//! [`Dataset::load`], which also applies `reduce_zero_label` and checks sizes and ids.

use std::path::{Path, PathBuf};

use segsweep_core::RgbImage;
use serde::{Deserialize, Serialize};

use crate::classes::ClassNames;
use crate::error::{DataError, Result};
use crate::io::{load_label, load_rgb, LabelMap, IGNORE_INDEX};
use crate::registry::{dataset_spec, DatasetDefaults, DatasetSpec};
use crate::subset::Subset;

/// Everything about a dataset except its samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetInfo {
    /// Registry name, or the custom dataset's name.
    pub name: String,
    pub classes: ClassNames,
    pub ignore_index: u32,
    pub reduce_zero_label: bool,
    /// Label id of the person class, if the dataset has one.
    pub person_class: Option<usize>,
    /// Label id of the explicit background class, if any.
    pub background_class: Option<usize>,
    /// SCLIP's inference settings for this dataset (registered datasets only).
    pub defaults: Option<DatasetDefaults>,
    /// Expected number of samples (registered datasets: the validation size).
    pub expected_len: Option<usize>,
    /// Dataset root on disk (`None` for in-memory sets).
    pub root: Option<PathBuf>,
}

impl DatasetInfo {
    /// Number of classes C.
    pub fn n_classes(&self) -> usize {
        self.classes.len()
    }
}

/// Where one sample's files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRef {
    /// The split-file id (or the image path relative to the image dir, without suffix).
    pub id: String,
    pub image: PathBuf,
    pub label: PathBuf,
}

/// One loaded sample: the image `(h, w, 3)` and its label `(h, w)` at the same size, with
/// `reduce_zero_label` already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub id: String,
    pub image: RgbImage,
    pub label: LabelMap,
}

#[derive(Debug, Clone)]
enum Entries {
    Files(Vec<SampleRef>),
    Memory(Vec<Sample>),
}

/// An ordered, possibly subset, list of samples.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub info: DatasetInfo,
    entries: Entries,
    /// Problems found while listing (missing files, unexpected count), one line each.
    pub warnings: Vec<String>,
    orphans: Vec<PathBuf>,
}

/// A custom dataset declared in a spec: a directory of images and label PNGs plus a class file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomConfig {
    /// Name used in records.
    pub name: String,
    /// Root directory; the other paths are relative to it (or absolute).
    pub root: PathBuf,
    /// Image directory (default `images`).
    #[serde(default = "default_image_dir")]
    pub image_dir: PathBuf,
    /// Label directory (default `labels`).
    #[serde(default = "default_label_dir")]
    pub label_dir: PathBuf,
    /// Optional split file, one id per line; without it every image under `image_dir`.
    #[serde(default)]
    pub split_file: Option<PathBuf>,
    /// Image file suffix (default `.jpg`).
    #[serde(default = "default_img_suffix")]
    pub img_suffix: String,
    /// Label file suffix (default `.png`).
    #[serde(default = "default_label_suffix")]
    pub label_suffix: String,
    /// Class-name file in SCLIP's format (relative paths are relative to `root`).
    pub classes: PathBuf,
    /// Label id that is not scored (default 255).
    #[serde(default = "default_ignore")]
    pub ignore_index: u32,
    /// Apply mmseg's `reduce_zero_label` at load (default false).
    #[serde(default)]
    pub reduce_zero_label: bool,
    /// Name (any synonym) of the person class, for person IoU (default `person`, if present).
    #[serde(default)]
    pub person_class: Option<String>,
    /// Name of the background class that `prob_thd` pushes pixels to, if any.
    #[serde(default)]
    pub background_class: Option<String>,
}

fn default_image_dir() -> PathBuf {
    "images".into()
}
fn default_label_dir() -> PathBuf {
    "labels".into()
}
fn default_img_suffix() -> String {
    ".jpg".into()
}
fn default_label_suffix() -> String {
    ".png".into()
}
fn default_ignore() -> u32 {
    IGNORE_INDEX
}

/// The resolved file layout of a dataset on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub root: PathBuf,
    pub img_dir: PathBuf,
    pub label_dir: PathBuf,
    pub split_file: Option<PathBuf>,
    pub img_suffix: String,
    pub label_suffix: String,
}

impl Layout {
    /// The layout of a registered dataset under `root`.
    pub fn of_spec(spec: &DatasetSpec, root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            img_dir: root.join(spec.img_dir),
            label_dir: root.join(spec.label_dir),
            split_file: spec.split_file.map(|s| root.join(s)),
            img_suffix: spec.img_suffix.to_string(),
            label_suffix: spec.label_suffix.to_string(),
        }
    }

    /// The layout of a custom dataset.
    pub fn of_custom(cfg: &CustomConfig) -> Layout {
        Layout {
            root: cfg.root.clone(),
            img_dir: cfg.root.join(&cfg.image_dir),
            label_dir: cfg.root.join(&cfg.label_dir),
            split_file: cfg.split_file.as_ref().map(|s| cfg.root.join(s)),
            img_suffix: cfg.img_suffix.clone(),
            label_suffix: cfg.label_suffix.clone(),
        }
    }

    /// List samples in split order (split file) or sorted by image path (directory scan).
    ///
    /// Also returns the problems found: split entries whose image or label is missing, and
    /// (directory scan) labels without an image. Missing files stay in the list so that loading
    /// them fails with the file's name instead of silently shrinking the set.
    pub fn list(&self, dataset: &str) -> Result<Listing> {
        let missing_dir = |what: &str, path: &Path, hint: &str| DataError::Missing {
            dataset: dataset.to_string(),
            what: what.to_string(),
            path: path.to_path_buf(),
            hint: Some(hint.to_string()),
        };
        if self.root.exists() && !self.root.is_dir() {
            return Err(missing_dir(
                "dataset root (a directory; this is a file)",
                &self.root,
                ROOT_HINT,
            ));
        }
        if !self.root.is_dir() {
            return Err(missing_dir("dataset root", &self.root, ROOT_HINT));
        }
        if !self.img_dir.is_dir() {
            return Err(missing_dir(
                "image directory",
                &self.img_dir,
                &format!("is the root right? {ROOT_HINT}"),
            ));
        }
        if !self.label_dir.is_dir() {
            return Err(missing_dir(
                "label directory",
                &self.label_dir,
                "some registered datasets need `segsweep data prepare NAME` first; for a custom dataset check [dataset.custom] label_dir (relative to its root)",
            ));
        }
        let ids: Vec<String> = match &self.split_file {
            Some(split) => {
                let text = std::fs::read_to_string(split).map_err(|e| DataError::Io {
                    path: split.clone(),
                    cause: e,
                    hint: Some(format!("dataset `{dataset}` needs its split file")),
                })?;
                // A byte-order mark some editors write would become part of the first id.
                let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
                // mmseg: `img_name = line.strip()` for every line; blank lines are skipped here.
                let ids: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                check_split_ids(&ids, split)?;
                ids
            }
            None => {
                let mut files = Vec::new();
                walk(&self.img_dir, &mut files)?;
                let mut ids: Vec<String> = files
                    .iter()
                    .filter_map(|p| rel_id(&self.img_dir, p, &self.img_suffix))
                    .collect();
                ids.sort();
                ids
            }
        };
        let samples: Vec<SampleRef> = ids
            .into_iter()
            .map(|id| SampleRef {
                image: self.img_dir.join(format!("{id}{}", self.img_suffix)),
                label: self.label_dir.join(format!("{id}{}", self.label_suffix)),
                id,
            })
            .collect();
        let mut missing: Vec<PathBuf> = Vec::new();
        for s in &samples {
            for p in [&s.image, &s.label] {
                if !p.is_file() {
                    missing.push(p.clone());
                }
            }
        }
        let mut orphans = Vec::new();
        if self.split_file.is_none() {
            // Labels whose image is absent (the directory scan only sees images).
            let mut labels = Vec::new();
            walk(&self.label_dir, &mut labels)?;
            for l in labels {
                if let Some(id) = rel_id(&self.label_dir, &l, &self.label_suffix) {
                    let img = self.img_dir.join(format!("{id}{}", self.img_suffix));
                    if !img.is_file() {
                        orphans.push(img);
                    }
                }
            }
        }
        Ok(Listing {
            samples,
            missing,
            orphans,
        })
    }
}

/// Split-file ids must name files under the image and label directories (no `..`, no
/// absolute path) and appear once each (a repeated id would be scored twice).
fn check_split_ids(ids: &[String], split: &Path) -> Result<()> {
    let bad = |msg: String| DataError::Config {
        key: split.display().to_string(),
        msg,
    };
    if let Some(id) = ids.iter().find(|id| {
        Path::new(id.as_str())
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    }) {
        return Err(bad(format!(
            "id `{id}` leaves the image and label directories (`..`, `.` or an absolute path); ids are paths relative to them, without suffix"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let repeated: Vec<&str> = ids
        .iter()
        .filter(|id| !seen.insert(id.as_str()))
        .map(String::as_str)
        .collect();
    if !repeated.is_empty() {
        return Err(bad(format!(
            "{} id(s) listed more than once ({}{}): each would be scored again",
            repeated.len(),
            repeated
                .iter()
                .take(5)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            if repeated.len() > 5 { ", …" } else { "" }
        )));
    }
    Ok(())
}

/// What [`Layout::list`] found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Samples in split order.
    pub samples: Vec<SampleRef>,
    /// Images or labels of listed samples that do not exist.
    pub missing: Vec<PathBuf>,
    /// Image paths expected for labels that have no image (directory scan only).
    pub orphans: Vec<PathBuf>,
}

/// Every file under `dir`, recursively (symlinks followed).
/// Every way to give a dataset root: the message is shared by `sweep` (which has no `--root`)
/// and the `data` / `eval` commands (which have no spec).
pub const ROOT_HINT: &str =
    "in a sweep, set `[dataset] root` (`[dataset.custom] root` for a custom dataset) or pass \
     `--data-dir DIR` (registered datasets live at DIR/<layout root>, see `segsweep data list`); \
     `segsweep data check` and `segsweep eval` take `--root DIR` or `--data-dir DIR`; \
     `segsweep data prepare` writes the expected layout";

pub(crate) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// `base/a/b_suffix` → `a/b` when the file ends with `suffix` (hidden temp files are skipped).
pub(crate) fn rel_id(base: &Path, path: &Path, suffix: &str) -> Option<String> {
    let rel = path.strip_prefix(base).ok()?;
    let s = rel.to_str()?;
    let name = rel.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    s.strip_suffix(suffix).map(|id| id.replace('\\', "/"))
}

const MAX_NAMED: usize = 10;

/// One warning line listing up to 10 missing files.
fn missing_warning(dataset: &str, missing: &[PathBuf]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let shown: Vec<String> = missing
        .iter()
        .take(MAX_NAMED)
        .map(|p| p.display().to_string())
        .collect();
    let more = missing.len().saturating_sub(MAX_NAMED);
    Some(format!(
        "dataset `{dataset}`: {} missing file(s): {}{}",
        missing.len(),
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

impl Dataset {
    /// A registered benchmark under `root` (see [`crate::registry::DATASETS`]).
    /// `synthetic` is accepted too and gives the default synthetic set (8 images, seed 0).
    pub fn registered(name: &str, root: &Path) -> Result<Dataset> {
        if name == "synthetic" {
            return Ok(Dataset::synthetic(8, 0));
        }
        let spec = dataset_spec(name)?;
        let layout = Layout::of_spec(spec, root);
        let listing = layout.list(spec.name)?;
        let info = DatasetInfo {
            name: spec.name.to_string(),
            classes: spec.classes(),
            ignore_index: spec.ignore_index,
            reduce_zero_label: spec.reduce_zero_label,
            person_class: Some(spec.person_class),
            background_class: spec.background_class,
            defaults: Some(spec.defaults),
            expected_len: Some(spec.val_size),
            root: Some(root.to_path_buf()),
        };
        Ok(Dataset::from_files(info, listing))
    }

    /// A custom dataset (see [`CustomConfig`]).
    pub fn custom(cfg: &CustomConfig) -> Result<Dataset> {
        // Relative paths are relative to the root, like image_dir and label_dir.
        if !cfg.root.is_dir() {
            return Err(DataError::Missing {
                dataset: cfg.name.clone(),
                what: if cfg.root.exists() {
                    "custom dataset root (a directory; this is a file)".into()
                } else {
                    "custom dataset root".into()
                },
                path: cfg.root.clone(),
                hint: Some(
                    "set [dataset.custom] root to the directory holding the images, labels and class file"
                        .into(),
                ),
            });
        }
        let class_path = cfg.root.join(&cfg.classes);
        let classes = ClassNames::from_file(&class_path)?;
        let find = |key: &str, name: &str| {
            classes.find(name).ok_or_else(|| {
                DataError::config(
                    format!("dataset.custom.{key}"),
                    format!(
                        "class `{name}` is not in {} (classes: {}) (hint: name a class by any of its names on its line of the file, or leave the key out{})",
                        class_path.display(),
                        classes.display_names().join(", "),
                        if key == "background_class" {
                            " if the labels have no background class"
                        } else {
                            ""
                        }
                    ),
                )
            })
        };
        let person_class = match &cfg.person_class {
            Some(p) => Some(find("person_class", p)?),
            None => classes.find("person"),
        };
        let background_class = cfg
            .background_class
            .as_deref()
            .map(|b| find("background_class", b))
            .transpose()?;
        let layout = Layout::of_custom(cfg);
        let listing = layout.list(&cfg.name)?;
        let info = DatasetInfo {
            name: cfg.name.clone(),
            classes,
            ignore_index: cfg.ignore_index,
            reduce_zero_label: cfg.reduce_zero_label,
            person_class,
            background_class,
            defaults: None,
            expected_len: None,
            root: Some(cfg.root.clone()),
        };
        Ok(Dataset::from_files(info, listing))
    }

    /// The in-memory synthetic set of `n` images from `seed` (see [`crate::synthetic`]).
    pub fn synthetic(n: usize, seed: u64) -> Dataset {
        Dataset {
            info: crate::synthetic::synthetic_info(),
            entries: Entries::Memory(crate::synthetic::synthetic_dataset(n, seed)),
            warnings: Vec::new(),
            orphans: Vec::new(),
        }
    }

    fn from_files(info: DatasetInfo, listing: Listing) -> Dataset {
        let Listing {
            samples,
            missing,
            orphans,
        } = listing;
        let mut warnings: Vec<String> = missing_warning(&info.name, &missing).into_iter().collect();
        if let Some(w) = missing_warning(&info.name, &orphans) {
            warnings.push(format!("{w} (labels exist for these images)"));
        }
        if let Some(expected) = info.expected_len {
            if samples.len() != expected {
                warnings.push(format!(
                    "dataset `{}`: {} samples listed, the validation split has {expected}",
                    info.name,
                    samples.len()
                ));
            }
        }
        // Not logged here: `data check` and `data prepare` print them in their reports, and
        // the runner and `eval` log them (each once).
        Dataset {
            info,
            entries: Entries::Files(samples),
            warnings,
            orphans,
        }
    }

    /// Image paths expected for labels that have no image (directory-scanned datasets).
    pub fn orphans(&self) -> &[PathBuf] {
        &self.orphans
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Files(f) => f.len(),
            Entries::Memory(m) => m.len(),
        }
    }

    /// True when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of sample `i` (split-file id or relative path without suffix).
    pub fn id(&self, i: usize) -> Option<&str> {
        match &self.entries {
            Entries::Files(f) => f.get(i).map(|s| s.id.as_str()),
            Entries::Memory(m) => m.get(i).map(|s| s.id.as_str()),
        }
    }

    /// All sample ids in order (recorded with results).
    pub fn ids(&self) -> Vec<String> {
        (0..self.len())
            .filter_map(|i| self.id(i).map(str::to_string))
            .collect()
    }

    /// File locations of sample `i` (`None` for in-memory sets).
    pub fn sample_ref(&self, i: usize) -> Option<&SampleRef> {
        match &self.entries {
            Entries::Files(f) => f.get(i),
            Entries::Memory(_) => None,
        }
    }

    /// Images and labels of the listed samples (after any subset) that are not files, in
    /// sample order: what [`Dataset::load`] would fail on for a missing file. One `stat` per
    /// file; in-memory sets have none.
    pub fn missing_files(&self) -> Vec<PathBuf> {
        match &self.entries {
            Entries::Memory(_) => Vec::new(),
            Entries::Files(f) => f
                .iter()
                .flat_map(|s| [&s.image, &s.label])
                .filter(|p| !p.is_file())
                .cloned()
                .collect(),
        }
    }

    /// One line naming up to 10 of `missing` (see [`Dataset::missing_files`]), `None` when empty.
    pub fn describe_missing(&self, missing: &[PathBuf]) -> Option<String> {
        missing_warning(&self.info.name, missing)
    }

    /// Keep only the samples `subset` selects, in split order.
    pub fn subset(self, subset: &Subset) -> Dataset {
        let keep = subset.indices(self.len());
        let entries = match self.entries {
            Entries::Files(f) => Entries::Files(pick(f, &keep)),
            Entries::Memory(m) => Entries::Memory(pick(m, &keep)),
        };
        Dataset { entries, ..self }
    }

    /// Load sample `i`: the image `(h, w, 3)` and its label `(h, w)`, `reduce_zero_label`
    /// applied. Errors name the file: missing, unreadable, of another size than the image, or
    /// holding ids that are neither a class nor the ignore index.
    pub fn load(&self, i: usize) -> Result<Sample> {
        let r = match &self.entries {
            Entries::Memory(m) => {
                return m.get(i).cloned().ok_or_else(|| out_of_bounds(i, m.len()));
            }
            Entries::Files(f) => f.get(i).ok_or_else(|| out_of_bounds(i, f.len()))?,
        };
        let image = load_rgb(&r.image)?;
        let mut label = load_label(&r.label)?;
        if (label.h, label.w) != (image.h, image.w) {
            return Err(DataError::SizeMismatch {
                path: r.label.clone(),
                got: (label.h, label.w),
                other: format!("its image {}", r.image.display()),
                expected: (image.h, image.w),
            });
        }
        if self.info.reduce_zero_label {
            label.reduce_zero_label();
        }
        check_ids(
            &label,
            self.info.n_classes(),
            self.info.ignore_index,
            &r.label,
        )?;
        Ok(Sample {
            id: r.id.clone(),
            image,
            label,
        })
    }
}

fn pick<T>(v: Vec<T>, keep: &[usize]) -> Vec<T> {
    let mut keep_iter = keep.iter().peekable();
    v.into_iter()
        .enumerate()
        .filter_map(|(i, x)| {
            if keep_iter.peek() == Some(&&i) {
                keep_iter.next();
                Some(x)
            } else {
                None
            }
        })
        .collect()
}

fn out_of_bounds(i: usize, len: usize) -> DataError {
    DataError::config(
        "sample index",
        format!("{i} is out of range for {len} samples"),
    )
}

/// Error if `label` holds an id that is neither in `0..n_classes` nor `ignore`.
pub fn check_ids(label: &LabelMap, n_classes: usize, ignore: u32, path: &Path) -> Result<()> {
    if let Some(&id) = label
        .data
        .iter()
        .find(|&&v| v != ignore && v as usize >= n_classes)
    {
        return Err(DataError::IdOutOfRange {
            path: path.to_path_buf(),
            id,
            n_classes,
            ignore,
            hint: Some("wrong dataset, class file or reduce_zero_label?".into()),
        });
    }
    Ok(())
}
