//! `segsweep data check`: is a dataset tree complete and are its labels what the metric expects?
//!
//! Counts images and labels, names missing pairs, reads every label (after
//! `reduce_zero_label`, i.e. as the metric will see it) into an id histogram, and names labels
//! whose size differs from their image's, that cannot be decoded, or whose ids are neither a
//! class nor the ignore index.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dataset::{Dataset, SampleRef};
use crate::error::{DataError, Result};
use crate::io::load_label;
use crate::progress::ProgressFn;

/// A label whose size differs from its image's.
#[derive(Debug, Clone, Serialize)]
pub struct SizeMismatch {
    pub label: PathBuf,
    /// Label size `(h, w)`.
    pub label_hw: (usize, usize),
    /// Image size `(h, w)`.
    pub image_hw: (usize, usize),
}

/// What [`check`] found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub dataset: String,
    pub root: Option<PathBuf>,
    /// Samples listed (split file entries or images found).
    pub listed: usize,
    /// Expected validation size, for registered datasets.
    pub expected: Option<usize>,
    /// Listed samples whose image file exists.
    pub images_found: usize,
    /// Listed samples whose label file exists.
    pub labels_found: usize,
    /// Missing files: images or labels of listed samples, images of orphan labels.
    pub missing: Vec<PathBuf>,
    /// Pixels per label id, after `reduce_zero_label` (ignore index included).
    pub histogram: BTreeMap<u32, u64>,
    /// Number of classes C.
    pub n_classes: usize,
    pub ignore_index: u32,
    /// Labels holding ids ≥ C that are not the ignore index: (file, first such id).
    pub out_of_range: Vec<(PathBuf, u32)>,
    /// Labels of another size than their image.
    pub size_mismatch: Vec<SizeMismatch>,
    /// Files that could not be read or decoded: (file, error).
    pub unreadable: Vec<(PathBuf, String)>,
}

impl CheckReport {
    /// True when nothing is missing or bad and the count matches the expected size.
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty()
            && self.out_of_range.is_empty()
            && self.size_mismatch.is_empty()
            && self.unreadable.is_empty()
            && self.expected.is_none_or(|e| e == self.listed)
    }
}

/// Check the registered dataset `name` under `root`.
pub fn check(name: &str, root: &Path, progress: ProgressFn<'_>) -> Result<CheckReport> {
    check_dataset(&Dataset::registered(name, root)?, progress)
}

/// Check any file-backed dataset (registered or custom).
pub fn check_dataset(ds: &Dataset, progress: ProgressFn<'_>) -> Result<CheckReport> {
    let info = &ds.info;
    let mut r = CheckReport {
        dataset: info.name.clone(),
        root: info.root.clone(),
        listed: ds.len(),
        expected: info.expected_len,
        images_found: 0,
        labels_found: 0,
        missing: Vec::new(),
        histogram: BTreeMap::new(),
        n_classes: info.n_classes(),
        ignore_index: info.ignore_index,
        out_of_range: Vec::new(),
        size_mismatch: Vec::new(),
        unreadable: Vec::new(),
    };
    let refs: Vec<&SampleRef> = (0..ds.len()).filter_map(|i| ds.sample_ref(i)).collect();
    for (k, s) in refs.iter().enumerate() {
        check_one(ds, s, &mut r);
        progress(k + 1, refs.len());
    }
    // Orphan labels (directory-scanned datasets) were found while listing.
    for w in &ds.warnings {
        tracing::debug!("{w}");
    }
    r.missing.extend(ds.orphans().iter().cloned());
    Ok(r)
}

fn check_one(ds: &Dataset, s: &SampleRef, r: &mut CheckReport) {
    let info = &ds.info;
    let img_ok = s.image.is_file();
    let lbl_ok = s.label.is_file();
    r.images_found += usize::from(img_ok);
    r.labels_found += usize::from(lbl_ok);
    for (ok, p) in [(img_ok, &s.image), (lbl_ok, &s.label)] {
        if !ok {
            r.missing.push(p.clone());
        }
    }
    if !lbl_ok {
        return;
    }
    let mut label = match load_label(&s.label) {
        Ok(l) => l,
        Err(e) => {
            r.unreadable.push((s.label.clone(), e.to_string()));
            return;
        }
    };
    if img_ok {
        // Only the header: decoding every image would make `check` as slow as a run.
        match image::image_dimensions(&s.image) {
            Ok((w, h)) => {
                let (h, w) = (h as usize, w as usize);
                if (label.h, label.w) != (h, w) {
                    r.size_mismatch.push(SizeMismatch {
                        label: s.label.clone(),
                        label_hw: (label.h, label.w),
                        image_hw: (h, w),
                    });
                }
            }
            Err(e) => r.unreadable.push((
                s.image.clone(),
                DataError::decode(&s.image, "image", e).to_string(),
            )),
        }
    }
    if info.reduce_zero_label {
        label.reduce_zero_label();
    }
    let mut first_bad = None;
    for &v in &label.data {
        *r.histogram.entry(v).or_insert(0) += 1;
        if first_bad.is_none() && v != info.ignore_index && v as usize >= info.n_classes() {
            first_bad = Some(v);
        }
    }
    if let Some(id) = first_bad {
        r.out_of_range.push((s.label.clone(), id));
    }
}

const SHOW: usize = 10;

fn list<T>(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(f, "{title}: {}", items.len())?;
    for it in items.iter().take(SHOW) {
        writeln!(f, "  {}", show(it))?;
    }
    if items.len() > SHOW {
        writeln!(f, "  … and {} more", items.len() - SHOW)?;
    }
    Ok(())
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = self
            .root
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(in memory)".into());
        writeln!(f, "dataset {} at {root}", self.dataset)?;
        match self.expected {
            Some(e) if e != self.listed => {
                writeln!(f, "samples listed: {} (EXPECTED {e})", self.listed)?
            }
            Some(e) => writeln!(f, "samples listed: {} (expected {e})", self.listed)?,
            None => writeln!(f, "samples listed: {}", self.listed)?,
        }
        writeln!(
            f,
            "images found: {}, labels found: {}",
            self.images_found, self.labels_found
        )?;
        list(f, "missing files", &self.missing, |p| {
            p.display().to_string()
        })?;
        list(f, "unreadable files", &self.unreadable, |(_, e)| e.clone())?;
        list(
            f,
            "labels of another size than their image",
            &self.size_mismatch,
            |m| {
                let (l, i) = (m.label_hw, m.image_hw);
                format!(
                    "{}: label {}×{}, image {}×{} (h×w)",
                    m.label.display(),
                    l.0,
                    l.1,
                    i.0,
                    i.1
                )
            },
        )?;
        list(
            f,
            &format!(
                "labels with ids outside 0–{} (ignore {})",
                self.n_classes.saturating_sub(1),
                self.ignore_index
            ),
            &self.out_of_range,
            |(p, id)| format!("{}: id {id}", p.display()),
        )?;
        let total: u64 = self.histogram.values().sum();
        if total > 0 {
            writeln!(f, "label ids (after reduce_zero_label), pixels:")?;
            let cells: Vec<String> = self
                .histogram
                .iter()
                .map(|(id, n)| format!("{id}:{:.2}%", 100.0 * *n as f64 / total as f64))
                .collect();
            for chunk in cells.chunks(10) {
                writeln!(f, "  {}", chunk.join("  "))?;
            }
        }
        writeln!(f, "{}", if self.is_ok() { "OK" } else { "PROBLEMS FOUND" })
    }
}
