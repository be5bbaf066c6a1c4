//! `segsweep data prepare NAME --from PATH`: turn an extracted official release into the
//! MMSegmentation layout that [`Dataset::registered`](crate::Dataset::registered) reads.
//!
//! | dataset | `--from` must contain | what is written under the root |
//! |---|---|---|
//! | coco-stuff164k | `images/val2017/*.jpg`, `annotations/val2017/*.png` (stuffthingmaps) | `annotations/val2017/*_labelTrainIds.png` (0–170, 255) |
//! | coco-object | the same | `annotations/val2017/*_instanceTrainIds.png` (0 bg, 1–80) |
//! | cityscapes | `leftImg8bit/val/<city>/`, `gtFine/val/<city>/*_gtFine_labelIds.png` | `*_gtFine_labelTrainIds.png` (19 ids, 255) |
//! | context60, context59 | the official release: `trainval/<id>.mat` (or `trainval.tar.gz`, read directly) + VOC2010 (`JPEGImages/`, `ImageSets/Main/val.txt`) | `SegmentationClassContext/<id>.png` (0 bg, 1–59), `ImageSets/SegmentationContext/val.txt` ([`crate::context`]) |
//! | voc21, voc20, ade20k (and Context already converted by mmseg) | the final layout | nothing converted; the layout is verified |
//!
//! `--from` may instead be a directory holding the official `.zip` archives (`val2017.zip` +
//! `stuffthingmaps_trainval2017.zip`; `leftImg8bit_trainvaltest.zip` + `gtFine_trainvaltest.zip`;
//! `ADEChallengeData2016.zip`): their validation members are extracted into the root first.
//!
//! When the root differs from `--from`, the needed inputs (images, split files, as-is labels)
//! are hard-linked into the root, or copied where linking fails. Outputs are written atomically
//! (temporary name, then rename), so re-running skips finished files and never trusts a
//! half-written one.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dataset::{rel_id, walk, Layout};
use crate::error::{DataError, Result};
use crate::io::{load_label, save_label_png, LabelMap, IGNORE_INDEX};
use crate::progress::ProgressFn;
use crate::registry::{dataset_spec, DatasetSpec, PrepareKind};

/// What [`prepare`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrepareReport {
    pub dataset: String,
    /// Where the prepared layout is.
    pub root: PathBuf,
    /// Label files converted in this run.
    pub converted: usize,
    /// Outputs that already existed and were left alone.
    pub skipped_existing: usize,
    /// Input files linked or copied into the root.
    pub copied: usize,
    /// Files extracted from official `.zip` archives.
    pub extracted: usize,
    /// Samples in the prepared split.
    pub samples: usize,
    /// Images or labels of the prepared split that do not exist (an incomplete release).
    pub missing_files: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

impl PrepareReport {
    /// Whether the prepared layout has samples and every image and label of its split.
    pub fn is_complete(&self) -> bool {
        self.samples > 0 && self.missing_files.is_empty()
    }
}

impl std::fmt::Display for PrepareReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "dataset {} prepared at {}",
            self.dataset,
            self.root.display()
        )?;
        writeln!(
            f,
            "labels converted: {}, files extracted: {}, linked/copied: {}, already done: {}, samples: {}",
            self.converted, self.extracted, self.copied, self.skipped_existing, self.samples
        )?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Prepare dataset `name` from the release at `from` into `root` (may equal `from`).
///
/// `from` is either the extracted release (see the module table) or a directory holding the
/// official `.zip` archives ([`crate::archive::archive_parts`]), whose validation members are
/// then extracted into `root` first.
pub fn prepare(
    name: &str,
    from: &Path,
    root: &Path,
    progress: ProgressFn<'_>,
) -> Result<PrepareReport> {
    let spec = dataset_spec(name)?;
    if !from.is_dir() {
        return Err(DataError::Missing {
            dataset: spec.name.into(),
            what: if from.exists() {
                "--from directory (this is a file)".into()
            } else {
                "--from directory".into()
            },
            path: from.to_path_buf(),
            hint: Some(
                "--from is the directory the official archives were downloaded or extracted into (see the README's dataset table)".into(),
            ),
        });
    }
    let mut report = PrepareReport {
        dataset: spec.name.into(),
        root: root.to_path_buf(),
        ..PrepareReport::default()
    };
    // From archives: extract into the root, then prepare the root in place.
    let from = if crate::archive::extract_release(spec, from, root, progress, &mut report)? {
        root
    } else {
        from
    };
    match spec.prepare {
        PrepareKind::AsIs if spec.label_dir == CONTEXT_LABEL_DIR => {
            match crate::context::ContextRelease::find(from) {
                Some(release) => prepare_context(spec, &release, root, progress, &mut report)?,
                None => prepare_as_is(spec, from, root, progress, &mut report)?,
            }
        }
        PrepareKind::AsIs => prepare_as_is(spec, from, root, progress, &mut report)?,
        PrepareKind::CocoStuff | PrepareKind::CocoObject => {
            let table = if spec.prepare == PrepareKind::CocoStuff {
                coco_stuff_table()
            } else {
                coco_object_table()
            };
            convert_tree(
                spec,
                from,
                root,
                &ConvertPlan::coco(spec),
                &table,
                progress,
                &mut report,
            )?
        }
        PrepareKind::Cityscapes => convert_tree(
            spec,
            from,
            root,
            &ConvertPlan::cityscapes(),
            &cityscapes_table(),
            progress,
            &mut report,
        )?,
    }
    let ds = crate::Dataset::registered(spec.name, root)?;
    report.samples = ds.len();
    report.missing_files = ds.missing_files();
    report.warnings.extend(ds.warnings.iter().cloned());
    Ok(report)
}

/// The 0-based COCO-Stuff ids (0–181) of the 11 thing ids that COCO defines but never uses.
const COCO_UNUSED: [u32; 11] = [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90];

/// stuffthingmaps id → COCO-Stuff-171 train id (mmseg `coco_stuff164k.py`): the used ids keep
/// their order, the 11 unused ones are removed, 255 stays 255.
// Deviation: mmseg leaves the 11 unused ids unchanged (they never occur in the released maps);
// we map them to 255 so a stray one can never land on another class.
pub fn coco_stuff_table() -> [u8; 256] {
    let mut t = [IGNORE_INDEX as u8; 256];
    let mut next = 0u8;
    for id in 0..=181u32 {
        if !COCO_UNUSED.contains(&id) {
            t[id as usize] = next;
            next += 1;
        }
    }
    t
}

/// stuffthingmaps id → COCO-Object id (SCLIP/GroupViT `cvt_coco_object.py`): things → their
/// train id + 1 (1–80), stuff (91–181) → 0, and unlabeled 255 → 0 too (the script adds 1,
/// giving 256, which its `k > 90` rule resets to background).
pub fn coco_object_table() -> [u8; 256] {
    let stuff = coco_stuff_table();
    let mut t = [0u8; 256];
    for (id, out) in t.iter_mut().enumerate() {
        *out = match id {
            0..=90 if stuff[id] != IGNORE_INDEX as u8 => stuff[id] + 1,
            0..=90 => IGNORE_INDEX as u8, // unused thing ids: see coco_stuff_table
            _ => 0,
        };
    }
    t
}

/// Cityscapes label id (0–33) → train id (0–18), everything else 255 (cityscapesscripts
/// `labels.py`, the table mmseg's `cityscapes.py` converter uses).
pub fn cityscapes_table() -> [u8; 256] {
    const PAIRS: [(usize, u8); 19] = [
        (7, 0),
        (8, 1),
        (11, 2),
        (12, 3),
        (13, 4),
        (17, 5),
        (19, 6),
        (20, 7),
        (21, 8),
        (22, 9),
        (23, 10),
        (24, 11),
        (25, 12),
        (26, 13),
        (27, 14),
        (28, 15),
        (31, 16),
        (32, 17),
        (33, 18),
    ];
    let mut t = [IGNORE_INDEX as u8; 256];
    for (id, train) in PAIRS {
        t[id] = train;
    }
    t
}

/// Where a converter finds its inputs, relative to `--from` and the root.
struct ConvertPlan {
    /// Directory of raw label files (same relative path in `from` and the output root).
    label_dir: &'static str,
    /// Raw label suffix, and files to leave out (earlier outputs living beside the inputs).
    raw_suffix: &'static str,
    raw_exclude: &'static [&'static str],
}

impl ConvertPlan {
    fn coco(spec: &DatasetSpec) -> ConvertPlan {
        ConvertPlan {
            label_dir: spec.label_dir,
            raw_suffix: ".png",
            raw_exclude: &["TrainIds"],
        }
    }

    fn cityscapes() -> ConvertPlan {
        ConvertPlan {
            label_dir: "gtFine/val",
            raw_suffix: "_gtFine_labelIds.png",
            raw_exclude: &[],
        }
    }
}

fn convert_tree(
    spec: &DatasetSpec,
    from: &Path,
    root: &Path,
    plan: &ConvertPlan,
    table: &[u8; 256],
    progress: ProgressFn<'_>,
    report: &mut PrepareReport,
) -> Result<()> {
    let raw_dir = from.join(plan.label_dir);
    let img_dir = from.join(spec.img_dir);
    for (what, dir) in [
        ("raw label directory", &raw_dir),
        ("image directory", &img_dir),
    ] {
        if !dir.is_dir() {
            return Err(DataError::Missing {
                dataset: spec.name.into(),
                what: what.into(),
                path: dir.clone(),
                hint: Some(format!(
                    "--from must hold `{}` and `{}`",
                    spec.img_dir, plan.label_dir
                )),
            });
        }
    }
    if from != root {
        link_tree(
            &img_dir,
            &root.join(spec.img_dir),
            spec.img_suffix,
            progress,
            report,
        )?;
    }
    let mut raws = Vec::new();
    walk(&raw_dir, &mut raws)?;
    let mut ids: Vec<String> = raws
        .iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !plan.raw_exclude.iter().any(|x| name.contains(x))
        })
        .filter_map(|p| rel_id(&raw_dir, p, plan.raw_suffix))
        .collect();
    ids.sort();
    if ids.is_empty() {
        report.warnings.push(format!(
            "no `*{}` label files under {}",
            plan.raw_suffix,
            raw_dir.display()
        ));
    }
    let out_dir = root.join(spec.label_dir);
    for (k, id) in ids.iter().enumerate() {
        let src = raw_dir.join(format!("{id}{}", plan.raw_suffix));
        let dst = out_dir.join(format!("{id}{}", spec.label_suffix));
        if dst.is_file() {
            report.skipped_existing += 1;
        } else {
            let mut label = load_label(&src)?;
            map_raw_ids(&mut label, table, &src)?;
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
            }
            save_label_png(&dst, &label)?;
            report.converted += 1;
        }
        progress(k + 1, ids.len());
    }
    Ok(())
}

/// Map the raw ids of an official label through `table`. The official COCO-Stuff and
/// Cityscapes labels are 8-bit; an id above 255 (a 16-bit PNG) is not one of theirs, so it is an
/// error naming the file, never clamped into the table.
fn map_raw_ids(label: &mut LabelMap, table: &[u8; 256], src: &Path) -> Result<()> {
    for v in &mut label.data {
        let Some(&out) = table.get(*v as usize) else {
            return Err(DataError::IdOutOfRange {
                path: src.to_path_buf(),
                id: *v,
                n_classes: table.len(),
                ignore: IGNORE_INDEX,
                hint: Some(
                    "the official release's labels are 8-bit (raw ids 0–255); is this file from \
                     it?"
                    .into(),
                ),
            });
        };
        *v = u32::from(out);
    }
    Ok(())
}

/// VOC, Context and ADE20K are used as released: find the layout, link it into the root.
fn prepare_as_is(
    spec: &DatasetSpec,
    from: &Path,
    root: &Path,
    progress: ProgressFn<'_>,
    report: &mut PrepareReport,
) -> Result<()> {
    // Accept the layout's own directory or a parent of it (e.g. `VOCdevkit` or `data`).
    let tail = Path::new(spec.default_root);
    let candidates = [
        from.to_path_buf(),
        from.join(tail),
        from.join(tail.file_name().unwrap_or_default()),
    ];
    let found = candidates
        .iter()
        .find(|c| c.join(spec.img_dir).is_dir() && c.join(spec.label_dir).is_dir());
    let Some(src) = found else {
        let hint = if spec.label_dir == CONTEXT_LABEL_DIR {
            "PASCAL Context needs the official release (trainval/<id>.mat from trainval.tar.gz \
             next to VOC2010's JPEGImages/ and ImageSets/) or mmseg's converted \
             SegmentationClassContext/ PNGs with ImageSets/SegmentationContext/val.txt"
                .to_string()
        } else {
            format!(
                "expected `{}` and `{}` under it",
                spec.img_dir, spec.label_dir
            )
        };
        return Err(DataError::Missing {
            dataset: spec.name.into(),
            what: format!("{} layout", spec.name),
            path: from.to_path_buf(),
            hint: Some(hint),
        });
    };
    if src.as_path() == root {
        return Ok(());
    }
    let layout = Layout::of_spec(spec, src);
    let listing = layout.list(spec.name)?;
    if let Some(split) = spec.split_file {
        link_file(&src.join(split), &root.join(split), report)?;
    }
    let n = listing.samples.len();
    for (k, s) in listing.samples.iter().enumerate() {
        for (p, dir) in [(&s.image, spec.img_dir), (&s.label, spec.label_dir)] {
            if p.is_file() {
                let rel = p.strip_prefix(src.join(dir)).unwrap_or(p);
                link_file(p, &root.join(dir).join(rel), report)?;
            }
        }
        progress(k + 1, n);
    }
    Ok(())
}

/// The label directory of both Context datasets (they share one converted layout).
const CONTEXT_LABEL_DIR: &str = "SegmentationClassContext";

/// PASCAL Context from the official `.mat` release (see [`crate::context`]): choose the val
/// ids, convert each `.mat` to a label PNG (from `trainval/` or straight from
/// `trainval.tar.gz`), write the split file, link the val images.
fn prepare_context(
    spec: &DatasetSpec,
    release: &crate::context::ContextRelease,
    root: &Path,
    progress: ProgressFn<'_>,
    report: &mut PrepareReport,
) -> Result<()> {
    use crate::context::{
        convert_context_mat, convert_from_archive, mat_ids, val_ids, LabelSource, CONTEXT_VAL_SIZE,
    };
    let (LabelSource::Dir(labels_at) | LabelSource::TarGz(labels_at)) = &release.labels;
    let Some(voc) = release.voc_dir.as_deref() else {
        return Err(DataError::Missing {
            dataset: spec.name.into(),
            what: "VOC2010 images (JPEGImages/)".into(),
            path: labels_at.clone(),
            hint: Some(
                "PASCAL Context's labels need VOC2010's images and split: extract \
                 VOCtrainval_03-May-2010.tar and pass its VOCdevkit/VOC2010 (or a parent) as --from"
                    .into(),
            ),
        });
    };
    let split_rel = spec
        .split_file
        .unwrap_or("ImageSets/SegmentationContext/val.txt");
    // An mmseg-made split (beside the images or already in the root) wins; otherwise VOC2010's
    // val split, which is PASCAL Context's (5105 images).
    let candidates = [
        voc.join(split_rel),
        root.join(split_rel),
        voc.join("ImageSets/Main/val.txt"),
    ];
    let Some(split_src) = candidates.iter().find(|p| p.is_file()) else {
        return Err(DataError::Missing {
            dataset: spec.name.into(),
            what: "validation split".into(),
            path: voc.join("ImageSets/Main/val.txt"),
            hint: Some("the VOC2010 release has ImageSets/Main/val.txt".into()),
        });
    };
    let text = std::fs::read_to_string(split_src).map_err(|e| DataError::io(split_src, e))?;
    let label_path = |id: &str| {
        root.join(spec.label_dir)
            .join(format!("{id}{}", spec.label_suffix))
    };
    let ids = match &release.labels {
        LabelSource::Dir(mat_dir) => {
            let (ids, missing) = val_ids(&text, &mat_ids(mat_dir)?);
            warn_missing(report, &missing, ids.len(), split_src, mat_dir);
            for (k, id) in ids.iter().enumerate() {
                let dst = label_path(id);
                if dst.is_file() {
                    report.skipped_existing += 1;
                } else {
                    convert_context_mat(&mat_dir.join(format!("{id}.mat")), &dst)?;
                    report.converted += 1;
                }
                progress(k + 1, ids.len());
            }
            ids
        }
        LabelSource::TarGz(archive) => {
            // Every split id (against an empty set, all of them come back as "missing").
            let (_, wanted) = val_ids(&text, &Default::default());
            let want_set = wanted.iter().cloned().collect();
            let (mut done, n) = (0usize, wanted.len());
            let seen = convert_from_archive(archive, &want_set, &label_path, &mut |converted| {
                if converted {
                    report.converted += 1;
                } else {
                    report.skipped_existing += 1;
                }
                done += 1;
                progress(done, n);
            })?;
            let (ids, missing) = val_ids(&text, &seen);
            warn_missing(report, &missing, ids.len(), split_src, archive);
            ids
        }
    };
    if ids.len() != CONTEXT_VAL_SIZE {
        report.warnings.push(format!(
            "the validation split has {} images with labels, PASCAL Context's has \
             {CONTEXT_VAL_SIZE} (split from {})",
            ids.len(),
            split_src.display()
        ));
    }
    let split_dst = root.join(split_rel);
    if split_dst.is_file() {
        report.skipped_existing += 1;
    } else {
        if let Some(parent) = split_dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        }
        let tmp = crate::io::tmp_path(&split_dst);
        let body: String = ids.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(&tmp, body).map_err(|e| DataError::io(&tmp, e))?;
        std::fs::rename(&tmp, &split_dst).map_err(|e| DataError::io(&split_dst, e))?;
    }
    if voc != root {
        for id in &ids {
            let name = format!("{id}{}", spec.img_suffix);
            let img = voc.join(spec.img_dir).join(&name);
            // A missing image is reported by the layout check after preparing.
            if img.is_file() {
                link_file(&img, &root.join(spec.img_dir).join(&name), report)?;
            }
        }
    }
    Ok(())
}

fn warn_missing(
    report: &mut PrepareReport,
    missing: &[String],
    found: usize,
    split: &Path,
    labels: &Path,
) {
    if !missing.is_empty() {
        report.warnings.push(format!(
            "{} of the {} ids in {} have no .mat in {} (left out), e.g. {}",
            missing.len(),
            missing.len() + found,
            split.display(),
            labels.display(),
            missing
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

/// Link every `*suffix` file under `src` to the same relative path under `dst`.
fn link_tree(
    src: &Path,
    dst: &Path,
    suffix: &str,
    progress: ProgressFn<'_>,
    report: &mut PrepareReport,
) -> Result<()> {
    let mut files = Vec::new();
    walk(src, &mut files)?;
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| rel_id(src, f, suffix).is_some())
        .collect();
    for (k, f) in files.iter().enumerate() {
        let rel = f.strip_prefix(src).unwrap_or(f);
        link_file(f, &dst.join(rel), report)?;
        progress(k + 1, files.len());
    }
    Ok(())
}

/// Hard-link `src` to `dst` (copy across file systems); an existing `dst` is left alone.
fn link_file(src: &Path, dst: &Path, report: &mut PrepareReport) -> Result<()> {
    if dst.is_file() {
        report.skipped_existing += 1;
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    if std::fs::hard_link(src, dst).is_err() {
        let tmp = crate::io::tmp_path(dst);
        std::fs::copy(src, &tmp).map_err(|e| DataError::io(src, e))?;
        std::fs::rename(&tmp, dst).map_err(|e| DataError::io(dst, e))?;
    }
    report.copied += 1;
    Ok(())
}
