//! PASCAL Context from its official `.mat` release: the 459 → 59 mapping, the MAT v5 reader
//! (uncompressed files written here, compressed ones written by scipy), and `data prepare`
//! on a tiny synthetic release.

mod common;

use std::path::{Path, PathBuf};

use common::write_image;
use segsweep_data::context::{
    context59_table, convert_from_archive, map_to_context59, parse_context_mat, read_context_mat,
    ContextRelease, LabelSource, CONTEXT59_IDS, MAX_MAT_BYTES,
};
use segsweep_data::{load_label, no_progress, prepare, DataError, Dataset, LabelMap};

const CONTEXT60_TXT: &str = include_str!("../classnames/context60.txt");

/// `labels.txt` names of the kept ids (the official 459-class list).
const KEPT_NAMES: [(u16, &str); 59] = [
    (2, "aeroplane"),
    (9, "bag"),
    (18, "bed"),
    (19, "bedclothes"),
    (22, "bench"),
    (23, "bicycle"),
    (25, "bird"),
    (31, "boat"),
    (33, "book"),
    (34, "bottle"),
    (44, "building"),
    (45, "bus"),
    (46, "cabinet"),
    (59, "car"),
    (65, "cat"),
    (68, "ceiling"),
    (72, "chair"),
    (80, "cloth"),
    (85, "computer"),
    (98, "cow"),
    (104, "cup"),
    (105, "curtain"),
    (113, "dog"),
    (115, "door"),
    (144, "fence"),
    (158, "floor"),
    (159, "flower"),
    (162, "food"),
    (187, "grass"),
    (189, "ground"),
    (207, "horse"),
    (220, "keyboard"),
    (232, "light"),
    (258, "motorbike"),
    (259, "mountain"),
    (260, "mouse"),
    (284, "person"),
    (295, "plate"),
    (296, "platform"),
    (308, "pottedplant"),
    (324, "road"),
    (326, "rock"),
    (347, "sheep"),
    (349, "shelves"),
    (354, "sidewalk"),
    (355, "sign"),
    (360, "sky"),
    (366, "snow"),
    (368, "sofa"),
    (397, "table"),
    (415, "track"),
    (416, "train"),
    (420, "tree"),
    (424, "truck"),
    (427, "tvmonitor"),
    (440, "wall"),
    (445, "water"),
    (454, "window"),
    (458, "wood"),
];

/// Ids of the scipy fixture (see tests/reference/context_mat_fixture.py), in and out of the
/// 59-subset, and their Context60 labels worked out by hand from `classnames/context60.txt`:
/// 2 aeroplane → 1, 284 person → 37, 458 wood → 59, 115 door → 24, 22 bench → 5, others → 0.
const IDS: [u32; 10] = [0, 2, 284, 1, 458, 115, 3, 300, 459, 22];
const LABELS: [u32; 10] = [0, 1, 37, 0, 59, 24, 0, 0, 0, 5];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/context/{name}"))
}

/// Value (y, x) = ids[(y * w + x) % len], row-major (the fixture script's rule).
fn cycling(h: usize, w: usize, ids: &[u32]) -> LabelMap {
    LabelMap::new(h, w, (0..h * w).map(|i| ids[i % ids.len()]).collect()).unwrap()
}

/// A minimal uncompressed MATLAB v5 file with one `uint16` matrix `name` (column-major data).
fn write_mat_v5(path: &Path, name: &str, label: &LabelMap) {
    write_mat_v5_as(path, name, label, false)
}

/// [`write_mat_v5`]; with `as_u8`, the `uint16` matrix's data is stored as `miUINT8`, as
/// MATLAB does when every value fits in a byte.
fn write_mat_v5_as(path: &Path, name: &str, label: &LabelMap, as_u8: bool) {
    fn tag(out: &mut Vec<u8>, ty: u32, n: usize) {
        out.extend(ty.to_le_bytes());
        out.extend((n as u32).to_le_bytes());
    }
    fn pad8(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }
    let mut body = Vec::new();
    tag(&mut body, 6, 8); // miUINT32 array flags
    body.extend(11u32.to_le_bytes()); // mxUINT16_CLASS, no flags
    body.extend(0u32.to_le_bytes());
    tag(&mut body, 5, 8); // miINT32 dimensions
    body.extend((label.h as i32).to_le_bytes());
    body.extend((label.w as i32).to_le_bytes());
    tag(&mut body, 1, name.len()); // miINT8 name
    body.extend(name.as_bytes());
    pad8(&mut body);
    if as_u8 {
        tag(&mut body, 2, label.h * label.w); // miUINT8 real part
    } else {
        tag(&mut body, 4, 2 * label.h * label.w); // miUINT16 real part
    }
    for x in 0..label.w {
        for y in 0..label.h {
            let v = label.data[y * label.w + x] as u16;
            if as_u8 {
                body.push(v as u8);
            } else {
                body.extend(v.to_le_bytes());
            }
        }
    }
    pad8(&mut body);

    let mut out = Vec::new();
    let mut text = b"MATLAB 5.0 MAT-file, written by the segsweep-data tests".to_vec();
    text.resize(116, b' ');
    out.extend(text);
    out.extend([0u8; 8]); // no subsystem data
    out.extend(0x0100u16.to_le_bytes()); // version
    out.extend(b"IM"); // little-endian
    tag(&mut out, 14, body.len()); // miMATRIX
    out.extend(body);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, out).unwrap();
}

fn mapped(label: &LabelMap) -> Vec<u32> {
    label
        .data
        .iter()
        .map(|&v| LABELS[IDS.iter().position(|&i| i == v).unwrap()])
        .collect()
}

#[test]
fn kept_ids_sort_into_the_context60_class_order() {
    let mut sorted = CONTEXT59_IDS;
    sorted.sort_unstable();
    let kept: Vec<u16> = KEPT_NAMES.iter().map(|p| p.0).collect();
    assert_eq!(&sorted[1..], &kept[..], "the 59 ids of mmseg's _mapping");
    assert_eq!(sorted[0], 0);
    let classes: Vec<&str> = CONTEXT60_TXT.lines().map(str::trim).collect();
    assert_eq!(classes.len(), 60);
    assert_eq!(classes[0], "background");
    let table = context59_table();
    for (id, name) in KEPT_NAMES {
        let k = usize::from(table[usize::from(id)]);
        assert_eq!(classes[k], name, "official id {id}");
    }
    // Everything else of the 459 classes is background.
    let kept_count = (0..=459usize).filter(|&i| table[i] != 0).count();
    assert_eq!(kept_count, 59);
    for (id, label) in IDS.iter().zip(LABELS) {
        assert_eq!(u32::from(table[*id as usize]), label, "id {id}");
    }
}

#[test]
fn reads_uncompressed_mat_written_here() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.mat");
    let label = cycling(3, 5, &[0, 1, 300, 459, 7, 65535, 2]);
    write_mat_v5(&p, "LabelMap", &label);
    assert_eq!(read_context_mat(&p).unwrap(), label);

    let small = cycling(4, 3, &[0, 2, 255, 9, 1]);
    write_mat_v5_as(&p, "LabelMap", &small, true);
    assert_eq!(
        read_context_mat(&p).unwrap(),
        small,
        "uint16 stored as miUINT8"
    );

    write_mat_v5(&p, "Other", &label);
    let err = read_context_mat(&p).unwrap_err();
    assert!(err.to_string().contains("LabelMap"), "{err}");
    let err = parse_context_mat(b"not a mat file", &p).unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }), "{err}");
}

#[test]
fn reads_scipy_compressed_fixtures() {
    let l = read_context_mat(&fixture("2008_000002.mat")).unwrap();
    assert_eq!(l, cycling(5, 7, &IDS));
    let l = read_context_mat(&fixture("big_ids.mat")).unwrap();
    let ids = [0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 458];
    assert_eq!(l, cycling(3, 4, &ids));
    let mut l = l;
    map_to_context59(&mut l, Path::new("big_ids.mat")).unwrap();
    // The first eleven kept ids are classes 0–10 (background … bottle); wood is 59.
    assert_eq!(l.data, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 59]);
}

#[test]
fn ids_above_459_are_an_error() {
    let mut l = cycling(2, 3, &[0, 2, 460]);
    let err = map_to_context59(&mut l, Path::new("bad.mat")).unwrap_err();
    assert!(
        matches!(err, DataError::IdOutOfRange { id: 460, .. }),
        "{err}"
    );
}

/// The 128-byte MATLAB v5 header (little-endian) followed by `elements`.
fn mat_with(elements: &[u8]) -> Vec<u8> {
    let mut text = b"MATLAB 5.0 MAT-file, crafted by the segsweep-data tests".to_vec();
    text.resize(116, b' ');
    let mut out = text;
    out.extend([0u8; 8]);
    out.extend(0x0100u16.to_le_bytes());
    out.extend(b"IM");
    out.extend(elements);
    out
}

/// Quality review C24: the sizes in a `.mat` header were trusted. Dimensions whose product
/// overflows, a truncated file and a compressed element that inflates beyond any label are
/// errors naming the file, not a panic or a huge allocation.
#[test]
fn quality_c24_crafted_or_truncated_mat_headers_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // Dimensions (-1, -1): matfile's wrapping i32 product is 1, so one value "fits".
    let good = dir.path().join("good.mat");
    write_mat_v5(&good, "LabelMap", &cycling(2, 3, &[0, 2, 9]));
    let mut bytes = std::fs::read(&good).unwrap();
    let dims_at = bytes
        .windows(8)
        .position(|w| w == [2, 0, 0, 0, 3, 0, 0, 0])
        .unwrap();
    bytes[dims_at..dims_at + 8].copy_from_slice(&[0xFF; 8]);
    // ... and keep a single uint16 value (the data element's tag says 12 bytes).
    let data_tag = bytes
        .windows(8)
        .rposition(|w| w == [4, 0, 0, 0, 12, 0, 0, 0])
        .unwrap();
    bytes[data_tag + 4] = 2;
    let e = parse_context_mat(&bytes, Path::new("neg_dims.mat"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("neg_dims.mat") && e.contains("pixels"), "{e}");

    // Truncated: the matrix element claims more bytes than the file has.
    let whole = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.mat");
    std::fs::write(&cut, &whole[..whole.len() - 20]).unwrap();
    let e = read_context_mat(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.mat") && e.contains("truncated"), "{e}");
    let e = parse_context_mat(&whole[..100], Path::new("short.mat"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("short.mat") && e.contains("128-byte"), "{e}");

    // A compressed element of zeros inflating past the limit (a zip bomb).
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..=(MAX_MAT_BYTES >> 20) {
        std::io::Write::write_all(&mut z, &zeros).unwrap();
    }
    let packed = z.finish().unwrap();
    let mut el = 15u32.to_le_bytes().to_vec();
    el.extend((packed.len() as u32).to_le_bytes());
    el.extend(&packed);
    let e = parse_context_mat(&mat_with(&el), Path::new("bomb.mat"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bomb.mat") && e.contains("inflates"), "{e}");
}

/// Quality review C24: a tar member's size comes from its header; a crafted one must not
/// size an allocation.
#[test]
fn quality_c24_tar_member_with_a_huge_header_size_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("trainval.tar.gz");
    let file = std::fs::File::create(&archive).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(1 << 50);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "trainval/x.mat", &[0u8; 600][..])
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let wanted = ["x".to_string()].into_iter().collect();
    let out_dir = dir.path().to_path_buf();
    let e = convert_from_archive(
        &archive,
        &wanted,
        &|id| out_dir.join(format!("{id}.png")),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("trainval.tar.gz/trainval/x.mat") && e.contains("MiB"),
        "{e}"
    );
}

/// `from/VOCdevkit/VOC2010/{JPEGImages, ImageSets/Main/val.txt}` + `from/trainval/*.mat`.
/// Val: a (uncompressed .mat, 4×6), b (scipy fixture, 5×7), c (image, no .mat); train: e.
fn context_release(from: &Path) -> PathBuf {
    let voc = from.join("VOCdevkit/VOC2010");
    for (k, (id, h, w)) in [("a", 4, 6), ("b", 5, 7), ("c", 3, 3), ("e", 2, 2)]
        .iter()
        .enumerate()
    {
        write_image(&voc.join(format!("JPEGImages/{id}.jpg")), *h, *w, k as u8);
    }
    std::fs::create_dir_all(voc.join("ImageSets/Main")).unwrap();
    std::fs::write(voc.join("ImageSets/Main/val.txt"), "a\nb\nc\n").unwrap();
    std::fs::write(voc.join("ImageSets/Main/train.txt"), "e\n").unwrap();
    let mats = from.join("trainval");
    write_mat_v5(&mats.join("a.mat"), "LabelMap", &cycling(4, 6, &IDS[3..]));
    std::fs::copy(fixture("2008_000002.mat"), mats.join("b.mat")).unwrap();
    write_mat_v5(&mats.join("e.mat"), "LabelMap", &cycling(2, 2, &[2]));
    voc
}

/// PNG IHDR bit depth and colour type.
fn png_depth_and_colour(p: &Path) -> (u8, u8) {
    let bytes = std::fs::read(p).unwrap();
    (bytes[24], bytes[25])
}

#[test]
fn prepare_converts_the_official_release_and_rerun_skips() {
    let from = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    context_release(from.path());
    let found = ContextRelease::find(from.path()).unwrap();
    assert_eq!(found.labels, LabelSource::Dir(from.path().join("trainval")));

    let r = prepare("context60", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((r.converted, r.samples), (2, 2), "{r}");
    assert_eq!(r.copied, 2, "the two val images with labels are linked");
    assert!(
        r.warnings.iter().any(|w| w.contains("1 of the 3 ids")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("5105")),
        "{:?}",
        r.warnings
    );
    let split =
        std::fs::read_to_string(root.path().join("ImageSets/SegmentationContext/val.txt")).unwrap();
    assert_eq!(split, "a\nb\n");
    assert!(!root.path().join("SegmentationClassContext/e.png").exists());

    for (id, h, w, ids) in [("a", 4, 6, &IDS[3..]), ("b", 5, 7, &IDS[..])] {
        let png = root
            .path()
            .join(format!("SegmentationClassContext/{id}.png"));
        assert_eq!(png_depth_and_colour(&png), (8, 0), "8-bit greyscale");
        let got = load_label(&png).unwrap();
        let src = cycling(h, w, ids);
        assert_eq!((got.h, got.w), (h, w));
        assert_eq!(got.data, mapped(&src), "{id}");
    }

    // Context59 reads the same files with reduce_zero_label: 0 → 255, k → k - 1.
    let ds = Dataset::registered("context59", root.path()).unwrap();
    let s = ds.load(1).unwrap();
    let want: Vec<u32> = mapped(&cycling(5, 7, &IDS))
        .into_iter()
        .map(|v| if v == 0 { 255 } else { v - 1 })
        .collect();
    assert_eq!(s.label.data, want);
    assert_eq!((s.image.h, s.image.w), (5, 7));

    let again = prepare("context59", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((again.converted, again.copied), (0, 0));
    assert_eq!(again.skipped_existing, 5, "split + 2 images + 2 labels");
}

#[test]
fn prepare_in_place_under_voc2010_and_as_is_fallback() {
    let from = tempfile::tempdir().unwrap();
    let voc = context_release(from.path());
    // trainval/ inside VOC2010, converting in place.
    std::fs::rename(from.path().join("trainval"), voc.join("trainval")).unwrap();
    let r = prepare("context60", &voc, &voc, &no_progress).unwrap();
    assert_eq!((r.converted, r.copied, r.samples), (2, 0, 2), "{r}");
    let l = load_label(voc.join("SegmentationClassContext/a.png")).unwrap();
    assert_eq!(l.data, mapped(&cycling(4, 6, &IDS[3..])));

    // Without .mat files the converted layout is verified as before; a bare folder errors
    // with a hint naming the official release.
    let other = tempfile::tempdir().unwrap();
    std::fs::rename(voc.join("trainval"), other.path().join("moved")).unwrap();
    let r = prepare("context60", &voc, &voc, &no_progress).unwrap();
    assert_eq!((r.converted, r.samples), (0, 2));
    let err = prepare("context60", other.path(), &voc, &no_progress).unwrap_err();
    assert!(err.to_string().contains("trainval"), "{err}");
}

/// Pack `from/trainval/*.mat` (+ a labels.txt) into `from/trainval.tar.gz` as the official
/// archive lays them out, then remove the directory.
fn pack_release(from: &Path) {
    let file = std::fs::File::create(from.join("trainval.tar.gz")).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("trainval", from.join("trainval"))
        .unwrap();
    let labels = b"1: accordion\n2: aeroplane\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(labels.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "labels.txt", &labels[..])
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    std::fs::remove_dir_all(from.join("trainval")).unwrap();
}

#[test]
fn prepare_reads_the_tar_gz_directly() {
    let from = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    context_release(from.path());
    pack_release(from.path());
    let found = ContextRelease::find(from.path()).unwrap();
    assert_eq!(
        found.labels,
        LabelSource::TarGz(from.path().join("trainval.tar.gz"))
    );
    let r = prepare("context60", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((r.converted, r.copied, r.samples), (2, 2, 2), "{r}");
    assert!(
        r.warnings.iter().any(|w| w.contains("1 of the 3 ids")),
        "{:?}",
        r.warnings
    );
    let split =
        std::fs::read_to_string(root.path().join("ImageSets/SegmentationContext/val.txt")).unwrap();
    assert_eq!(split, "a\nb\n");
    for (id, h, w, ids) in [("a", 4, 6, &IDS[3..]), ("b", 5, 7, &IDS[..])] {
        let got = load_label(
            root.path()
                .join(format!("SegmentationClassContext/{id}.png")),
        )
        .unwrap();
        assert_eq!((got.h, got.w), (h, w));
        assert_eq!(got.data, mapped(&cycling(h, w, ids)), "{id}");
    }
    assert!(!root.path().join("SegmentationClassContext/e.png").exists());
    let again = prepare("context60", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((again.converted, again.skipped_existing), (0, 5), "{again}");
}
