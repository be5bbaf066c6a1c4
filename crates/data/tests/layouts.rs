//! Every registered dataset read from a tiny tree in its exact MMSegmentation layout, plus the
//! bad inputs the readers must name.

mod common;

use std::path::Path;

use common::*;
use segsweep_data::{check_dataset, no_progress, DataError, Dataset, LabelMap, Subset};

/// VOC2012 or VOC2010/Context layout with ids `b, a, c` in the split file.
fn voc_tree(root: &Path, label_dir: &str, split: &str, ids: &[u32]) {
    for (k, name) in ["a", "b", "c"].iter().enumerate() {
        write_image(
            &root.join(format!("JPEGImages/{name}.jpg")),
            10,
            14,
            k as u8,
        );
        write_palette_label(
            &root.join(format!("{label_dir}/{name}.png")),
            &label_cycling(10, 14, ids),
        );
    }
    // An image outside the split must not be listed.
    write_image(&root.join("JPEGImages/extra.jpg"), 10, 14, 9);
    write_text(&root.join(split), "b\na\nc\n");
}

#[test]
fn voc21_and_voc20_read_palette_indices_in_split_order() {
    let dir = tempfile::tempdir().unwrap();
    voc_tree(
        dir.path(),
        "SegmentationClass",
        "ImageSets/Segmentation/val.txt",
        &[0, 15, 255, 20],
    );
    let ds = Dataset::registered("voc21", dir.path()).unwrap();
    assert_eq!(ds.ids(), vec!["b", "a", "c"]);
    // 3 of the expected 1449: a warning, not an error.
    assert!(
        ds.warnings.iter().any(|w| w.contains("1449")),
        "{:?}",
        ds.warnings
    );
    let s = ds.load(0).unwrap();
    assert_eq!(s.id, "b");
    assert_eq!((s.image.h, s.image.w), (10, 14));
    assert_eq!(&s.label.data[..4], &[0, 15, 255, 20]);

    let ds20 = Dataset::registered("voc20", dir.path()).unwrap();
    let s = ds20.load(0).unwrap();
    // reduce_zero_label: background 0 → 255, person 15 → 14.
    assert_eq!(&s.label.data[..4], &[255, 14, 255, 19]);
    assert_eq!(ds20.info.person_class, Some(14));
    assert_eq!(ds20.info.background_class, None);
}

#[test]
fn context60_and_context59() {
    let dir = tempfile::tempdir().unwrap();
    voc_tree(
        dir.path(),
        "SegmentationClassContext",
        "ImageSets/SegmentationContext/val.txt",
        &[0, 37, 59],
    );
    let s = Dataset::registered("context60", dir.path())
        .unwrap()
        .load(1)
        .unwrap();
    assert_eq!(s.id, "a");
    assert_eq!(&s.label.data[..3], &[0, 37, 59]);
    let s = Dataset::registered("context59", dir.path())
        .unwrap()
        .load(1)
        .unwrap();
    assert_eq!(&s.label.data[..3], &[255, 36, 58]);
}

fn coco_tree(root: &Path) {
    for (k, name) in ["000000000285", "000000000139"].iter().enumerate() {
        write_image(
            &root.join(format!("images/val2017/{name}.jpg")),
            12,
            9,
            k as u8,
        );
        // The raw stuffthingmap and both converted maps live side by side, as after mmseg's tools.
        write_label(
            &root.join(format!("annotations/val2017/{name}.png")),
            &label_cycling(12, 9, &[181]),
        );
        write_label(
            &root.join(format!("annotations/val2017/{name}_labelTrainIds.png")),
            &label_cycling(12, 9, &[0, 170, 255]),
        );
        write_label(
            &root.join(format!("annotations/val2017/{name}_instanceTrainIds.png")),
            &label_cycling(12, 9, &[1, 80, 0]),
        );
    }
}

#[test]
fn coco_stuff_and_coco_object_share_a_tree() {
    let dir = tempfile::tempdir().unwrap();
    coco_tree(dir.path());
    let ds = Dataset::registered("coco-stuff164k", dir.path()).unwrap();
    // No split file: images sorted by path.
    assert_eq!(ds.ids(), vec!["000000000139", "000000000285"]);
    assert_eq!(&ds.load(0).unwrap().label.data[..3], &[0, 170, 255]);
    let ds = Dataset::registered("coco-object", dir.path()).unwrap();
    assert_eq!(&ds.load(1).unwrap().label.data[..3], &[1, 80, 0]);
    assert_eq!(ds.info.person_class, Some(1));
}

/// ADE20K image `ADE_val_<k>.jpg` (size of `label`) and its annotation.
fn ade_sample(root: &Path, k: usize, label: &LabelMap) {
    let name = format!("ADE_val_{k:08}");
    let (h, w) = (label.h as u32, label.w as u32);
    write_image(&root.join(format!("images/validation/{name}.jpg")), h, w, 1);
    write_label(
        &root.join(format!("annotations/validation/{name}.png")),
        label,
    );
}

#[test]
fn ade20k_reduces_zero_label() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ade_sample(root, 1, &label_cycling(8, 11, &[0, 13, 150]));
    let ds = Dataset::registered("ade20k", root).unwrap();
    assert_eq!(&ds.load(0).unwrap().label.data[..3], &[255, 12, 149]);
}

#[test]
fn cityscapes_scans_city_folders_recursively() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (city, frame) in [
        ("munster", "munster_000000_000019"),
        ("frankfurt", "frankfurt_000000_000294"),
    ] {
        write_image(
            &root.join(format!("leftImg8bit/val/{city}/{frame}_leftImg8bit.png")),
            6,
            12,
            2,
        );
        let gt = root.join(format!("gtFine/val/{city}"));
        write_label(
            &gt.join(format!("{frame}_gtFine_labelTrainIds.png")),
            &label_cycling(6, 12, &[11, 18, 255]),
        );
        write_label(
            &gt.join(format!("{frame}_gtFine_labelIds.png")),
            &label_cycling(6, 12, &[24]),
        );
    }
    let ds = Dataset::registered("cityscapes", root).unwrap();
    assert_eq!(
        ds.ids(),
        vec![
            "frankfurt/frankfurt_000000_000294",
            "munster/munster_000000_000019"
        ]
    );
    let s = ds.load(1).unwrap();
    assert_eq!(&s.label.data[..3], &[11, 18, 255]);
    assert_eq!(ds.info.defaults.unwrap().short_side, Some(560));
}

#[test]
fn missing_root_names_the_root_and_hints() {
    let e = Dataset::registered("voc21", Path::new("/nonexistent/VOC2012")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Missing { .. }));
    assert!(
        msg.contains("/nonexistent/VOC2012") && msg.contains("--root"),
        "{msg}"
    );
    let e = Dataset::registered("voc22", Path::new("/tmp"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown dataset `voc22`"), "{e}");
}

/// Contracts review #10: `sweep` has no `--root`, so the hint must name the spec key and
/// `--data-dir` as well as the `data` / `eval` flag.
#[test]
fn contracts_10_missing_root_hint_names_the_sweep_and_data_command_ways() {
    let msg = Dataset::registered("voc21", Path::new("/nonexistent/VOC2012"))
        .unwrap_err()
        .to_string();
    for want in [
        "[dataset] root",
        "--data-dir DIR",
        "`segsweep data check` and `segsweep eval` take `--root DIR`",
        "[dataset.custom] root",
    ] {
        assert!(msg.contains(want), "missing {want:?} in: {msg}");
    }
    assert!(!msg.contains("hint: pass --root"), "{msg}");
    // A root without the image directory gives the same ways.
    let dir = tempfile::tempdir().unwrap();
    let msg = Dataset::registered("voc21", dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("image directory") && msg.contains("[dataset] root"),
        "{msg}"
    );
}

/// Quality review C16: the error named `dataset.person_class`; the key is
/// `dataset.custom.person_class`.
#[test]
fn quality_c16_custom_class_errors_name_the_custom_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = segsweep_data::write_synthetic(dir.path(), 1, 0).unwrap();
    cfg.person_class = Some("pedestrian".into());
    let e = Dataset::custom(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("`dataset.custom.person_class`") && e.contains("pedestrian"),
        "{e}"
    );
    cfg.person_class = None;
    cfg.background_class = Some("void".into());
    let e = Dataset::custom(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("`dataset.custom.background_class`")
            && e.contains("hint")
            && e.contains("leave the key out if the labels have no background class"),
        "{e}"
    );
}

/// A file given as a dataset root is called a file, not "not found".
#[test]
fn a_file_as_dataset_root_is_called_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("voc.tar");
    std::fs::write(&file, b"x").unwrap();
    let e = Dataset::registered("voc21", &file).unwrap_err().to_string();
    assert!(e.contains("this is a file") && e.contains("voc.tar"), "{e}");
}

/// A missing custom root is named as the root, not as the class file inside it.
#[test]
fn a_missing_custom_root_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = segsweep_data::write_synthetic(dir.path(), 1, 0).unwrap();
    cfg.root = dir.path().join("elsewhere");
    let e = Dataset::custom(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("custom dataset root")
            && e.contains("elsewhere")
            && e.contains("[dataset.custom] root"),
        "{e}"
    );
    assert!(!e.contains("classes.txt"), "{e}");
    // A file there is called a file.
    std::fs::write(&cfg.root, b"x").unwrap();
    let e = Dataset::custom(&cfg).unwrap_err().to_string();
    assert!(e.contains("this is a file"), "{e}");
}

#[test]
fn bad_samples_are_named_when_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    voc_tree(
        root,
        "SegmentationClass",
        "ImageSets/Segmentation/val.txt",
        &[0, 1],
    );
    write_text(
        &root.join("ImageSets/Segmentation/val.txt"),
        "a\nb\nc\nnolabel\n",
    );
    write_image(&root.join("JPEGImages/nolabel.jpg"), 10, 14, 0);
    // b: label of another size; c: id 21 in a 21-class set; a: fine.
    write_palette_label(
        &root.join("SegmentationClass/b.png"),
        &label_cycling(14, 10, &[0]),
    );
    write_palette_label(
        &root.join("SegmentationClass/c.png"),
        &label_cycling(10, 14, &[0, 21]),
    );
    let ds = Dataset::registered("voc21", root).unwrap();
    assert!(
        ds.warnings.iter().any(|w| w.contains("nolabel.png")),
        "{:?}",
        ds.warnings
    );
    assert!(ds.load(0).is_ok());
    let e = ds.load(1).unwrap_err().to_string();
    assert!(
        e.contains("b.png") && e.contains("14×10") && e.contains("10×14"),
        "{e}"
    );
    let e = ds.load(2).unwrap_err().to_string();
    assert!(e.contains("c.png") && e.contains("id 21"), "{e}");
    let e = ds.load(3).unwrap_err().to_string();
    assert!(e.contains("nolabel.png"), "{e}");

    // `check` finds the same problems without stopping at the first.
    let r = check_dataset(&ds, &no_progress).unwrap();
    assert_eq!((r.listed, r.images_found, r.labels_found), (4, 4, 3));
    assert_eq!(r.missing.len(), 1);
    assert_eq!(r.size_mismatch.len(), 1);
    assert_eq!(r.out_of_range.len(), 1);
    assert_eq!(r.out_of_range[0].1, 21);
    assert!(!r.is_ok());
    let text = r.to_string();
    assert!(
        text.contains("nolabel.png") && text.contains("c.png: id 21") && text.contains("PROBLEMS"),
        "{text}"
    );
    assert!(r.histogram[&21] > 0 && r.histogram[&0] > 0);
}

#[test]
fn truncated_label_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    voc_tree(
        root,
        "SegmentationClass",
        "ImageSets/Segmentation/val.txt",
        &[0, 1],
    );
    let p = root.join("SegmentationClass/a.png");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 20]).unwrap();
    let ds = Dataset::registered("voc21", root).unwrap();
    let e = ds.load(1).unwrap_err().to_string();
    assert!(e.contains("a.png"), "{e}");
    let r = check_dataset(&ds, &no_progress).unwrap();
    assert_eq!(r.unreadable.len(), 1);
}

#[test]
fn orphan_labels_are_reported_for_scanned_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ade_sample(root, 1, &LabelMap::filled(8, 11, 1));
    write_label(
        &root.join("annotations/validation/ADE_val_00000002.png"),
        &LabelMap::filled(8, 11, 1),
    );
    let ds = Dataset::registered("ade20k", root).unwrap();
    assert_eq!(ds.len(), 1);
    assert!(
        ds.warnings
            .iter()
            .any(|w| w.contains("ADE_val_00000002.jpg")),
        "{:?}",
        ds.warnings
    );
    let r = check_dataset(&ds, &no_progress).unwrap();
    assert_eq!(r.missing.len(), 1);
}

#[test]
fn subsets_keep_split_order_and_record_ids() {
    let dir = tempfile::tempdir().unwrap();
    voc_tree(
        dir.path(),
        "SegmentationClass",
        "ImageSets/Segmentation/val.txt",
        &[0],
    );
    let ds = Dataset::registered("voc21", dir.path()).unwrap();
    assert_eq!(
        ds.clone().subset(&Subset::First { n: 2 }).ids(),
        vec!["b", "a"]
    );
    let r = ds.clone().subset(&Subset::Random { n: 2, seed: 5 });
    assert_eq!(r.len(), 2);
    assert_eq!(r.ids(), ds.subset(&Subset::Random { n: 2, seed: 5 }).ids());
    let syn = Dataset::synthetic(6, 0).subset(&Subset::First { n: 2 });
    assert_eq!(syn.ids(), vec!["synth_0000", "synth_0001"]);
    assert_eq!(syn.load(1).unwrap().id, "synth_0001");
}

/// A split file with a byte-order mark reads like one without; an id that leaves the image
/// directory or repeats is an error naming the split file.
#[test]
fn split_files_strip_a_bom_and_refuse_escaping_or_repeated_ids() {
    let dir = tempfile::tempdir().unwrap();
    let split = "ImageSets/Segmentation/val.txt";
    voc_tree(dir.path(), "SegmentationClass", split, &[0, 15]);
    write_text(&dir.path().join(split), "\u{feff}b\r\na\nc\n");
    let ds = Dataset::registered("voc21", dir.path()).unwrap();
    assert_eq!(ds.ids(), vec!["b", "a", "c"]);
    for (text, why) in [
        ("b\na\nb\n", "more than once"),
        ("b\n../JPEGImages/a\n", "leaves the image"),
        ("/etc/passwd\n", "leaves the image"),
    ] {
        write_text(&dir.path().join(split), text);
        let e = Dataset::registered("voc21", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("val.txt") && e.contains(why), "{text:?}: {e}");
    }
}
