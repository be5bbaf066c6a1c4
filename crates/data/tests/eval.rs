//! `eval_dir` on directories of prediction PNGs, including bad input with and without skip_bad.

mod common;

use std::path::Path;

use common::*;
use segsweep_data::{
    eval_dir, load_label, no_progress, save_label_png, write_synthetic, EvalOptions, GtSource,
    IouCounts, LabelMap,
};

/// A prediction from a label: shift a band of pixels to the next class.
fn perturb(l: &LabelMap, k: u32) -> LabelMap {
    let mut p = l.clone();
    for (i, v) in p.data.iter_mut().enumerate() {
        if *v == 255 {
            *v = 0;
        } else if (i as u32 / 7 + k).is_multiple_of(5) {
            *v = (*v + 1) % 6;
        }
    }
    p
}

/// A synthetic custom tree with predictions `pred/<id>.png`; returns the expected counts.
fn synthetic_with_predictions(dir: &Path, n: usize) -> (GtSource, IouCounts) {
    let cfg = write_synthetic(&dir.join("data"), n, 2).unwrap();
    let mut expected = IouCounts::new(6);
    std::fs::create_dir_all(dir.join("pred")).unwrap();
    for i in 0..n {
        let id = format!("synth_{i:04}");
        let gt = load_label(dir.join(format!("data/labels/{id}.png"))).unwrap();
        let pred = perturb(&gt, i as u32);
        save_label_png(dir.join(format!("pred/{id}.png")), &pred).unwrap();
        expected.add(&pred.data, &gt.data, 255).unwrap();
    }
    (GtSource::Custom(cfg), expected)
}

#[test]
fn scores_a_prediction_directory_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, expected) = synthetic_with_predictions(dir.path(), 4);
    let r = eval_dir(
        &gt,
        &dir.path().join("pred"),
        &EvalOptions::default(),
        &no_progress,
    )
    .unwrap();
    assert_eq!(r.counts, expected);
    assert_eq!(r.scored.len(), 4);
    assert_eq!(r.person_class, Some(1));
    assert_eq!(r.summary, expected.summary(Some(1)));
    let text = r.to_string();
    assert!(
        text.contains("mIoU") && text.contains("4 images scored"),
        "{text}"
    );

    // The same through --gt DIR --classes FILE.
    let bare = GtSource::dir(
        dir.path().join("data/labels"),
        dir.path().join("data/classes.txt"),
    );
    let r2 = eval_dir(
        &bare,
        &dir.path().join("pred"),
        &EvalOptions::default(),
        &no_progress,
    )
    .unwrap();
    assert_eq!(r2.counts, expected);
    assert_eq!(r2.person_class, Some(1));
}

#[test]
fn a_subset_of_predictions_scores_that_subset() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, _) = synthetic_with_predictions(dir.path(), 3);
    std::fs::remove_file(dir.path().join("pred/synth_0001.png")).unwrap();
    let r = eval_dir(
        &gt,
        &dir.path().join("pred"),
        &EvalOptions::default(),
        &no_progress,
    )
    .unwrap();
    assert_eq!(r.scored, vec!["synth_0000", "synth_0002"]);
    assert_eq!(r.without_prediction, 1);
}

/// Quality review A5: `--gt DIR` counted no label without a prediction, so a partial
/// prediction directory scored as complete.
#[test]
fn quality_a5_gt_dir_counts_labels_without_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = synthetic_with_predictions(dir.path(), 4);
    std::fs::remove_file(dir.path().join("pred/synth_0001.png")).unwrap();
    std::fs::remove_file(dir.path().join("pred/synth_0003.png")).unwrap();
    let bare = GtSource::dir(
        dir.path().join("data/labels"),
        dir.path().join("data/classes.txt"),
    );
    let r = eval_dir(
        &bare,
        &dir.path().join("pred"),
        &EvalOptions::default(),
        &no_progress,
    )
    .unwrap();
    assert_eq!(r.scored, vec!["synth_0000", "synth_0002"]);
    assert_eq!(r.without_prediction, 2);
    assert_eq!(r.without_prediction_ids, vec!["synth_0001", "synth_0003"]);
    let text = r.to_string();
    assert!(
        text.contains("2 without prediction") && text.contains("synth_0001, synth_0003"),
        "{text}"
    );
}

/// Quality review C22: `--classes` with a dataset used to be ignored. It now renames the
/// classes when the count matches, and is an error naming the file and both counts otherwise.
#[test]
fn quality_c22_class_override_renames_or_fails_on_a_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, expected) = synthetic_with_predictions(dir.path(), 2);
    let names = dir.path().join("names.txt");
    std::fs::write(&names, "bg\nhuman\nc2\nc3\nc4\nc5\n").unwrap();
    let opts = EvalOptions {
        classes: Some(names.clone()),
        ..EvalOptions::default()
    };
    let r = eval_dir(&gt, &dir.path().join("pred"), &opts, &no_progress).unwrap();
    assert_eq!(r.class_names[1], "human");
    assert_eq!(r.counts, expected);
    // The synthetic set has a background class 0: it keeps mmseg's display name.
    assert_eq!(r.class_names[0], "background");

    std::fs::write(&names, "a\nb\nc\n").unwrap();
    let e = eval_dir(&gt, &dir.path().join("pred"), &opts, &no_progress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("names.txt") && e.contains("lists 3 classes") && e.contains("has 6"),
        "{e}"
    );
}

#[test]
fn bad_predictions_fail_naming_the_file_or_are_skipped_keeping_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, _) = synthetic_with_predictions(dir.path(), 4);
    let pred = dir.path().join("pred");
    // 0001: wrong size; 0002: truncated; 0003: id 9 of 6 classes.
    save_label_png(pred.join("synth_0001.png"), &LabelMap::filled(3, 5, 0)).unwrap();
    let bytes = std::fs::read(pred.join("synth_0002.png")).unwrap();
    std::fs::write(pred.join("synth_0002.png"), &bytes[..bytes.len() / 3]).unwrap();
    let l3 = load_label(pred.join("synth_0003.png")).unwrap();
    save_label_png(
        pred.join("synth_0003.png"),
        &LabelMap::filled(l3.h, l3.w, 9),
    )
    .unwrap();

    let e = eval_dir(&gt, &pred, &EvalOptions::default(), &no_progress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("synth_0001.png") && e.contains("3×5"), "{e}");

    let opts = EvalOptions {
        skip_bad: true,
        ..EvalOptions::default()
    };
    let r = eval_dir(&gt, &pred, &opts, &no_progress).unwrap();
    assert_eq!(r.scored, vec!["synth_0000"]);
    assert_eq!(r.skipped.len(), 3);
    let reasons: Vec<String> = r.skipped.iter().map(|s| s.reason.clone()).collect();
    assert!(reasons[1].contains("synth_0002.png"), "{reasons:?}");
    assert!(reasons[2].contains("id 9"), "{reasons:?}");
    // What was accumulated equals scoring the good file alone.
    let g0 = load_label(dir.path().join("data/labels/synth_0000.png")).unwrap();
    let p0 = load_label(pred.join("synth_0000.png")).unwrap();
    assert_eq!(
        r.counts,
        IouCounts::from_image(&p0.data, &g0.data, 6, 255).unwrap()
    );
    assert!(r.to_string().contains("3 skipped"));
}

#[test]
fn registered_dataset_with_nested_or_flat_prediction_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cityscapes");
    let pred = dir.path().join("pred");
    let frames = [
        ("frankfurt", "frankfurt_000000_000294"),
        ("lindau", "lindau_000000_000019"),
    ];
    for (city, frame) in frames {
        write_image(
            &root.join(format!("leftImg8bit/val/{city}/{frame}_leftImg8bit.png")),
            4,
            6,
            0,
        );
        let l = label_cycling(4, 6, &[11, 0, 255]);
        write_label(
            &root.join(format!(
                "gtFine/val/{city}/{frame}_gtFine_labelTrainIds.png"
            )),
            &l,
        );
    }
    // One nested like the id, one flat by basename.
    write_label(
        &pred.join("frankfurt/frankfurt_000000_000294.png"),
        &label_cycling(4, 6, &[11, 0, 5]),
    );
    write_label(
        &pred.join("lindau_000000_000019.png"),
        &label_cycling(4, 6, &[11, 11, 11]),
    );
    let gt = GtSource::Registered {
        name: "cityscapes".into(),
        root: root.clone(),
    };
    let r = eval_dir(&gt, &pred, &EvalOptions::default(), &no_progress).unwrap();
    assert_eq!(r.scored.len(), 2);
    // person (11): label 16 px, pred 24 px, intersect 16 → IoU 16/24.
    let person = r.summary.person_iou_pct.unwrap();
    assert!((person - 100.0 * 16.0 / 24.0).abs() < 1e-9, "{person}");

    let e = eval_dir(
        &gt,
        &dir.path().join("nope"),
        &EvalOptions::default(),
        &no_progress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = eval_dir(&gt, &empty, &EvalOptions::default(), &no_progress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty") && e.contains("prediction"), "{e}");
}

/// A prediction with no label under `--gt DIR` is an error naming it and the label it needs,
/// before anything is scored.
#[test]
fn a_stray_prediction_under_gt_dir_is_named_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = synthetic_with_predictions(dir.path(), 2);
    std::fs::copy(
        dir.path().join("pred/synth_0000.png"),
        dir.path().join("pred/stray.png"),
    )
    .unwrap();
    let bare = GtSource::dir(
        dir.path().join("data/labels"),
        dir.path().join("data/classes.txt"),
    );
    let e = eval_dir(
        &bare,
        &dir.path().join("pred"),
        &EvalOptions::default(),
        &no_progress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("stray") && e.contains("1 prediction") && e.contains("stray predictions"),
        "{e}"
    );
}
