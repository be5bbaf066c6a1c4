//! The `eval`, `predict` and dataset-error paths of the `segsweep` binary on temporary
//! directories: each test is named after the review finding it guards.

use std::path::Path;

use segsweep_data::{save_label_png, LabelMap};

mod common;
use common::{fails, ok, run};

fn bin() -> std::process::Command {
    common::segsweep()
}

/// Column `col` of the first row of a CSV file.
fn csv_cell(path: &Path, col: &str) -> String {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h = r.headers().unwrap().clone();
    let row = r.records().next().unwrap().unwrap();
    row[h.iter().position(|x| x == col).unwrap()].to_string()
}

/// `class_name` of every per_class.csv row, in order.
fn per_class_names(path: &Path) -> Vec<String> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h = r.headers().unwrap().clone();
    let c = h.iter().position(|x| x == "class_name").unwrap();
    r.records().map(|row| row.unwrap()[c].to_string()).collect()
}

/// A two-image VOC2012 tree (`a`, `b`, 3×4) under `root` and perfect predictions in `pred`.
fn voc_tree(root: &Path, pred: &Path) {
    let label = LabelMap::new(3, 4, vec![0, 0, 15, 15, 0, 1, 15, 15, 255, 1, 1, 0]).unwrap();
    for id in ["a", "b"] {
        let img = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8, y as u8, 7]));
        std::fs::create_dir_all(root.join("JPEGImages")).unwrap();
        img.save(root.join(format!("JPEGImages/{id}.jpg"))).unwrap();
        std::fs::create_dir_all(root.join("SegmentationClass")).unwrap();
        save_label_png(root.join(format!("SegmentationClass/{id}.png")), &label).unwrap();
        std::fs::create_dir_all(pred).unwrap();
        let mut p = label.clone();
        p.data[8] = 0; // the ignore pixel gets a class
        save_label_png(pred.join(format!("{id}.png")), &p).unwrap();
    }
    std::fs::create_dir_all(root.join("ImageSets/Segmentation")).unwrap();
    std::fs::write(root.join("ImageSets/Segmentation/val.txt"), "a\nb\n").unwrap();
}

/// Quality review A5: `eval --gt DIR` said "0 without prediction" whatever was missing.
#[test]
fn quality_a5_eval_gt_dir_reports_labels_without_prediction() {
    let tmp = tempfile::tempdir().unwrap();
    let (gt, pred) = (tmp.path().join("gt"), tmp.path().join("pred"));
    let l = LabelMap::new(3, 4, vec![0, 0, 1, 1, 0, 2, 1, 1, 255, 2, 2, 0]).unwrap();
    for id in ["a", "b", "c"] {
        std::fs::create_dir_all(&gt).unwrap();
        save_label_png(gt.join(format!("{id}.png")), &l).unwrap();
    }
    std::fs::create_dir_all(&pred).unwrap();
    save_label_png(pred.join("b.png"), &l).unwrap();
    std::fs::write(tmp.path().join("classes.txt"), "background\nperson\ncar\n").unwrap();
    let (stdout, stderr) = ok(&run(
        &[
            "eval",
            "--gt",
            "gt",
            "--classes",
            "classes.txt",
            "--pred",
            "pred",
            "--out",
            "scores",
        ],
        tmp.path(),
    ));
    assert!(
        stdout.contains("1 images scored") && stdout.contains("2 without prediction"),
        "{stdout}"
    );
    assert!(
        stderr.contains("no prediction") && stderr.contains("a, c"),
        "{stderr}"
    );
}

/// Quality review C22 and contracts #8, #9: `--classes` with `--dataset` was ignored; VOC21's
/// background was displayed as `sky`; eval wrote `weights = unknown`.
#[test]
fn quality_c22_contracts_8_9_eval_dataset_classes_background_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    voc_tree(&tmp.path().join("voc"), &tmp.path().join("pred"));
    let base = [
        "eval",
        "--dataset",
        "voc21",
        "--root",
        "voc",
        "--pred",
        "pred",
    ];
    ok(&run(&[&base[..], &["--out", "s1"]].concat(), tmp.path()));
    let names = per_class_names(&tmp.path().join("s1/per_class.csv"));
    assert_eq!(names.len(), 21);
    assert_eq!(names[0], "background");
    assert_eq!(names[15], "person");
    assert_eq!(
        csv_cell(&tmp.path().join("s1/summary.csv"), "weights"),
        "external"
    );

    // --classes with the right count renames the classes.
    let mine: String = (0..21).map(|i| format!("class{i}\n")).collect();
    std::fs::write(tmp.path().join("mine.txt"), mine).unwrap();
    ok(&run(
        &[&base[..], &["--classes", "mine.txt", "--out", "s2"]].concat(),
        tmp.path(),
    ));
    let names = per_class_names(&tmp.path().join("s2/per_class.csv"));
    assert_eq!(names[1], "class1");
    assert_eq!(names[0], "background");

    // ... with another count it is an error naming the file and both counts.
    std::fs::write(tmp.path().join("few.txt"), "a\nb\n").unwrap();
    let err = fails(&run(
        &[&base[..], &["--classes", "few.txt", "--out", "s3"]].concat(),
        tmp.path(),
    ));
    assert!(
        err.contains("few.txt") && err.contains("lists 2 classes") && err.contains("has 21"),
        "{err}"
    );
    assert!(!tmp.path().join("s3/summary.csv").exists());
}

/// Contracts #10: the missing-root hint told `sweep` users to pass `--root`, which `sweep`
/// does not have.
#[test]
fn contracts_10_sweep_missing_root_hint_names_the_spec_key_and_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("s.toml"),
        "[experiment]\nname = \"x\"\noutput_dir = \"out\"\n[model]\nsource = \
         \"builtin:tiny-random\"\n[dataset]\nname = \"voc21\"\nroot = \"nowhere/VOC2012\"\n",
    )
    .unwrap();
    let err = fails(&run(&["sweep", "s.toml"], tmp.path()));
    assert!(
        err.contains("nowhere/VOC2012")
            && err.contains("[dataset] root")
            && err.contains("--data-dir DIR"),
        "{err}"
    );
    let err = fails(&run(
        &["data", "check", "voc21", "--root", "nowhere"],
        tmp.path(),
    ));
    assert!(err.contains("--root DIR"), "{err}");
}

/// Quality review C21: two inputs with one file stem overwrote each other's outputs.
#[test]
fn quality_c21_predict_refuses_duplicate_stems_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    for p in ["a/x.png", "b/x.png"] {
        let path = tmp.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(8, 6, image::Rgb([1, 2, 3]))
            .save(path)
            .unwrap();
    }
    std::fs::write(tmp.path().join("c.txt"), "background\nperson\n").unwrap();
    let err = fails(&run(
        &[
            "predict",
            "--model",
            "builtin:tiny-random",
            "--classes",
            "c.txt",
            "a/x.png",
            "b/x.png",
            "--out",
            "pred",
        ],
        tmp.path(),
    ));
    assert!(
        err.contains("a/x.png") && err.contains("b/x.png") && err.contains("hint"),
        "{err}"
    );
    assert!(!tmp.path().join("pred").exists(), "nothing may be written");
}

/// A missing input or a directory is refused before the model loads, naming each path.
#[test]
fn predict_refuses_missing_inputs_and_directories_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("photos")).unwrap();
    image::RgbImage::from_pixel(8, 6, image::Rgb([1, 2, 3]))
        .save(tmp.path().join("ok.png"))
        .unwrap();
    let err = predict_fails_writing_nothing(tmp.path(), &["ok.png", "gone.jpg", "photos"]);
    assert!(
        err.contains("2 input image(s)")
            && err.contains("gone.jpg (not found)")
            && err.contains("photos (a directory)")
            && err.contains("DIR/*.jpg"),
        "{err}"
    );
    assert!(
        !err.contains("synthetic weights"),
        "the model must not load first: {err}"
    );
}

/// Stderr of `predict` (tiny random CLIP, 2 classes) on `inputs` in `dir`, which must fail
/// without creating its output directory.
#[track_caller]
fn predict_fails_writing_nothing(dir: &Path, inputs: &[&str]) -> String {
    std::fs::write(dir.join("c.txt"), "background\nperson\n").unwrap();
    let mut args = vec![
        "predict",
        "--model",
        "builtin:tiny-random",
        "--classes",
        "c.txt",
    ];
    args.extend(inputs);
    args.extend(["--out", "pred"]);
    let err = fails(&run(&args, dir));
    assert!(!dir.join("pred").exists(), "nothing may be written");
    err
}

/// Quality review C21: an explicit `--model openai/clip-vit-base-patch16` (the old default
/// string) was ignored when `--spec` named another model; an explicit flag now wins.
#[test]
fn quality_c21_predict_explicit_model_wins_over_the_spec() {
    let tmp = tempfile::tempdir().unwrap();
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 90]))
        .save(tmp.path().join("photo.png"))
        .unwrap();
    std::fs::write(tmp.path().join("c.txt"), "background\nperson\n").unwrap();
    std::fs::write(
        tmp.path().join("s.toml"),
        "[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nshort_side = 224\n",
    )
    .unwrap();
    let args = [
        "predict",
        "--spec",
        "s.toml",
        "--classes",
        "c.txt",
        "photo.png",
        "--out",
        "pred",
    ];
    let offline = |extra: &[&str]| {
        bin()
            .args(args)
            .args(extra)
            .current_dir(tmp.path())
            .env("HF_HOME", tmp.path().join("hf"))
            .env("HF_HUB_OFFLINE", "1")
            .env("SEGSWEEP_CACHE", tmp.path().join("cache"))
            .output()
            .unwrap()
    };
    // The explicit model is used (and is not in the empty offline cache).
    let err = fails(&offline(&["--model", "openai/clip-vit-base-patch16"]));
    assert!(
        err.contains("openai/clip-vit-base-patch16") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    assert!(!tmp.path().join("pred/photo.pred.png").exists());
    // Without --model the spec's model is used.
    ok(&offline(&[]));
    assert!(tmp.path().join("pred/photo.pred.png").is_file());
}

/// `predict --spec` runs one configuration of the spec as `validate` lists it (the first by
/// default, or `--config N|HASH|LABEL`) and says which; before, it ran every `[[pipeline]]`
/// entry, which is no configuration of demo.toml.
#[test]
fn predict_spec_runs_the_configuration_validate_lists() {
    let tmp = tempfile::tempdir().unwrap();
    photo(tmp.path());
    std::fs::write(tmp.path().join("c.txt"), "background\nperson\ncar\n").unwrap();
    let demo = common::repo("experiments/demo.toml");
    let demo = demo.to_str().unwrap();
    let predict = |out: &str, extra: &[&str]| -> (Vec<u8>, String) {
        let mut args = vec!["predict", "--classes", "c.txt", "photo.png", "--out", out];
        args.extend(extra);
        let (_, stderr) = ok(&run(&args, tmp.path()));
        let probs = std::fs::read(tmp.path().join(out).join("photo.probs.npy")).unwrap();
        (probs, stderr)
    };
    let (first, stderr) = predict("a", &["--spec", demo]);
    assert!(
        stderr.contains("configuration #1 2746da4a6ebd (baseline)"),
        "{stderr}"
    );
    assert_eq!(
        first,
        predict("b", &["--spec", demo, "--config", "baseline"]).0
    );
    let (second, stderr) = predict("c", &["--spec", demo, "--config", "77194b6014d9"]);
    assert!(stderr.contains("configuration #2 77194b6014d9"), "{stderr}");
    // The label the console and summary.csv show selects it too.
    let (by_label, stderr) = predict(
        "c2",
        &[
            "--spec",
            demo,
            "--config",
            "+cliptrase correlation_temperature=0.05",
        ],
    );
    assert!(stderr.contains("configuration #2 77194b6014d9"), "{stderr}");
    assert_eq!(by_label, second);
    assert_ne!(first, second);
    // The same as the flags that describe configuration #2.
    let by_flags = predict(
        "d",
        &[
            "--model",
            "builtin:tiny-random",
            "--short-side",
            "224",
            "--logit-scale",
            "40",
            "--prob-thd",
            "0",
            "--pipeline",
            "cliptrase",
            "--set",
            "cliptrase.correlation_temperature=0.05",
        ],
    )
    .0;
    assert_eq!(second, by_flags);
    let bad_config = |selector: &str| {
        fails(&run(
            &[
                "predict",
                "--classes",
                "c.txt",
                "photo.png",
                "--out",
                "e",
                "--spec",
                demo,
                "--config",
                selector,
            ],
            tmp.path(),
        ))
    };
    let err = bad_config("+cliptrase");
    assert!(
        err.contains("2 configurations") && err.contains("#2 77194b6014d9"),
        "{err}"
    );
    let err = bad_config("9");
    assert!(
        err.contains("#5 d82c8a49a129") && err.contains("validate"),
        "{err}"
    );
}

/// An input that cannot be decoded, or is too thin to segment, stops predict before it writes
/// anything, naming every such file (before, the images before it were written and the rest
/// never ran).
#[test]
fn predict_checks_every_input_decodes_and_fits_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    image::RgbImage::from_pixel(40, 30, image::Rgb([1, 2, 3]))
        .save(tmp.path().join("ok.png"))
        .unwrap();
    image::RgbImage::from_pixel(500, 1, image::Rgb([1, 2, 3]))
        .save(tmp.path().join("thin.png"))
        .unwrap();
    std::fs::write(tmp.path().join("text.png"), "not an image").unwrap();
    let err = predict_fails_writing_nothing(tmp.path(), &["ok.png", "thin.png", "text.png"]);
    assert!(
        err.contains("2 input image(s)")
            && err.contains("thin.png: inference setting `short_side`")
            && err.contains("text.png")
            && err.contains("nothing was written"),
        "{err}"
    );
}

/// `eval` reads `predict`'s output directory as it is (`<stem>.pred.png`, overlays ignored),
/// and labels the numbers with the weights predict recorded in the PNGs: random weights are
/// never presented as a benchmark result.
#[test]
fn eval_scores_predict_s_outputs_and_keeps_their_weights_label() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("gt")).unwrap();
    for (name, w) in [("a", 40), ("b", 24)] {
        image::RgbImage::from_fn(w, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 70]))
            .save(tmp.path().join(format!("{name}.png")))
            .unwrap();
        let label = LabelMap::new(30, w as usize, vec![1; 30 * w as usize]).unwrap();
        save_label_png(tmp.path().join(format!("gt/{name}.png")), &label).unwrap();
    }
    std::fs::write(tmp.path().join("c.txt"), "background\nperson\n").unwrap();
    ok(&run(
        &[
            "predict",
            "--model",
            "builtin:tiny-random",
            "--classes",
            "c.txt",
            "a.png",
            "b.png",
            "--out",
            "pred",
        ],
        tmp.path(),
    ));
    let (stdout, _) = ok(&run(
        &[
            "eval",
            "--gt",
            "gt",
            "--classes",
            "c.txt",
            "--pred",
            "pred",
            "--out",
            "ev",
        ],
        tmp.path(),
    ));
    assert!(
        stdout.contains("2 images scored")
            && stdout.contains("[synthetic weights, custom data: not a benchmark result]"),
        "{stdout}"
    );
    let mut rd = csv::Reader::from_path(tmp.path().join("ev/summary.csv")).unwrap();
    let h = rd.headers().unwrap().clone();
    let row = rd.records().next().unwrap().unwrap();
    let col = |n: &str| row[h.iter().position(|c| c == n).unwrap()].to_string();
    assert_eq!(
        (col("weights"), col("model_id")),
        ("synthetic".into(), "builtin:tiny-random".into())
    );
    // Beside other <id>.png files the choice is the user's: an error until --pred-suffix.
    std::fs::copy(tmp.path().join("gt/a.png"), tmp.path().join("pred/a.png")).unwrap();
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--gt", "gt", "--classes", "c.txt", "--pred", "pred"];
        args.extend(["--out", "ev2"]);
        args.extend(extra);
        run(&args, tmp.path())
    };
    let err = fails(&eval(&[]));
    assert!(
        err.contains("both") && err.contains("--pred-suffix"),
        "{err}"
    );
    let (stdout, _) = ok(&eval(&["--pred-suffix", ".pred.png"]));
    assert!(stdout.contains("2 images scored"), "{stdout}");
    // The other choice: the one plain a.png (b has only its .pred.png).
    let (stdout, _) = ok(&eval(&["--pred-suffix", ".png"]));
    assert!(stdout.contains("1 images scored"), "{stdout}");
}

/// Errors about predictions call them predictions (not labels) and give a prediction's hint;
/// `--out` naming a file and `data prepare --from` naming a file say so.
#[test]
fn eval_and_prepare_errors_name_what_the_file_is() {
    let tmp = tempfile::tempdir().unwrap();
    for d in ["gt", "pred", "junk"] {
        std::fs::create_dir(tmp.path().join(d)).unwrap();
    }
    let label = LabelMap::new(4, 5, vec![1; 20]).unwrap();
    save_label_png(tmp.path().join("gt/a.png"), &label).unwrap();
    save_label_png(
        tmp.path().join("pred/a.png"),
        &LabelMap::new(4, 5, vec![7; 20]).unwrap(),
    )
    .unwrap();
    std::fs::write(tmp.path().join("junk/a.png"), "garbage").unwrap();
    std::fs::write(tmp.path().join("c.txt"), "background\nperson\n").unwrap();
    let eval = |pred: &str, extra: &[&str]| {
        let mut args = vec!["eval", "--gt", "gt", "--classes", "c.txt", "--pred", pred];
        args.extend(extra);
        fails(&run(&args, tmp.path()))
    };
    let err = eval("pred", &["--out", "out"]);
    assert!(
        err.contains("pred/a.png") && err.contains("a prediction holds class ids 0–1"),
        "{err}"
    );
    let err = eval("junk", &["--out", "out"]);
    assert!(err.contains("cannot decode prediction PNG"), "{err}");
    std::fs::write(tmp.path().join("afile"), "").unwrap();
    let err = eval("pred", &["--out", "afile"]);
    assert!(err.contains("is a file, not a directory"), "{err}");
    let err = fails(&run(
        &["data", "prepare", "voc21", "--from", "afile", "--root", "r"],
        tmp.path(),
    ));
    assert!(err.contains("this is a file"), "{err}");
}

/// A release with a label missing prepares what it can, then fails saying the layout is
/// incomplete (it reported success before).
#[test]
fn prepare_of_an_incomplete_release_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let rel = tmp.path().join("VOC2012");
    for d in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
        std::fs::create_dir_all(rel.join(d)).unwrap();
    }
    for id in ["a", "b"] {
        image::RgbImage::from_pixel(5, 4, image::Rgb([1, 2, 3]))
            .save(rel.join(format!("JPEGImages/{id}.jpg")))
            .unwrap();
    }
    save_label_png(
        rel.join("SegmentationClass/a.png"),
        &LabelMap::new(4, 5, vec![0; 20]).unwrap(),
    )
    .unwrap();
    std::fs::write(rel.join("ImageSets/Segmentation/val.txt"), "a\nb\n").unwrap();
    let out = run(
        &[
            "data", "prepare", "voc21", "--from", "VOC2012", "--root", "prepared",
        ],
        tmp.path(),
    );
    let err = fails(&out);
    assert!(
        err.contains("incomplete") && err.contains("1 missing file(s)"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SegmentationClass/b.png"), "{stdout}");
}

/// `data list` names every dataset a spec can use, the synthetic one included.
#[test]
fn data_list_includes_the_synthetic_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let (stdout, _) = ok(&run(&["data", "list"], tmp.path()));
    for name in ["voc21", "coco-stuff164k", "ade20k", "synthetic", "custom"] {
        assert!(stdout.contains(name), "{name}: {stdout}");
    }
}

/// `data check --spec SPEC` checks the dataset a spec sweeps, a custom one included (before,
/// custom datasets could not be checked at all).
#[test]
fn data_check_takes_a_spec_s_custom_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    segsweep_data::write_synthetic(&tmp.path().join("shapes"), 3, 0).unwrap();
    let spec = "[experiment]\nname = \"c\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"custom\"\n[dataset.custom]\nname = \"shapes\"\nroot = \"shapes\"\nimg_suffix = \".png\"\nclasses = \"classes.txt\"\n";
    std::fs::write(tmp.path().join("c.toml"), spec).unwrap();
    let (stdout, _) = ok(&run(&["data", "check", "--spec", "c.toml"], tmp.path()));
    assert!(stdout.contains("OK"), "{stdout}");
    std::fs::remove_file(tmp.path().join("shapes/labels/synth_0002.png")).unwrap();
    let out = run(&["data", "check", "--spec", "c.toml"], tmp.path());
    let err = fails(&out);
    assert!(err.contains("shapes of c.toml"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("synth_0002.png"),
        "the report names the missing label"
    );
}

/// Audit: a prediction PNG that is corrupt, truncated, RGB or of another size than its label
/// stopped `eval` with the decoder's text and no hint; `--pred` naming a file said "prediction
/// directory not found".
#[test]
fn eval_bad_prediction_pngs_get_a_hint_and_a_pred_file_is_called_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.txt"), "background\nperson\n").unwrap();
    std::fs::create_dir(tmp.path().join("gt")).unwrap();
    save_label_png(
        tmp.path().join("gt/a.png"),
        &LabelMap::new(4, 5, vec![1; 20]).unwrap(),
    )
    .unwrap();
    let good = std::fs::read(tmp.path().join("gt/a.png")).unwrap();
    for name in ["corrupt", "truncated", "rgb", "size"] {
        std::fs::create_dir(tmp.path().join(name)).unwrap();
        let p = tmp.path().join(name).join("a.png");
        match name {
            "corrupt" => std::fs::write(&p, "garbage").unwrap(),
            "truncated" => std::fs::write(&p, &good[..good.len() / 2]).unwrap(),
            "rgb" => image::RgbImage::new(5, 4).save(&p).unwrap(),
            _ => save_label_png(&p, &LabelMap::new(2, 2, vec![1; 4]).unwrap()).unwrap(),
        }
        let args = ["eval", "--gt", "gt", "--classes", "c.txt", "--pred", name];
        let err = fails(&run(&args, tmp.path()));
        assert!(
            err.contains(&format!("{name}/a.png"))
                && err.contains("hint: a prediction PNG holds one class id per pixel")
                && err.contains("--skip-bad"),
            "{name}: {err}"
        );
        // What the hint offers: --skip-bad lists the file and goes on; here it was the only
        // prediction, so nothing is scored, which is an error, not a table of n/a.
        let mut skip = args.to_vec();
        skip.extend(["--skip-bad", "--out", "ev"]);
        let out = run(&skip, tmp.path());
        let err = fails(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("skipped {name}/a.png")),
            "{stdout}"
        );
        assert!(
            err.contains("no prediction could be scored") && err.contains("hint"),
            "{err}"
        );
        assert!(!tmp.path().join("ev/summary.csv").exists());
    }
    std::fs::write(tmp.path().join("afile"), "").unwrap();
    let err = fails(&run(
        &[
            "eval",
            "--gt",
            "gt",
            "--classes",
            "c.txt",
            "--pred",
            "afile",
        ],
        tmp.path(),
    ));
    assert!(
        err.contains("--pred afile: is a file, not a directory") && err.contains("hint"),
        "{err}"
    );
}

/// Write a float32 `(C, H, W)` .npy and a matching image into `dir`.
fn crf_inputs(dir: &Path, probs: &str, value: impl Fn(usize) -> f32) {
    use segsweep_plugin_densecrf::npy::{write_map_npy, Map3};
    let (c, h, w) = (2, 4, 5);
    image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([9, 9, 9]))
        .save(dir.join("img.png"))
        .unwrap();
    let map = Map3 {
        data: (0..c * h * w).map(value).collect(),
        shape: (c, h, w),
    };
    write_map_npy(&dir.join(probs), &map).unwrap();
}

/// Audit: `densecrf` took logits (values 3–53) as probabilities without a word; its parameter
/// errors named the plugin key (`parameter \`iterations\``) instead of the flag, without a hint;
/// an undecodable `--image` did not say which flag it came from.
#[test]
fn densecrf_rejects_logits_and_names_the_flag_of_a_bad_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    crf_inputs(dir, "p.npy", |_| 0.5);
    // A softmax's rounding above 1 is accepted.
    crf_inputs(dir, "round.npy", |i| if i == 3 { 1.0004 } else { 0.5 });
    crf_inputs(dir, "logits.npy", |i| 3.0 + (i % 50) as f32);
    let crf = |probs: &str, extra: &[&str]| {
        let mut args = vec![
            "densecrf", "--image", "img.png", "--probs", probs, "--out", "q.npy",
        ];
        args.extend(extra);
        run(&args, dir)
    };
    ok(&crf("p.npy", &[]));
    ok(&crf("round.npy", &[]));
    let err = fails(&crf("logits.npy", &[]));
    assert!(
        err.contains("logits.npy")
            && err.contains("value 3 at (class 0, y 0, x 0) is above 1")
            && err.contains("hint: pass softmax probabilities, not logits"),
        "{err}"
    );
    let err = fails(&crf("p.npy", &["--iterations", "100000"]));
    assert!(
        err.contains("--iterations: 100000 is out of range [0, 200]") && err.contains("hint"),
        "{err}"
    );
    let err = fails(&crf("p.npy", &["--bilateral-srgb", "0"]));
    assert!(err.contains("--bilateral-srgb: 0 is out of range"), "{err}");
    let err = fails(&crf("p.npy", &["--preset", "foo"]));
    assert!(
        err.contains("--preset: unknown preset `foo`")
            && err.contains("hint: --preset takes one of: pydensecrf, deeplab"),
        "{err}"
    );
    std::fs::write(dir.join("bad.png"), "not an image").unwrap();
    let err = fails(&run(
        &[
            "densecrf", "--image", "bad.png", "--probs", "p.npy", "--out", "q.npy",
        ],
        dir,
    ));
    assert!(
        err.contains("--image: bad.png: cannot decode image") && err.contains("hint: --image"),
        "{err}"
    );
}

/// Audit: `predict --out FILE` loaded the model, then said only `cannot create output
/// directory: File exists`.
#[test]
fn predict_out_naming_a_file_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.txt"), "background\nperson\n").unwrap();
    std::fs::write(tmp.path().join("afile"), "").unwrap();
    image::RgbImage::from_pixel(8, 6, image::Rgb([1, 2, 3]))
        .save(tmp.path().join("ok.png"))
        .unwrap();
    for (out, text) in [
        ("afile", "--out afile: is a file, not a directory"),
        (
            "afile/sub",
            "--out afile/sub: afile is a file, not a directory",
        ),
    ] {
        let err = fails(&run(
            &[
                "predict",
                "--model",
                "builtin:tiny-random",
                "--classes",
                "c.txt",
                "ok.png",
                "--out",
                out,
            ],
            tmp.path(),
        ));
        assert!(
            err.contains(text) && err.contains("hint: --out is the directory"),
            "{err}"
        );
        assert!(
            !err.contains("synthetic weights"),
            "the model must not load first: {err}"
        );
    }
}

/// `predict --spec` without `--classes` takes the class list of the configuration's dataset
/// (here the synthetic one), as the sweep prompts with it; without `--spec` `--classes` is
/// required, with a hint.
#[test]
fn predict_spec_takes_the_dataset_s_classes_when_none_are_given() {
    let tmp = tempfile::tempdir().unwrap();
    photo(tmp.path());
    let names = segsweep_data::synthetic_classes().to_text();
    std::fs::write(tmp.path().join("synth.txt"), names).unwrap();
    let demo = common::repo("experiments/demo.toml");
    let demo = demo.to_str().unwrap();
    let probs = |out: &str| std::fs::read(tmp.path().join(out).join("photo.probs.npy")).unwrap();
    ok(&run(
        &["predict", "--spec", demo, "photo.png", "--out", "a"],
        tmp.path(),
    ));
    ok(&run(
        &[
            "predict",
            "--spec",
            demo,
            "--classes",
            "synth.txt",
            "photo.png",
            "--out",
            "b",
        ],
        tmp.path(),
    ));
    assert_eq!(probs("a"), probs("b"));
    let err = fails(&run(
        &[
            "predict",
            "--model",
            "builtin:tiny-random",
            "photo.png",
            "--out",
            "c",
        ],
        tmp.path(),
    ));
    assert!(
        err.contains("--classes is required without --spec") && err.contains("hint"),
        "{err}"
    );
}

/// `predict` makes the checks a sweep makes once the model is loaded: a layer beyond the model
/// is an error naming the plugin's pipeline entry, before any output.
#[test]
fn predict_names_a_plugin_that_needs_a_layer_beyond_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    photo(tmp.path());
    std::fs::write(tmp.path().join("c.txt"), "background\nperson\n").unwrap();
    let err = fails(&run(
        &[
            "predict",
            "--model",
            "builtin:tiny-random",
            "--classes",
            "c.txt",
            "--pipeline",
            "cliptrase",
            "--set",
            "cliptrase.variant=paper",
            "--set",
            "cliptrase.correlation_layer=64",
            "photo.png",
            "--out",
            "o",
        ],
        tmp.path(),
    ));
    assert!(
        err.contains("pipeline entry `cliptrase`") && err.contains("layer 64"),
        "{err}"
    );
    assert!(!tmp.path().join("o/photo.pred.png").exists());
}

/// A 32×48 (h×w) test photo, `dir/photo.png`.
fn photo(dir: &Path) {
    image::RgbImage::from_fn(48, 32, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 90]))
        .save(dir.join("photo.png"))
        .unwrap();
}

/// With the class list of a spec's dataset, `predict` also takes its background class, as the
/// sweep does: VOC20 has none, so `area_thd` counts class 0 (aeroplane) as foreground; the same
/// as its class file with `--no-background`, not as that file with class 0 as background.
#[test]
fn predict_spec_takes_the_dataset_s_background_class_with_its_classes() {
    let tmp = tempfile::tempdir().unwrap();
    photo(tmp.path());
    std::fs::write(
        tmp.path().join("voc20.toml"),
        "[experiment]\nname = \"v\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"voc20\"\nshort_side = 224\n[inference]\nprob_thd = 0.0\narea_thd = 0.05\n",
    )
    .unwrap();
    let voc20 = common::repo("crates/data/classnames/voc20.txt");
    let pred = |out: &str, extra: &[&str]| -> Vec<u8> {
        let mut args = vec!["predict", "--spec", "voc20.toml", "photo.png", "--out", out];
        args.extend(extra);
        ok(&run(&args, tmp.path()));
        std::fs::read(tmp.path().join(out).join("photo.pred.png")).unwrap()
    };
    let from_spec = pred("a", &[]);
    let file = voc20.to_str().unwrap();
    assert_eq!(
        from_spec,
        pred("b", &["--classes", file, "--no-background"])
    );
    assert_ne!(from_spec, pred("c", &["--classes", file]));
}
