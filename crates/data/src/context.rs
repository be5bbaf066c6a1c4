//! PASCAL Context from its official release: `trainval/<id>.mat` label maps (459 classes) →
//! MMSegmentation's `SegmentationClassContext/<id>.png` (background 0 + 59 classes).
//!
//! The official `trainval.tar.gz` (<https://cs.stanford.edu/~roozbeh/pascal-context/>) holds one
//! MATLAB v5 file per VOC2010 trainval image with a `uint16` (h, w) matrix `LabelMap` of the
//! 1-based ids of `labels.txt` (0 = unlabeled), and `labels.txt` itself. mmseg's converter
//! (`tools/dataset_converters/pascal_context.py`) instead reads `trainval_merged.json` through
//! the Detail API, whose class masks already hold only the 59 kept categories (every other
//! pixel is 0), and maps the sorted list of the 60 ids `[0, 2, 9, …, 458]` ([`CONTEXT59_IDS`])
//! to their index with `np.digitize(…, right=True)`. Here an id of the list maps to its index
//! in the sorted list (0 → 0, the others → 1–59, alphabetical, the order of
//! `classnames/context60.txt`) and every other id of the 459 to background 0 — the pixels the
//! JSON leaves at 0. mmseg's own mapping *asserts* on ids outside the list (they cannot occur
//! in its input), so the two agree wherever mmseg runs.
//!
//! The labels are read from the extracted `trainval/` or streamed from `trainval.tar.gz`
//! ([`convert_from_archive`]); only the validation images are converted (mmseg converts train
//! too; evaluation never reads them).
//!
//! The validation split: mmseg lists `Detail(json, …, 'val').getImgs()`; the `.mat` release ships
//! no split file. PASCAL Context uses VOC2010's train/val split (4998/5105 images), so the
//! split here is VOC2010's `ImageSets/Main/val.txt` ∩ the ids that have a `.mat`, in file order
//! (mmseg writes it sorted; VOC's `val.txt` is sorted too). An existing
//! `ImageSets/SegmentationContext/val.txt` beside the images is used as it is.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::io::{save_label_png, LabelMap};

/// The 459-class ids kept by the 59-class benchmark (plus 0), in the order of mmseg's
/// `pascal_context.py` `_mapping` (it sorts them before use; see [`context59_table`]).
pub const CONTEXT59_IDS: [u16; 60] = [
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162,
    420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72,
    458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
];

/// The largest id of the official `labels.txt` (459 classes, 1-based).
pub const CONTEXT_MAX_ID: u16 = 459;

/// Validation images of PASCAL Context (VOC2010 `val`).
pub const CONTEXT_VAL_SIZE: usize = 5105;

/// Official id (0–459) → Context60 label (0 background, 1–59), indexed by the official id.
///
/// Entry `id` is the index of `id` in the sorted [`CONTEXT59_IDS`] (mmseg's
/// `_key[np.digitize(id, sorted_mapping, right=True)]`), or 0 for ids outside the list.
pub fn context59_table() -> [u8; CONTEXT_MAX_ID as usize + 1] {
    let mut sorted = CONTEXT59_IDS;
    sorted.sort_unstable();
    let mut t = [0u8; CONTEXT_MAX_ID as usize + 1];
    for (k, &id) in sorted.iter().enumerate() {
        t[usize::from(id)] = k as u8;
    }
    t
}

/// Read the `LabelMap` matrix of an official PASCAL Context `.mat` file as a (h, w) map of the
/// 459-class ids (0 unlabeled).
///
/// MATLAB stores matrices column-major; the result is row-major (h, w) like every
/// [`LabelMap`]. Integer classes (and `double` holding whole numbers, as hand-made files may)
/// are accepted; ids must lie in 0–65535.
pub fn read_context_mat(path: &Path) -> Result<LabelMap> {
    let len = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, e))?
        .len();
    check_mat_size(len, path)?;
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_context_mat(&bytes, path)
}

/// The largest `.mat` file (and decompressed element) read, in bytes. The official files are
/// tens of KiB (a 500×500 `uint16` map is 0.5 MB uncompressed); anything near this limit is a
/// corrupt or crafted file, which must not make us allocate what its header claims.
pub const MAX_MAT_BYTES: u64 = 64 << 20;

/// The largest label map read from a `.mat`, in pixels (a 16384×16384 image).
pub const MAX_MAT_PIXELS: usize = 1 << 28;

const WHAT: &str = "PASCAL Context .mat (MATLAB v5)";

fn check_mat_size(len: u64, path: &Path) -> Result<()> {
    if len > MAX_MAT_BYTES {
        return Err(DataError::decode(
            path,
            WHAT,
            format!(
                "{len} bytes, more than the {} MiB a label file can need; is this a PASCAL \
                 Context label?",
                MAX_MAT_BYTES >> 20
            ),
        ));
    }
    Ok(())
}

/// Walk the top-level data elements of a MATLAB v5 file and check that each fits in the
/// file, and that each compressed one inflates to at most [`MAX_MAT_BYTES`], before `matfile`
/// (which decompresses without a limit) sees it.
fn check_mat_elements(bytes: &[u8], path: &Path) -> Result<()> {
    const HEADER: usize = 128;
    const MI_COMPRESSED: u32 = 15;
    let bad = |msg: String| DataError::decode(path, WHAT, msg);
    if bytes.len() < HEADER {
        return Err(bad(format!(
            "{} bytes, shorter than the 128-byte MATLAB v5 header (truncated?)",
            bytes.len()
        )));
    }
    let big_endian = &bytes[126..128] == b"MI";
    let word = |at: usize| -> u32 {
        let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let mut at = HEADER;
    while at + 8 <= bytes.len() {
        let (ty, size) = (word(at), word(at + 4) as usize);
        if ty & 0xFFFF_0000 != 0 {
            at += 8; // small element format: the data sits in the tag
            continue;
        }
        let data = at + 8;
        let Some(end) = data.checked_add(size).filter(|&e| e <= bytes.len()) else {
            return Err(bad(format!(
                "the element at byte {at} claims {size} bytes, but only {} remain (truncated or \
                 corrupt file)",
                bytes.len() - data
            )));
        };
        if ty == MI_COMPRESSED {
            let mut z = flate2::read::ZlibDecoder::new(&bytes[data..end]).take(MAX_MAT_BYTES + 1);
            let n = std::io::copy(&mut z, &mut std::io::sink())
                .map_err(|e| bad(format!("compressed element at byte {at}: {e}")))?;
            if n > MAX_MAT_BYTES {
                return Err(bad(format!(
                    "the compressed element at byte {at} inflates to more than {} MiB; is this a \
                     PASCAL Context label?",
                    MAX_MAT_BYTES >> 20
                )));
            }
            at = end; // compressed elements are not padded
        } else {
            at = end.next_multiple_of(8);
        }
    }
    Ok(())
}

/// [`read_context_mat`] on bytes already in memory; `path` only names the source in errors.
///
/// Sizes in the file are checked against its length and [`MAX_MAT_BYTES`] /
/// [`MAX_MAT_PIXELS`] first, so a truncated or crafted file is an error naming it, not a huge
/// allocation or a panic.
pub fn parse_context_mat(bytes: &[u8], path: &Path) -> Result<LabelMap> {
    check_mat_size(bytes.len() as u64, path)?;
    check_mat_elements(bytes, path)?;
    let mat = matfile::MatFile::parse(bytes).map_err(|e| {
        DataError::decode(
            path,
            WHAT,
            format!("{e} (MATLAB v7.3/HDF5 files are not supported; the official release is v5)"),
        )
    })?;
    let arr = mat.find_by_name("LabelMap").ok_or_else(|| {
        let names: Vec<&str> = mat.arrays().iter().map(|a| a.name()).collect();
        DataError::decode(
            path,
            WHAT,
            format!("no numeric matrix `LabelMap` (found: {names:?})"),
        )
    })?;
    let size = arr.size();
    if size.len() != 2 || size[0] == 0 || size[1] == 0 {
        return Err(DataError::decode(
            path,
            WHAT,
            format!("`LabelMap` has size {size:?}, expected a non-empty h×w matrix"),
        ));
    }
    let (h, w) = (size[0], size[1]);
    let bad = |msg: String| DataError::decode(path, WHAT, msg);
    // matfile checks the element count against the product of the dimensions in wrapping
    // i32 arithmetic and casts negative dimensions to usize: check them here.
    let n_pixels = h
        .checked_mul(w)
        .filter(|&n| n <= MAX_MAT_PIXELS)
        .ok_or_else(|| {
            bad(format!(
                "`LabelMap` has size {size:?}, more than {MAX_MAT_PIXELS} pixels (corrupt header?)"
            ))
        })?;
    let col_major: Vec<u32> = match arr.data() {
        matfile::NumericData::UInt16 { real, .. } => real.iter().map(|&v| u32::from(v)).collect(),
        matfile::NumericData::UInt8 { real, .. } => real.iter().map(|&v| u32::from(v)).collect(),
        matfile::NumericData::Int16 { real, .. } => to_ids(real.iter().map(|&v| i64::from(v)))
            .ok_or_else(|| bad("negative id in `LabelMap`".into()))?,
        matfile::NumericData::Int32 { real, .. } => to_ids(real.iter().map(|&v| i64::from(v)))
            .ok_or_else(|| bad("`LabelMap` id outside 0–65535".into()))?,
        matfile::NumericData::UInt32 { real, .. } => to_ids(real.iter().map(|&v| i64::from(v)))
            .ok_or_else(|| bad("`LabelMap` id outside 0–65535".into()))?,
        matfile::NumericData::Double { real, .. } => {
            if real.iter().any(|v| v.fract() != 0.0) {
                return Err(bad("`LabelMap` holds non-integer values".into()));
            }
            to_ids(real.iter().map(|&v| v as i64))
                .ok_or_else(|| bad("`LabelMap` id outside 0–65535".into()))?
        }
        other => {
            return Err(bad(format!(
                "`LabelMap` has an unsupported class ({:?})",
                std::mem::discriminant(other)
            )))
        }
    };
    if col_major.len() != n_pixels {
        return Err(bad(format!(
            "`LabelMap` holds {} values for {h}×{w}",
            col_major.len()
        )));
    }
    // Column-major (MATLAB) → row-major: element (y, x) is at x * h + y.
    let mut data = vec![0u32; n_pixels];
    for x in 0..w {
        for y in 0..h {
            data[y * w + x] = col_major[x * h + y];
        }
    }
    LabelMap::new(h, w, data)
}

fn to_ids(vals: impl Iterator<Item = i64>) -> Option<Vec<u32>> {
    vals.map(|v| u16::try_from(v).ok().map(u32::from)).collect()
}

/// Map a (h, w) map of official ids to Context60 labels (0 background, 1–59) in place.
///
/// Errors on an id above 459 (not a PASCAL Context class: a wrong or corrupt file).
pub fn map_to_context59(label: &mut LabelMap, path: &Path) -> Result<()> {
    let table = context59_table();
    for v in &mut label.data {
        let Some(&out) = table.get(*v as usize) else {
            return Err(DataError::IdOutOfRange {
                path: path.to_path_buf(),
                id: *v,
                n_classes: usize::from(CONTEXT_MAX_ID) + 1,
                ignore: 0,
                hint: Some(
                    "PASCAL Context's LabelMap holds ids 0–459 (labels.txt); is this the official \
                     trainval release?"
                        .into(),
                ),
            });
        };
        *v = u32::from(out);
    }
    Ok(())
}

/// Convert one official `.mat` into a Context60 label PNG (8-bit, 0–59), written atomically.
pub fn convert_context_mat(mat: &Path, png: &Path) -> Result<()> {
    let mut label = read_context_mat(mat)?;
    map_to_context59(&mut label, mat)?;
    if let Some(parent) = png.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    save_label_png(png, &label)
}

/// Where the official labels are: the extracted `trainval/` directory, or the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// A directory of `<id>.mat` files (the release's `trainval/`).
    Dir(PathBuf),
    /// The official `trainval.tar.gz`, read without extracting it.
    TarGz(PathBuf),
}

/// Where the pieces of an official PASCAL Context release were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextRelease {
    pub labels: LabelSource,
    /// The VOC2010 directory (`JPEGImages/`, `ImageSets/`), where found.
    pub voc_dir: Option<PathBuf>,
}

/// The official archive's file name.
pub const CONTEXT_ARCHIVE: &str = "trainval.tar.gz";

impl ContextRelease {
    /// Look for the release under `from`. VOC2010 is `from` itself, `from/VOC2010` or
    /// `from/VOCdevkit/VOC2010` (the first holding `JPEGImages/`). The labels are, in this
    /// order: `from/trainval/`, `<VOC2010>/trainval/`, `from` itself when it holds `.mat`
    /// files, then `from/trainval.tar.gz` or `<VOC2010>/trainval.tar.gz`. `None` when there
    /// are none (then `from` should be an already converted layout).
    pub fn find(from: &Path) -> Option<ContextRelease> {
        let voc_dir = [
            from.to_path_buf(),
            from.join("VOC2010"),
            from.join("VOCdevkit/VOC2010"),
        ]
        .into_iter()
        .find(|d| d.join("JPEGImages").is_dir());
        let mut bases = vec![from.to_path_buf()];
        if let Some(v) = &voc_dir {
            bases.push(v.clone());
        }
        let dir = bases
            .iter()
            .map(|b| b.join("trainval"))
            .chain([from.to_path_buf()])
            .find(|d| has_mat(d))
            .map(LabelSource::Dir);
        let labels = dir.or_else(|| {
            bases
                .iter()
                .map(|b| b.join(CONTEXT_ARCHIVE))
                .find(|p| p.is_file())
                .map(LabelSource::TarGz)
        })?;
        Some(ContextRelease { labels, voc_dir })
    }
}

/// Stream the `.mat` members of a `trainval.tar.gz` and convert those whose id is in `wanted`
/// into `out(id)` (skipping outputs that exist); returns the ids of every `.mat` member.
///
/// `on_done(converted)` is called after each wanted member (true: written now, false:
/// already there). One pass, nothing extracted to disk: decompressing the whole archive is
/// needed anyway to list it, and converting on the way avoids a second pass.
pub fn convert_from_archive(
    archive: &Path,
    wanted: &HashSet<String>,
    out: &dyn Fn(&str) -> PathBuf,
    on_done: &mut dyn FnMut(bool),
) -> Result<BTreeSet<String>> {
    let bad = |e: std::io::Error| DataError::Io {
        path: archive.to_path_buf(),
        cause: e,
        hint: Some("reading the official PASCAL Context trainval.tar.gz".into()),
    };
    let file = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut tar = tar::Archive::new(gz);
    let mut seen = BTreeSet::new();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.into_owned();
        if path.extension().is_none_or(|x| x != "mat") {
            continue;
        }
        let Some(id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if wanted.contains(&id) && !seen.contains(&id) {
            let dst = out(&id);
            if dst.is_file() {
                on_done(false);
            } else {
                // Errors name the member inside the archive.
                let member = archive.join(&path);
                // The size comes from the member's header: check it before trusting it, and
                // never read more than the limit whatever the header says.
                check_mat_size(entry.size(), &member)?;
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                (&mut entry)
                    .take(MAX_MAT_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(bad)?;
                let mut label = parse_context_mat(&bytes, &member)?;
                map_to_context59(&mut label, &member)?;
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
                }
                save_label_png(&dst, &label)?;
                on_done(true);
            }
        }
        seen.insert(id);
    }
    Ok(seen)
}

fn has_mat(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "mat"))
        })
        .unwrap_or(false)
}

/// The ids of the `<id>.mat` files directly in `mat_dir`.
pub fn mat_ids(mat_dir: &Path) -> Result<BTreeSet<String>> {
    let rd = std::fs::read_dir(mat_dir).map_err(|e| DataError::io(mat_dir, e))?;
    let mut ids = BTreeSet::new();
    for entry in rd {
        let p = entry.map_err(|e| DataError::io(mat_dir, e))?.path();
        if p.extension().is_some_and(|x| x == "mat") && p.is_file() {
            if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                ids.insert(stem.to_string());
            }
        }
    }
    Ok(ids)
}

/// The validation ids: `split` (one id per line) ∩ `available`, in `split`'s order, without
/// duplicates; also returns the ids of `split` that have no `.mat`.
pub fn val_ids(split: &str, available: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let mut seen = HashSet::new();
    let (mut ids, mut missing) = (Vec::new(), Vec::new());
    for id in split.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !seen.insert(id.to_string()) {
            continue;
        }
        if available.contains(id) {
            ids.push(id.to_string());
        } else {
            missing.push(id.to_string());
        }
    }
    (ids, missing)
}
