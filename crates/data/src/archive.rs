//! Extracting the validation part of official `.zip` releases for `data prepare`.
//!
//! Only the members a benchmark needs are extracted (e.g. `val2017/` of COCO's 19 GB
//! `train2017`+`val2017` label archive), each written atomically; existing files are skipped,
//! so an interrupted extraction resumes. VOC's `.tar` release is not read: `tar -xf` it first.

use std::fs::File;
use std::io::BufReader;
use std::path::{Component, Path};

use crate::error::{DataError, Result};
use crate::prepare::PrepareReport;
use crate::progress::ProgressFn;
use crate::registry::{DatasetSpec, PrepareKind};

/// One archive of a release: its file name, the member prefix to extract, and where those
/// members go under the root (prefix replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchivePart {
    pub file: &'static str,
    pub member_prefix: &'static str,
    pub dest_prefix: &'static str,
}

const COCO: &[ArchivePart] = &[
    ArchivePart {
        file: "val2017.zip",
        member_prefix: "val2017/",
        dest_prefix: "images/val2017/",
    },
    ArchivePart {
        file: "stuffthingmaps_trainval2017.zip",
        member_prefix: "val2017/",
        dest_prefix: "annotations/val2017/",
    },
];

const CITYSCAPES: &[ArchivePart] = &[
    ArchivePart {
        file: "leftImg8bit_trainvaltest.zip",
        member_prefix: "leftImg8bit/val/",
        dest_prefix: "leftImg8bit/val/",
    },
    ArchivePart {
        file: "gtFine_trainvaltest.zip",
        member_prefix: "gtFine/val/",
        dest_prefix: "gtFine/val/",
    },
];

const ADE: &[ArchivePart] = &[
    ArchivePart {
        file: "ADEChallengeData2016.zip",
        member_prefix: "ADEChallengeData2016/images/validation/",
        dest_prefix: "images/validation/",
    },
    ArchivePart {
        file: "ADEChallengeData2016.zip",
        member_prefix: "ADEChallengeData2016/annotations/validation/",
        dest_prefix: "annotations/validation/",
    },
];

/// The official archives `data prepare` can read for a dataset (empty: extract by hand).
pub fn archive_parts(spec: &DatasetSpec) -> &'static [ArchivePart] {
    match (spec.prepare, spec.name) {
        (PrepareKind::CocoStuff | PrepareKind::CocoObject, _) => COCO,
        (PrepareKind::Cityscapes, _) => CITYSCAPES,
        (_, "ade20k") => ADE,
        _ => &[],
    }
}

/// If `from` holds every archive of the release, extract their validation members into
/// `root` and return true; return false when the archives are not all there.
pub fn extract_release(
    spec: &DatasetSpec,
    from: &Path,
    root: &Path,
    progress: ProgressFn<'_>,
    report: &mut PrepareReport,
) -> Result<bool> {
    let parts = archive_parts(spec);
    if parts.is_empty() || !parts.iter().all(|p| from.join(p.file).is_file()) {
        return Ok(false);
    }
    for part in parts {
        extract_part(&from.join(part.file), part, root, progress, report)?;
    }
    Ok(true)
}

fn extract_part(
    zip_path: &Path,
    part: &ArchivePart,
    root: &Path,
    progress: ProgressFn<'_>,
    report: &mut PrepareReport,
) -> Result<()> {
    let bad = |e: zip::result::ZipError| DataError::decode(zip_path, "zip archive", e);
    let file = File::open(zip_path).map_err(|e| DataError::io(zip_path, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(bad)?;
    let n = zip.len();
    let mut found = 0usize;
    for i in 0..n {
        let mut entry = zip.by_index(i).map_err(bad)?;
        // enclosed_name refuses absolute paths and `..`, so a crafted archive cannot escape.
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Ok(rest) = name.strip_prefix(part.member_prefix.trim_end_matches('/')) else {
            continue;
        };
        if entry.is_dir()
            || rest.as_os_str().is_empty()
            || rest
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            continue;
        }
        found += 1;
        let dst = root.join(part.dest_prefix).join(rest);
        if dst.is_file() {
            report.skipped_existing += 1;
        } else {
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
            }
            let tmp = crate::io::tmp_path(&dst);
            let mut out = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| DataError::Io {
                path: zip_path.to_path_buf(),
                cause: e,
                hint: Some(format!("while extracting {}", name.display())),
            })?;
            std::fs::rename(&tmp, &dst).map_err(|e| DataError::io(&dst, e))?;
            report.extracted += 1;
        }
        progress(i + 1, n);
    }
    if found == 0 {
        report.warnings.push(format!(
            "{}: no member under `{}`",
            zip_path.display(),
            part.member_prefix
        ));
    }
    Ok(())
}
