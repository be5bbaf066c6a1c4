//! `data prepare` on tiny synthetic releases of the same structure as the official ones.

mod common;

use std::path::Path;

use common::*;
use segsweep_data::prepare::{cityscapes_table, coco_object_table, coco_stuff_table};
use segsweep_data::{load_label, no_progress, prepare, Dataset, LabelMap};

/// Raw stuffthingmap ids and what COCO-Stuff-171 and COCO-Object make of them.
/// 0 person, 12 (after unused 11) → 11, 89 → 79, 91 (first stuff) → 80, 181 → 170, 255 unlabeled.
const RAW: [u32; 6] = [0, 12, 89, 91, 181, 255];
const STUFF: [u32; 6] = [0, 11, 79, 80, 170, 255];
const OBJECT: [u32; 6] = [1, 12, 80, 0, 0, 0];

/// `from/images/val2017/*.jpg` + `from/annotations/val2017/*.png` (stuffthingmaps_trainval2017
/// extracted into annotations/, as mmseg's instructions say).
fn coco_release(from: &Path) {
    for (k, name) in ["000000000139", "000000000285"].iter().enumerate() {
        write_image(
            &from.join(format!("images/val2017/{name}.jpg")),
            7,
            12,
            k as u8,
        );
        write_label(
            &from.join(format!("annotations/val2017/{name}.png")),
            &label_cycling(7, 12, &RAW),
        );
    }
}

#[test]
fn coco_stuff_and_object_convert_and_rerun_skips() {
    let from = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    coco_release(from.path());
    let r = prepare("coco-stuff164k", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((r.converted, r.samples), (2, 2));
    assert_eq!(r.copied, 2, "images linked into the new root");
    let l = load_label(
        root.path()
            .join("annotations/val2017/000000000139_labelTrainIds.png"),
    )
    .unwrap();
    assert_eq!(&l.data[..6], &STUFF);
    let ds = Dataset::registered("coco-stuff164k", root.path()).unwrap();
    assert_eq!(&ds.load(0).unwrap().label.data[..6], &STUFF);

    let again = prepare("coco-stuff164k", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((again.converted, again.copied), (0, 0));
    assert_eq!(again.skipped_existing, 4);

    // In place (root == from): earlier *_labelTrainIds outputs are not taken for raw maps.
    let r = prepare("coco-object", from.path(), from.path(), &no_progress).unwrap();
    assert_eq!((r.converted, r.copied), (2, 0));
    let ds = Dataset::registered("coco-object", from.path()).unwrap();
    assert_eq!(&ds.load(1).unwrap().label.data[..6], &OBJECT);
    let r = prepare("coco-stuff164k", from.path(), from.path(), &no_progress).unwrap();
    assert_eq!(r.converted, 2);
    let r = prepare("coco-object", from.path(), from.path(), &no_progress).unwrap();
    assert_eq!((r.converted, r.skipped_existing), (0, 2));
}

/// Quality review C23: a raw id above 255 (a 16-bit label) was clamped to 255 and mapped to
/// ignore (COCO-Stuff) or background (COCO-Object) silently.
#[test]
fn quality_c23_raw_ids_above_255_are_an_error_naming_file_and_id() {
    let from = tempfile::tempdir().unwrap();
    coco_release(from.path());
    let bad = from.path().join("annotations/val2017/000000000285.png");
    write_label(&bad, &label_cycling(7, 12, &[0, 300, 12]));
    for name in ["coco-stuff164k", "coco-object"] {
        let root = tempfile::tempdir().unwrap();
        let e = prepare(name, from.path(), root.path(), &no_progress)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("000000000285.png") && e.contains("label id 300") && e.contains("8-bit"),
            "{name}: {e}"
        );
        assert!(!root
            .path()
            .join("annotations/val2017/000000000285_labelTrainIds.png")
            .exists());
    }
}

#[test]
fn coco_tables_follow_mmseg() {
    let stuff = coco_stuff_table();
    let used: Vec<u8> = (0..=181).map(|i| stuff[i]).filter(|&v| v != 255).collect();
    // 171 classes in order, the 11 unused thing ids removed.
    assert_eq!(used, (0..171).map(|v| v as u8).collect::<Vec<_>>());
    for unused in [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90] {
        assert_eq!(stuff[unused], 255);
    }
    assert_eq!(stuff[255], 255);
    let obj = coco_object_table();
    let things: Vec<u8> = (0..=90).map(|i| obj[i]).filter(|&v| v != 255).collect();
    assert_eq!(things, (1..=80).collect::<Vec<u8>>());
    assert!((91..=181).all(|i| obj[i] == 0));
    assert_eq!(
        obj[255], 0,
        "unlabeled becomes background (cvt_coco_object.py)"
    );
}

#[test]
fn cityscapes_label_ids_to_train_ids() {
    let from = tempfile::tempdir().unwrap();
    let f = from.path();
    for (city, frame) in [
        ("frankfurt", "frankfurt_000000_000294"),
        ("lindau", "lindau_000000_000019"),
    ] {
        write_image(
            &f.join(format!("leftImg8bit/val/{city}/{frame}_leftImg8bit.png")),
            5,
            9,
            1,
        );
        let gt = f.join(format!("gtFine/val/{city}"));
        write_label(
            &gt.join(format!("{frame}_gtFine_labelIds.png")),
            &label_cycling(5, 9, &[7, 24, 33, 0, 1, 6, 26]),
        );
        write_label(
            &gt.join(format!("{frame}_gtFine_instanceIds.png")),
            &LabelMap::filled(5, 9, 26000),
        );
    }
    let r = prepare("cityscapes", f, f, &no_progress).unwrap();
    assert_eq!((r.converted, r.samples), (2, 2));
    let ds = Dataset::registered("cityscapes", f).unwrap();
    assert_eq!(
        &ds.load(0).unwrap().label.data[..7],
        &[0, 11, 18, 255, 255, 255, 13]
    );
    let t = cityscapes_table();
    assert_eq!(t.iter().filter(|&&v| v != 255).count(), 19);
    let again = prepare("cityscapes", f, f, &no_progress).unwrap();
    assert_eq!((again.converted, again.skipped_existing), (0, 2));
}

#[test]
fn voc_is_verified_and_linked_from_a_parent_directory() {
    let from = tempfile::tempdir().unwrap();
    let voc = from.path().join("VOCdevkit/VOC2012");
    for name in ["2007_000033", "2007_000042"] {
        write_image(&voc.join(format!("JPEGImages/{name}.jpg")), 6, 8, 0);
        write_palette_label(
            &voc.join(format!("SegmentationClass/{name}.png")),
            &label_cycling(6, 8, &[0, 15]),
        );
    }
    write_text(
        &voc.join("ImageSets/Segmentation/val.txt"),
        "2007_000033\n2007_000042\n",
    );
    let root = tempfile::tempdir().unwrap();
    let r = prepare("voc21", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((r.converted, r.copied, r.samples), (0, 5, 2));
    let ds = Dataset::registered("voc21", root.path()).unwrap();
    assert_eq!(&ds.load(1).unwrap().label.data[..2], &[0, 15]);
    let again = prepare("voc21", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((again.copied, again.skipped_existing), (0, 5));
}

#[test]
fn wrong_inputs_name_what_is_missing() {
    let from = tempfile::tempdir().unwrap();
    let e = prepare("coco-stuff164k", from.path(), from.path(), &no_progress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("annotations/val2017"), "{e}");
    let e = prepare("context59", from.path(), from.path(), &no_progress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("SegmentationClassContext"), "{e}");
    let e = prepare(
        "voc21",
        Path::new("/nonexistent/x"),
        from.path(),
        &no_progress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/x"), "{e}");
}

/// Zip every file under `src` as `<prefix><relative path>` (Deflate, as the releases are).
fn zip_tree(zip_path: &Path, src: &Path, prefix: &str) {
    use std::io::Write;
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut zw = zip::ZipWriter::new(std::fs::File::create(zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    // A README at the top, as the Cityscapes archives have, must be ignored.
    zw.start_file("README", opts).unwrap();
    zw.write_all(b"readme").unwrap();
    for f in files {
        let rel = f.strip_prefix(src).unwrap().to_str().unwrap().to_string();
        zw.start_file(format!("{prefix}{rel}"), opts).unwrap();
        zw.write_all(&std::fs::read(&f).unwrap()).unwrap();
    }
    zw.finish().unwrap();
}

#[test]
fn coco_from_the_official_zip_archives() {
    let stage = tempfile::tempdir().unwrap();
    coco_release(stage.path());
    // A train member that must not be extracted.
    write_label(
        &stage.path().join("annotations/train2017/000000000009.png"),
        &label_cycling(3, 4, &[0]),
    );
    let from = tempfile::tempdir().unwrap();
    zip_tree(
        &from.path().join("val2017.zip"),
        &stage.path().join("images/val2017"),
        "val2017/",
    );
    zip_tree(
        &from.path().join("stuffthingmaps_trainval2017.zip"),
        &stage.path().join("annotations"),
        "",
    );
    let root = tempfile::tempdir().unwrap();
    let r = prepare("coco-object", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((r.extracted, r.converted, r.samples), (4, 2, 2), "{r}");
    assert!(!root.path().join("annotations/train2017").exists());
    let ds = Dataset::registered("coco-object", root.path()).unwrap();
    assert_eq!(&ds.load(0).unwrap().label.data[..6], &OBJECT);
    let again = prepare("coco-object", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((again.extracted, again.converted), (0, 0));
}

#[test]
fn cityscapes_and_ade_from_zip_archives() {
    let stage = tempfile::tempdir().unwrap();
    let s = stage.path();
    write_image(
        &s.join("leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png"),
        5,
        9,
        1,
    );
    write_image(
        &s.join("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"),
        5,
        9,
        1,
    );
    write_label(
        &s.join("gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png"),
        &label_cycling(5, 9, &[26, 4]),
    );
    let from = tempfile::tempdir().unwrap();
    zip_tree(
        &from.path().join("leftImg8bit_trainvaltest.zip"),
        &s.join("leftImg8bit"),
        "leftImg8bit/",
    );
    zip_tree(
        &from.path().join("gtFine_trainvaltest.zip"),
        &s.join("gtFine"),
        "gtFine/",
    );
    let root = tempfile::tempdir().unwrap();
    let r = prepare("cityscapes", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((r.extracted, r.converted, r.samples), (2, 1, 1), "{r}");
    let ds = Dataset::registered("cityscapes", root.path()).unwrap();
    assert_eq!(&ds.load(0).unwrap().label.data[..2], &[13, 255]);

    let ade = tempfile::tempdir().unwrap();
    let a = ade.path().join("ADEChallengeData2016");
    write_image(&a.join("images/validation/ADE_val_00000001.jpg"), 6, 7, 0);
    write_label(
        &a.join("annotations/validation/ADE_val_00000001.png"),
        &label_cycling(6, 7, &[0, 13]),
    );
    write_image(&a.join("images/training/ADE_train_00000001.jpg"), 6, 7, 0);
    let from = tempfile::tempdir().unwrap();
    zip_tree(
        &from.path().join("ADEChallengeData2016.zip"),
        ade.path(),
        "",
    );
    let root = tempfile::tempdir().unwrap();
    let r = prepare("ade20k", from.path(), root.path(), &no_progress).unwrap();
    assert_eq!((r.extracted, r.samples), (2, 1), "{r}");
    let ds = Dataset::registered("ade20k", root.path()).unwrap();
    assert_eq!(&ds.load(0).unwrap().label.data[..2], &[255, 12]);
}
