//! End-to-end tests of the `segsweep` binary on temporary directories, with the built-in tiny
//! random-weight CLIP and the built-in synthetic dataset (every number they produce is labelled
//! synthetic; they test the machinery, not segmentation quality).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../crates/cli/tests/common/mod.rs"]
mod common;
use common::{fails, run};

fn bin() -> Command {
    common::segsweep()
}

/// Stdout of a run that must have succeeded.
#[track_caller]
fn ok(out: &Output) -> String {
    common::ok(out).0
}

/// variants (baseline, +pamr) × one grid parameter (prob_thd): 2×2 configurations.
const SPEC_2X2: &str = r#"
[experiment]
name = "e2e"
output_dir = "out"

[model]
source = "builtin:tiny-random"

[dataset]
name = "synthetic"
synthetic_images = 3
short_side = 224

[inference]
batch_size = 4

[[pipeline]]
plugin = "pamr"
steps = 2

[sweep]
baseline = "baseline"

[sweep.grid]
"inference.prob_thd" = [0.0, 0.2]

[[sweep.variants]]
name = "baseline"
pipeline = []

[[sweep.variants]]
name = "+pamr"
"#;

fn write_spec(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run_dir(root: &Path) -> PathBuf {
    let exp = root.join("out/e2e");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&exp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.remove(0)
}

fn summary_rows(dir: &Path) -> Vec<csv::StringRecord> {
    let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    r.records().map(|x| x.unwrap()).collect()
}

/// The index of `name` in summary.csv's header.
fn summary_col(dir: &Path, name: &str) -> usize {
    let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    h.iter().position(|x| x == name).unwrap()
}

fn metric_columns(dir: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let cols = [
        "config_hash",
        "miou_pct",
        "person_iou_pct",
        "aacc_pct",
        "macc_pct",
        "fwiou_pct",
    ];
    let idx: Vec<usize> = cols
        .iter()
        .map(|c| h.iter().position(|x| x == *c).unwrap())
        .collect();
    r.records()
        .map(|x| {
            let x = x.unwrap();
            idx.iter().map(|&i| x[i].to_string()).collect()
        })
        .collect()
}

#[test]
fn sweep_2x2_writes_tables_counts_and_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "spec.toml", SPEC_2X2);
    let stdout = ok(&run(
        &["sweep", spec.to_str().unwrap(), "--quiet"],
        tmp.path(),
    ));
    assert!(stdout.contains("not a benchmark result"), "{stdout}");
    let dir = run_dir(tmp.path());

    let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    for col in [
        "run_id",
        "config_hash",
        "variant",
        "inference.prob_thd",
        "dataset",
        "images",
        "miou_pct",
        "person_iou_pct",
        "aacc_pct",
        "macc_pct",
        "fwiou_pct",
        "seconds",
        "ms_per_image",
        "model_id",
        "model_file_hash",
        "device",
        "dtype",
        "segsweep_version",
        "git_rev",
        "weights",
        "kernels",
    ] {
        assert!(
            header.iter().any(|h| h == col),
            "summary.csv lacks {col}: {header:?}"
        );
    }
    let rows = summary_rows(&dir);
    assert_eq!(rows.len(), 4);
    let kernels = header.iter().position(|h| h == "kernels").unwrap();
    assert!(rows.iter().all(|r| &r[kernels] == "cpu"), "{rows:?}");
    let weights = header.iter().position(|h| h == "weights").unwrap();
    let images = header.iter().position(|h| h == "images").unwrap();
    let miou = header.iter().position(|h| h == "miou_pct").unwrap();
    for row in &rows {
        assert_eq!(&row[weights], "synthetic");
        assert_eq!(&row[images], "3");
        let m: f64 = row[miou].parse().unwrap();
        assert!((0.0..=100.0).contains(&m));
    }
    let variant = header.iter().position(|h| h == "variant").unwrap();
    assert_eq!(rows.iter().filter(|r| &r[variant] == "baseline").count(), 2);
    // Thresholds change predictions: with random weights many pixels' top probability is below
    // 0.2, and prob_thd 0.2 sends those to class 0, so each variant's metrics differ between
    // prob_thd 0.0 and 0.2 (the class-0 counts are checked below).
    let thd = header
        .iter()
        .position(|h| h == "inference.prob_thd")
        .unwrap();
    let metric_cols: Vec<usize> = ["miou_pct", "aacc_pct", "macc_pct", "fwiou_pct"]
        .iter()
        .map(|c| header.iter().position(|h| h == c).unwrap())
        .collect();
    for v in ["baseline", "+pamr"] {
        let metrics = |t: &str| -> Vec<&str> {
            let row = rows
                .iter()
                .find(|r| &r[variant] == v && &r[thd] == t)
                .unwrap_or_else(|| panic!("no `{v}` row at prob_thd {t}: {rows:?}"));
            metric_cols.iter().map(|&i| &row[i]).collect()
        };
        assert_ne!(
            metrics("0.0"),
            metrics("0.2"),
            "{v}: prob_thd had no effect"
        );
    }

    let per_class = std::fs::read_to_string(dir.join("per_class.csv")).unwrap();
    let n_classes = per_class
        .lines()
        .skip(1)
        .filter(|l| l.contains(&rows[0][1]))
        .count();
    assert!(n_classes >= 3);
    assert_eq!(per_class.lines().count(), 1 + 4 * n_classes);

    let counts: Vec<PathBuf> = std::fs::read_dir(dir.join("counts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(counts.len(), 4, "{counts:?}");
    // Pixels predicted as class 0, by (variant, prob_thd).
    let mut class0 = std::collections::BTreeMap::new();
    for c in &counts {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(c).unwrap()).unwrap();
        let inter = v["counts"]["intersect"].as_array().unwrap();
        let label = v["counts"]["label"].as_array().unwrap();
        assert_eq!(inter.len(), n_classes);
        let total: u64 = label.iter().map(|x| x.as_u64().unwrap()).sum();
        assert!(total > 0, "no labelled pixel counted in {}", c.display());
        let key = (
            v["variant"].as_str().unwrap().to_string(),
            v["swept"][0]["value"].as_str().unwrap().to_string(),
        );
        class0.insert(key, v["counts"]["pred"][0].as_u64().unwrap());
    }
    // So prob_thd 0.2 predicts class 0 on more pixels than 0.0 (on this fixture 2390 → 2645
    // for the baseline, 444 → 729 with PAMR).
    for v in ["baseline", "+pamr"] {
        let at = |t: &str| class0[&(v.to_string(), t.to_string())];
        assert!(
            at("0.2") > at("0.0"),
            "{v}: class 0 predicted on {} pixels at prob_thd 0.2, {} at 0.0",
            at("0.2"),
            at("0.0")
        );
    }
    assert_eq!(std::fs::read_dir(dir.join("configs")).unwrap().count(), 4);
    assert!(dir.join("spec.toml").exists());

    for stem in ["overall", "per_class", "delta", "param_inference_prob_thd"] {
        let png = dir.join("charts").join(format!("{stem}.png"));
        let img = image::open(&png)
            .unwrap_or_else(|e| panic!("{}: {e}", png.display()))
            .to_rgb8();
        assert!(img.width() > 300 && img.height() > 200);
        assert!(
            img.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 2000,
            "{} is blank",
            png.display()
        );
        let svg = std::fs::read_to_string(dir.join("charts").join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<text"));
    }
}

#[test]
fn interrupted_sweep_resumes_to_identical_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "spec.toml", SPEC_2X2);
    let spec = spec.to_str().unwrap();
    // Uninterrupted reference run in another run directory.
    ok(&run(
        &["sweep", spec, "--quiet", "--run-id", "reference"],
        tmp.path(),
    ));
    let reference = metric_columns(&tmp.path().join("out/e2e/reference"));

    // Stop after 2 of the 3 images of the first group, as Ctrl-C would.
    let err = fails(&run(
        &[
            "sweep",
            spec,
            "--quiet",
            "--run-id",
            "resumed",
            "--no-reuse",
            "--stop-after-images",
            "2",
        ],
        tmp.path(),
    ));
    assert!(
        err.contains("interrupted") && err.contains("resume"),
        "{err}"
    );
    let dir = tmp.path().join("out/e2e/resumed");
    let partials = std::fs::read_dir(dir.join("counts"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".partial.json")
        })
        .count();
    assert!(
        partials > 0,
        "no checkpoint written before the interruption"
    );
    let out = ok(&run(
        &[
            "sweep",
            spec,
            "--quiet",
            "--run-id",
            "resumed",
            "--no-reuse",
        ],
        tmp.path(),
    ));
    assert!(out.contains("4 configuration(s)"), "{out}");
    assert_eq!(metric_columns(&dir), reference);

    // A third run finds everything finished and computes nothing.
    let out = ok(&run(
        &[
            "sweep",
            spec,
            "--quiet",
            "--run-id",
            "resumed",
            "--no-reuse",
        ],
        tmp.path(),
    ));
    assert!(out.contains("0 computed, 4 already finished"), "{out}");
}

/// The hash covers plugin parameters and plugin versions, not code: resuming results that
/// another build of segsweep wrote keeps them, with a warning saying so and what to do.
#[test]
fn resuming_another_build_s_results_warns_and_plugin_versions_are_hashed() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "spec.toml", SPEC_2X2);
    let spec = spec.to_str().unwrap();
    let args = ["sweep", spec, "--quiet", "--run-id", "r"];
    let (stdout, stderr) = common::ok(&run(&args, tmp.path()));
    assert!(stdout.contains("4 computed"), "{stdout}");
    assert!(!stderr.contains("git revision"), "{stderr}");
    let dir = tmp.path().join("out/e2e/r");
    let configs: Vec<String> = std::fs::read_dir(dir.join("configs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(configs.len(), 4);
    let with_pamr = configs
        .iter()
        .filter(|t| t.contains("plugin = \"pamr\""))
        .count();
    let versioned = configs
        .iter()
        .filter(|t| t.contains("plugin_version = 1"))
        .count();
    assert_eq!((with_pamr, versioned), (2, 2), "{configs:?}");
    // The records now claim another revision, as after `git pull` and a rebuild.
    let rev = summary_rows(&dir)[0][summary_col(&dir, "git_rev")].to_string();
    for e in std::fs::read_dir(dir.join("counts")).unwrap() {
        let path = e.unwrap().path();
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["git_rev"] = "0123456789ab".into();
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    }
    let (stdout, stderr) = common::ok(&run(&args, tmp.path()));
    assert!(
        stdout.contains("0 computed, 4 already finished"),
        "{stdout}"
    );
    if rev == "unknown" {
        // Built outside a git checkout: there is nothing to compare with.
        assert!(!stderr.contains("git revision"), "{stderr}");
    } else {
        assert!(
            stderr.contains("git revision 0123456789ab") && stderr.contains("`version`"),
            "{stderr}"
        );
    }
}

#[test]
fn plot_redraws_charts_from_saved_results() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "spec.toml", SPEC_2X2);
    ok(&run(
        &["sweep", spec.to_str().unwrap(), "--quiet"],
        tmp.path(),
    ));
    let dir = run_dir(tmp.path());
    std::fs::remove_dir_all(dir.join("charts")).unwrap();
    std::fs::remove_file(dir.join("summary.csv")).unwrap();
    ok(&run(&["plot", dir.to_str().unwrap()], tmp.path()));
    assert!(dir.join("charts/overall.png").exists() && dir.join("charts/delta.svg").exists());
    assert_eq!(summary_rows(&dir).len(), 4);
}

#[test]
fn plugins_lists_every_registered_plugin_sorted() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(&run(&["plugins"], tmp.path()));
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "clip-rc",
            "cliptrase",
            "densecrf",
            "loftup",
            "pamr",
            "resclip"
        ]
    );
    let one = ok(&run(&["plugins", "cliptrase"], tmp.path()));
    assert!(
        one.contains("correlation_temperature") && one.contains("phase2a") && one.contains("paper"),
        "{one}"
    );
    let err = fails(&run(&["plugins", "cliptrace"], tmp.path()));
    assert!(err.contains("did you mean `cliptrase`"), "{err}");
}

#[test]
fn every_shipped_experiment_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut n = 0;
    for e in std::fs::read_dir(root.join("experiments")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = ok(&run(&["validate", p.to_str().unwrap()], &root));
            assert!(out.contains("configuration(s)"), "{out}");
            n += 1;
        }
    }
    assert!(n >= 7, "expected the 7 shipped specs, found {n}");
}

#[test]
fn predict_writes_probs_labels_and_overlay_for_a_non_square_image() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(150, 97, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 90])
    });
    let path = tmp.path().join("photo.png");
    img.save(&path).unwrap();
    std::fs::write(
        tmp.path().join("classes.txt"),
        "sky, wall\nperson, person in shirt\ncar\n",
    )
    .unwrap();
    let out = tmp.path().join("pred");
    ok(&bin()
        .args([
            "predict",
            "--model",
            "builtin:tiny-random",
            "--classes",
            "classes.txt",
            "photo.png",
            "--out",
            "pred",
            "--short-side",
            "224",
            "--pipeline",
            "pamr",
            "--set",
            "pamr.steps=1",
        ])
        .current_dir(tmp.path())
        .env("SEGSWEEP_CACHE", tmp.path().join("cache"))
        .output()
        .unwrap());
    let probs = std::fs::read(out.join("photo.probs.npy")).unwrap();
    let header = String::from_utf8_lossy(&probs[..128]);
    assert!(
        header.contains("'descr': '<f4'") && header.contains("(3, 97, 150)"),
        "{header}"
    );
    let pred = image::open(out.join("photo.pred.png")).unwrap().to_luma8();
    assert_eq!(pred.dimensions(), (150, 97));
    assert!(pred.pixels().all(|p| p.0[0] < 3));
    assert_eq!(
        image::open(out.join("photo.overlay.png")).unwrap().width(),
        150
    );
}

// ---- bad input: one test per case; each names the file, the key and a hint, writes no result.

/// Runs `segsweep sweep` on `spec_text` in a fresh temporary directory and expects it to fail.
/// Returns the error text and the directory's guard: keep it bound (`_tmp`) so the directory
/// lives as long as the test and is removed afterwards.
fn bad(spec_text: &str) -> (String, tempfile::TempDir) {
    let guard = tempfile::tempdir().unwrap();
    let tmp = guard.path();
    let spec = write_spec(tmp, "bad.toml", spec_text);
    let err = fails(&run(&["sweep", spec.to_str().unwrap(), "--quiet"], tmp));
    assert!(
        err.contains("bad.toml"),
        "error does not name the file: {err}"
    );
    assert!(
        !tmp.join("out/e2e").exists()
            || std::fs::read_dir(tmp.join("out/e2e")).unwrap().all(|d| !d
                .unwrap()
                .path()
                .join("summary.csv")
                .exists()),
        "a failed spec wrote results"
    );
    (err, guard)
}

const HEAD: &str = "[experiment]\nname = \"e2e\"\noutput_dir = \"out\"\n[model]\nsource = \"builtin:tiny-random\"\n";

#[test]
fn bad_input_malformed_toml() {
    let (err, _tmp) = bad(&format!("{HEAD}[inference\nmode = \"slide\"\n"));
    assert!(
        err.contains("malformed TOML") && err.contains("line"),
        "{err}"
    );
}

#[test]
fn bad_input_unknown_key() {
    let (err, _tmp) = bad(&format!("{HEAD}[inference]\nprob_thrd = 0.1\n"));
    assert!(
        err.contains("inference") && err.contains("prob_thrd") && err.contains("hint"),
        "{err}"
    );
}

#[test]
fn bad_input_unknown_plugin() {
    let (err, _tmp) = bad(&format!("{HEAD}[[pipeline]]\nplugin = \"cliptrace\"\n"));
    assert!(
        err.contains("pipeline[0].plugin") && err.contains("did you mean `cliptrase`"),
        "{err}"
    );
}

#[test]
fn bad_input_wrong_type() {
    let (err, _tmp) = bad(&format!("{HEAD}[inference]\ncrop = \"big\"\n"));
    assert!(
        err.contains("inference.crop") && err.contains("hint"),
        "{err}"
    );
}

#[test]
fn bad_input_out_of_range_plugin_value() {
    let (err, _tmp) = bad(&format!(
        "{HEAD}[[pipeline]]\nplugin = \"cliptrase\"\ncorrelation_temperature = 50.0\n"
    ));
    assert!(
        err.contains("correlation_temperature")
            && err.contains("out of range")
            && err.contains("cliptrase"),
        "{err}"
    );
}

#[test]
fn bad_input_empty_sweep() {
    let (err, _tmp) = bad(&format!(
        "{HEAD}[sweep.grid]\n\"inference.prob_thd\" = []\n"
    ));
    assert!(
        err.contains("inference.prob_thd") && err.contains("nothing"),
        "{err}"
    );
}

#[test]
fn bad_input_duplicate_sweep() {
    let (err, _tmp) = bad(&format!(
        "{HEAD}[sweep.grid]\n\"inference.prob_thd\" = [0.1, 0.1]\n"
    ));
    assert!(
        err.contains("appears twice") && err.contains("duplicate"),
        "{err}"
    );
    let (err, _tmp) = bad(&format!(
        "{HEAD}[[sweep.variants]]\nname = \"a\"\n[[sweep.variants]]\nname = \"b\"\n"
    ));
    assert!(err.contains("identical settings"), "{err}");
}

#[test]
fn bad_input_stage_order_names_both_plugins() {
    let (err, _tmp) = bad(&format!(
        "{HEAD}[[pipeline]]\nplugin = \"pamr\"\n[[pipeline]]\nplugin = \"cliptrase\"\n"
    ));
    assert!(
        err.contains("`cliptrase`") && err.contains("`pamr`") && err.contains("data flow"),
        "{err}"
    );
}

#[test]
fn bad_input_unwritable_output_directory() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("blocker"),
        "a file where a directory should be",
    )
    .unwrap();
    let spec = write_spec(
        tmp.path(),
        "bad.toml",
        &format!("{HEAD}[dataset]\nsynthetic_images = 1\n")
            .replace("output_dir = \"out\"", "output_dir = \"blocker/out\""),
    );
    let err = fails(&run(
        &["sweep", spec.to_str().unwrap(), "--quiet"],
        tmp.path(),
    ));
    assert!(
        err.contains("blocker") && err.contains("output_dir"),
        "{err}"
    );
}

#[test]
fn imagenet_normalisation_changes_the_crops_and_is_part_of_the_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(
        tmp.path(),
        "spec.toml",
        &SPEC_2X2.replace(
            "[sweep.grid]\n\"inference.prob_thd\" = [0.0, 0.2]",
            "[sweep.grid]\n\"model.normalisation\" = [\"clip\", \"imagenet\"]",
        ),
    );
    ok(&run(
        &["sweep", spec.to_str().unwrap(), "--quiet"],
        tmp.path(),
    ));
    let rows = metric_columns(&run_dir(tmp.path()));
    assert_eq!(rows.len(), 4);
    // Same variant, other normalisation: another configuration with other numbers.
    assert_ne!(rows[0][0], rows[1][0]);
    assert_ne!(rows[0][1..], rows[1][1..], "normalisation had no effect");
}

/// N from the "N configuration(s)" line a sweep prints (parsed whole, so 14 is not read as 4).
fn configurations(out: &str) -> usize {
    let end = out
        .find(" configuration(s)")
        .unwrap_or_else(|| panic!("no \"configuration(s)\" in the output: {out}"));
    let n = out[..end]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap();
    n.parse()
        .unwrap_or_else(|e| panic!("`{n}` before \"configuration(s)\": {e}; output: {out}"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn shipped_phase_specs_run_through_the_runner_on_synthetic_stand_ins() {
    // The real specs need CLIP ViT-B/16, COCO-Stuff/VOC and LoftUp's checkpoint; here the same
    // pipelines run on the tiny random model, the synthetic set and the tiny LoftUp fixture.
    let tmp = tempfile::tempdir().unwrap();
    let root = repo_root();
    let loftup = root.join("tests/fixtures/loftup/tiny_loftup.bin");
    // Configurations per spec: its variants (phase1 has a fifth, the faithful-LoftUp one).
    for (spec, loftup_set, n_configs) in [
        ("phase2a", false, 4),
        ("phase1", true, 5),
        ("full", true, 4),
    ] {
        let path = root.join(format!("experiments/{spec}.toml"));
        let mut args = vec![
            "sweep".to_string(),
            path.display().to_string(),
            "--quiet".into(),
            "--set".into(),
            "model.source=builtin:tiny-random".into(),
            "--set".into(),
            "dataset.name=synthetic".into(),
            "--set".into(),
            "dataset.synthetic_images=1".into(),
            "--set".into(),
            format!("experiment.output_dir={}", tmp.path().join("out").display()),
        ];
        if loftup_set {
            args.extend([
                "--set".into(),
                format!("loftup.checkpoint={}", loftup.display()),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ok(&run(&args, &root));
        assert_eq!(configurations(&out), n_configs, "{spec}: {out}");
        assert!(out.contains("synthetic weights"), "{spec}: {out}");
    }
}

#[test]
fn predict_resolves_a_repo_id_from_the_local_hugging_face_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp
        .path()
        .join("hf/hub/models--segsweep--tiny-clip/snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(tmp.path().join("hf/hub/models--segsweep--tiny-clip/refs")).unwrap();
    std::fs::write(
        tmp.path()
            .join("hf/hub/models--segsweep--tiny-clip/refs/main"),
        "0123abcd",
    )
    .unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            repo_root().join("tests/fixtures/tiny-clip").join(f),
            snap.join(f),
        )
        .unwrap();
    }
    image::RgbImage::from_fn(90, 130, |x, y| image::Rgb([x as u8, y as u8, 40]))
        .save(tmp.path().join("a.png"))
        .unwrap();
    std::fs::write(tmp.path().join("c.txt"), "background\nperson\n").unwrap();
    let out = bin()
        .args([
            "predict",
            "--model",
            "segsweep/tiny-clip",
            "--classes",
            "c.txt",
            "a.png",
            "--out",
            "p",
            "--short-side",
            "224",
        ])
        .current_dir(tmp.path())
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .env("SEGSWEEP_CACHE", tmp.path().join("cache"))
        .output()
        .unwrap();
    ok(&out);
    assert!(tmp.path().join("p/a.probs.npy").exists() && tmp.path().join("p/a.pred.png").exists());
    // Absent from the cache while offline: a clear error that says how to get it.
    let out = bin()
        .args([
            "predict",
            "--model",
            "segsweep/absent",
            "--classes",
            "c.txt",
            "a.png",
            "--out",
            "p",
        ])
        .current_dir(tmp.path())
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = fails(&out);
    assert!(
        err.contains("segsweep/absent") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}

#[test]
fn eval_scores_a_directory_of_prediction_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    let (gt, pred) = (tmp.path().join("gt"), tmp.path().join("pred"));
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::write(tmp.path().join("classes.txt"), "background\nperson\ncar\n").unwrap();
    // 2 images, 3×4 (non-square); the prediction gets one person pixel wrong.
    let g = image::GrayImage::from_raw(4, 3, vec![0, 0, 1, 1, 0, 2, 1, 1, 255, 2, 2, 0]).unwrap();
    g.save(gt.join("a.png")).unwrap();
    g.save(gt.join("b.png")).unwrap();
    g.save(pred.join("a.png")).unwrap();
    let mut p = g.clone();
    p.put_pixel(2, 0, image::Luma([0]));
    p.save(pred.join("b.png")).unwrap();
    let out = ok(&run(
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
    assert!(out.contains("2 images scored"), "{out}");
    let mut r = csv::Reader::from_path(tmp.path().join("scores/summary.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let row = r.records().next().unwrap().unwrap();
    let get = |c: &str| {
        row[h.iter().position(|x| x == c).unwrap()]
            .parse::<f64>()
            .unwrap()
    };
    // person: I = 4 + 3 = 7, U = 8 → 87.5 %; background: I = 8, U = 9; car: I = U = 6.
    assert!((get("person_iou_pct") - 87.5).abs() < 1e-3);
    let miou = (100.0 * 8.0 / 9.0 + 87.5 + 100.0) / 3.0;
    assert!((get("miou_pct") - miou).abs() < 1e-3, "{}", get("miou_pct"));
    // A prediction of another size is an error naming the file.
    image::GrayImage::new(5, 3)
        .save(pred.join("a.png"))
        .unwrap();
    let err = fails(&run(
        &[
            "eval",
            "--gt",
            "gt",
            "--classes",
            "classes.txt",
            "--pred",
            "pred",
        ],
        tmp.path(),
    ));
    assert!(err.contains("a.png"), "{err}");
}

#[test]
fn densecrf_command_refines_a_probability_map_and_names_mismatched_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, w, c) = (37usize, 53usize, 3usize);
    // Left half red, right half blue; the probabilities are right on 70 % of pixels.
    let img = image::RgbImage::from_fn(w as u32, h as u32, |x, _| {
        if (x as usize) < w / 2 {
            image::Rgb([220, 20, 20])
        } else {
            image::Rgb([20, 20, 220])
        }
    });
    img.save(tmp.path().join("img.png")).unwrap();
    let mut p = ndarray::Array3::<f32>::zeros((c, h, w));
    for y in 0..h {
        for x in 0..w {
            // 70 % of pixels favour the true class, 30 % (scattered) the other one.
            let truth = usize::from(x >= w / 2);
            let right = (x * 7 + y * 13) % 10 < 7;
            let pt = if right { 0.55 } else { 0.35 };
            p[[truth, y, x]] = pt;
            p[[1 - truth, y, x]] = 0.95 - pt;
            p[[2, y, x]] = 0.05;
        }
    }
    ndarray_npy::write_npy(tmp.path().join("p.npy"), &p).unwrap();
    ok(&run(
        &[
            "densecrf", "--image", "img.png", "--probs", "p.npy", "--out", "q.npy", "--preset",
            "deeplab",
        ],
        tmp.path(),
    ));
    let q: ndarray::Array3<f32> = ndarray_npy::read_npy(tmp.path().join("q.npy")).unwrap();
    assert_eq!(q.dim(), (c, h, w));
    let argmax = |a: &ndarray::Array3<f32>, y: usize, x: usize| {
        (0..c)
            .max_by(|&i, &j| a[[i, y, x]].total_cmp(&a[[j, y, x]]))
            .unwrap()
    };
    let (mut before, mut after) = (0, 0);
    for y in 0..h {
        for x in 0..w {
            let sum: f32 = (0..c).map(|k| q[[k, y, x]]).sum();
            assert!(
                (sum - 1.0).abs() < 1e-4,
                "Q does not sum to 1 at ({y}, {x})"
            );
            let truth = if x < w / 2 { 0 } else { 1 };
            before += usize::from(argmax(&p, y, x) == truth);
            after += usize::from(argmax(&q, y, x) == truth);
        }
    }
    assert!(
        after > before,
        "CRF did not improve the labels: {before} → {after} of {}",
        h * w
    );
    // Probabilities of another size than the image: an error naming both files.
    ndarray_npy::write_npy(
        tmp.path().join("small.npy"),
        &ndarray::Array3::<f32>::ones((c, 10, 10)),
    )
    .unwrap();
    let err = fails(&run(
        &[
            "densecrf",
            "--image",
            "img.png",
            "--probs",
            "small.npy",
            "--out",
            "q2.npy",
        ],
        tmp.path(),
    ));
    assert!(
        err.contains("small.npy") && err.contains("img.png"),
        "{err}"
    );
    // Missing inputs are named together, with the flag each came from and a hint.
    let err = fails(&run(
        &[
            "densecrf", "--image", "gone.png", "--probs", "gone.npy", "--out", "q3.npy",
        ],
        tmp.path(),
    ));
    assert!(
        err.contains("--image gone.png (not found)")
            && err.contains("--probs gone.npy (not found)")
            && err.contains("hint"),
        "{err}"
    );
    // The output's directory is created.
    ok(&run(
        &[
            "densecrf",
            "--image",
            "img.png",
            "--probs",
            "p.npy",
            "--out",
            "new/dir/q.npy",
        ],
        tmp.path(),
    ));
    assert!(tmp.path().join("new/dir/q.npy").is_file());
}

/// Two attentions (two upstream keys, so the prefix is needed again) × two thresholds.
const SPEC_TWO_KEYS: &str = r#"
[experiment]
name = "e2e"
output_dir = "out"
[model]
source = "builtin:tiny-random"
[dataset]
name = "synthetic"
synthetic_images = 3
short_side = 224
[sweep.grid]
"inference.attention" = ["sclip", "naclip"]
"inference.prob_thd" = [0.0, 0.2]
"#;

/// `segsweep sweep SPEC --run-id ID --set …` in `root`; asserts its metric columns equal run
/// `baseline`'s and returns its `memory.json`.
fn sweep_like(
    root: &Path,
    spec: &str,
    id: &str,
    sets: &[&str],
    baseline: &str,
) -> serde_json::Value {
    // --no-reuse: computed, not copied from the baseline run (memory keys are not hashed).
    let mut args = vec!["sweep", spec, "--quiet", "--run-id", id, "--no-reuse"];
    for s in sets {
        args.extend(["--set", s]);
    }
    ok(&run(&args, root));
    let dir = root.join("out/e2e").join(id);
    assert_eq!(
        metric_columns(&dir),
        metric_columns(&root.join("out/e2e").join(baseline)),
        "{id}"
    );
    serde_json::from_str(&std::fs::read_to_string(dir.join("memory.json")).unwrap()).unwrap()
}

#[test]
fn issue_7_spilling_the_prefix_under_a_zero_budget_gives_identical_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "spec.toml", SPEC_TWO_KEYS);
    let spec = spec.to_str().unwrap();
    ok(&run(
        &["sweep", spec, "--quiet", "--run-id", "roomy"],
        tmp.path(),
    ));
    for (id, spill) in [("dropped", "none"), ("spilled", "f32")] {
        let spill_set = format!("experiment.spill={spill}");
        let sets = [
            "experiment.memory_budget_mb=0",
            spill_set.as_str(),
            "experiment.spill_dir=scratch",
        ];
        let memory = sweep_like(tmp.path(), spec, id, &sets, "roomy");
        // One image at a time, two upstream keys: the prefix is set aside once per image.
        let (spills, recomputes) = if spill == "none" { (0, 3) } else { (3, 0) };
        assert_eq!(memory["prefix_spills"], spills, "{memory}");
        assert_eq!(memory["prefix_recomputes"], recomputes, "{memory}");
    }
    // Scratch files are deleted once their image is done.
    let left = std::fs::read_dir(tmp.path().join("scratch"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[test]
fn issue_7_feature_cache_serves_a_second_sweep_with_identical_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(tmp.path(), "spec.toml", SPEC_TWO_KEYS);
    let spec = spec.to_str().unwrap();
    ok(&run(
        &["sweep", spec, "--quiet", "--run-id", "plain"],
        tmp.path(),
    ));
    for (id, hits, writes) in [("first", 0, 3), ("second", 3, 0)] {
        let sets = [
            "experiment.feature_cache=f32",
            "experiment.feature_cache_dir=features",
        ];
        let memory = sweep_like(tmp.path(), spec, id, &sets, "plain");
        assert_eq!(memory["feature_cache_hits"], hits, "{id}: {memory}");
        assert_eq!(memory["feature_cache_writes"], writes, "{id}: {memory}");
    }
    // One entry per image, kept after the runs.
    let entries = std::fs::read_dir(tmp.path().join("features"))
        .unwrap()
        .count();
    assert_eq!(entries, 3);
}

#[test]
fn bad_input_memory_settings_name_the_key() {
    for (line, key) in [
        ("memory_budget_mb = -5", "experiment.memory_budget_mb"),
        ("spill = \"f8\"", "experiment.spill"),
        ("feature_cache = \"on\"", "experiment.feature_cache"),
    ] {
        let text = SPEC_2X2.replacen(
            "output_dir = \"out\"",
            &format!("output_dir = \"out\"\n{line}"),
            1,
        );
        let (err, _tmp) = bad(&text);
        assert!(err.contains(key), "`{line}`: {err}");
    }
}

/// A custom dataset with an unreadable image in the middle of a batch of images: with
/// `skip_bad` it is skipped and counted, the images around it are scored, and batching the
/// crops of all images together gives the numbers of running them one crop at a time.
#[test]
fn issue_7_skip_bad_inside_a_batch_of_images_matches_one_image_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    std::fs::create_dir_all(data.join("labels")).unwrap();
    std::fs::write(data.join("classes.txt"), "background\nperson\n").unwrap();
    for (k, id) in ["a", "b", "c", "d"].iter().enumerate() {
        let k = k as u32;
        image::RgbImage::from_fn(130, 90, |x, y| {
            image::Rgb([(x * 2 + k * 40) as u8, (y * 3) as u8, (60 * k) as u8])
        })
        .save(data.join(format!("images/{id}.png")))
        .unwrap();
        image::GrayImage::from_fn(130, 90, |x, y| {
            image::Luma([u8::from((x + y + k).is_multiple_of(3))])
        })
        .save(data.join(format!("labels/{id}.png")))
        .unwrap();
    }
    std::fs::write(data.join("images/b.png"), b"not a png").unwrap();
    let spec = |batch: usize| {
        format!(
            r#"
[experiment]
name = "e2e"
output_dir = "out"
[model]
source = "builtin:tiny-random"
[dataset]
name = "custom"
short_side = 224
skip_bad = true
[dataset.custom]
name = "mine"
root = "data"
img_suffix = ".png"
classes = "classes.txt"
[inference]
batch_size = {batch}
"#
        )
    };
    let mut rows = Vec::new();
    for batch in [1, 64] {
        let path = write_spec(tmp.path(), &format!("b{batch}.toml"), &spec(batch));
        let id = format!("batch{batch}");
        ok(&run(
            &["sweep", path.to_str().unwrap(), "--quiet", "--run-id", &id],
            tmp.path(),
        ));
        let dir = tmp.path().join("out/e2e").join(&id);
        let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
        let h = r.headers().unwrap().clone();
        let rec = r.records().next().unwrap().unwrap();
        let col = |name: &str| rec[h.iter().position(|c| c == name).unwrap()].to_string();
        rows.push((
            col("images"),
            col("skipped"),
            col("miou_pct"),
            col("aacc_pct"),
        ));
        let memory: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("memory.json")).unwrap())
                .unwrap();
        // batch 1: one image per backbone batch; 64: the three readable images together.
        let expected = if batch == 1 { 3 } else { 1 };
        assert_eq!(memory["image_batches"], expected, "{memory}");
    }
    assert_eq!(rows[0].0, "3", "{rows:?}");
    assert_eq!(rows[0].1, "1", "{rows:?}");
    assert_eq!(rows[0], rows[1]);
}

/// A sweep of 40 large synthetic images started in `tmp` (run id `r`), returned once its first
/// checkpoint exists: the image in flight then outlasts a signal's delivery.
#[cfg(unix)]
fn a_started_long_sweep(tmp: &Path) -> std::process::Child {
    a_started_long_sweep_with(tmp, |c| c)
}

/// [`a_started_long_sweep`] with `setup` applied to the command before it starts.
#[cfg(unix)]
fn a_started_long_sweep_with(
    tmp: &Path,
    setup: impl FnOnce(&mut Command) -> &mut Command,
) -> std::process::Child {
    let spec = write_spec(
        tmp,
        "spec.toml",
        &SPEC_2X2
            .replace("synthetic_images = 3", "synthetic_images = 40")
            .replace("short_side = 224", "short_side = 1200"),
    );
    let mut cmd = bin();
    cmd.args(["sweep", spec.to_str().unwrap(), "--quiet", "--run-id", "r"])
        .current_dir(tmp)
        .env("SEGSWEEP_CACHE", tmp.join("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = setup(&mut cmd).spawn().unwrap();
    let counts = tmp.join("out/e2e/r/counts");
    let started = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::read_dir(&counts).is_ok_and(|mut d| d.next().is_some())
    });
    assert!(started, "the sweep did not start");
    child
}

/// Sends `signal` to `child`. SAFETY: kill(2) on our own child's pid (not yet reaped, so the
/// pid cannot be reused).
#[cfg(unix)]
fn signal(child: &std::process::Child, signal: libc::c_int) {
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// One interrupt delivered twice (a terminal's Ctrl-C reaches the process group; `timeout -s
/// INT` signals the child and its group) stops after the image in flight, as one Ctrl-C does,
/// rather than quitting at once without a word.
#[cfg(unix)]
#[test]
fn an_interrupt_delivered_twice_at_once_still_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let child = a_started_long_sweep(tmp.path());
    // Two deliveries 100 ms apart (back to back, the kernel merges them into one).
    signal(&child, libc::SIGINT);
    std::thread::sleep(std::time::Duration::from_millis(100));
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("stopping after the image in flight")
            && stderr.contains("re-run the same command to resume")
            && !stderr.contains("quitting now"),
        "{stderr}"
    );
}

/// SIGTERM (what `timeout`, `docker stop`, systemd and Slurm send) stops like Ctrl-C: the image
/// in flight is finished and checkpointed, exit code 130; not an instant death that loses the
/// images since the last periodic checkpoint.
#[cfg(unix)]
#[test]
fn sigterm_stops_after_the_image_in_flight_like_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let child = a_started_long_sweep(tmp.path());
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("stopping after the image in flight")
            && stderr.contains("re-run the same command to resume"),
        "{stderr}"
    );
}

/// Under `nohup` (SIGHUP ignored) a sweep outlives its terminal: installing the interrupt
/// handler (which also takes SIGHUP) must leave that ignore in place.
#[cfg(unix)]
#[test]
fn a_sweep_started_with_hangups_ignored_ignores_them() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = a_started_long_sweep_with(tmp.path(), |c| {
        // SAFETY: only async-signal-safe signal(2) between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            })
        }
    });
    signal(&child, libc::SIGHUP);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    match child.try_wait().unwrap() {
        // Finished meanwhile: it must have run to the end, not stopped for the hangup.
        Some(status) => assert_eq!(status.code(), Some(0)),
        None => {
            // Still running; a Ctrl-C now is the first interrupt, not a second one.
            signal(&child, libc::SIGINT);
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(130), "{stderr}");
            assert_eq!(
                stderr.matches("interrupt:").count(),
                1,
                "the hangup counted as an interrupt: {stderr}"
            );
        }
    }
}

/// ResCLIP replaces the last block's attention, so `inference.attention` does not apply to it:
/// a grid over the built-in attentions with a `+resclip` variant gives that variant one row
/// (as a switched-off entry's parameters do), not two identically computed ones under two names.
#[test]
fn the_built_in_attention_does_not_apply_under_an_attention_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(
        tmp.path(),
        "att.toml",
        "[experiment]\nname = \"att\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"synthetic\"\n[[pipeline]]\nplugin = \"resclip\"\n[sweep.grid]\n\"inference.attention\" = [\"sclip\", \"naclip\"]\n[[sweep.variants]]\nname = \"baseline\"\npipeline = []\n[[sweep.variants]]\nname = \"+resclip\"\n",
    );
    let stdout = ok(&run(&["validate", spec.to_str().unwrap()], tmp.path()));
    assert!(stdout.contains("3 configuration(s)"), "{stdout}");
    let resclip: Vec<&str> = stdout.lines().filter(|l| l.contains("+resclip")).collect();
    assert_eq!(resclip.len(), 1, "{stdout}");
    assert!(
        resclip[0].contains("attention=resclip (plugin)"),
        "{stdout}"
    );
}

/// A mistyped attention is an error even where every configuration has resclip (the value is
/// then never applied, so nothing else would check it).
#[test]
fn a_mistyped_attention_under_resclip_is_still_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(
        tmp.path(),
        "att.toml",
        "[experiment]\nname = \"att\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"synthetic\"\n[[pipeline]]\nplugin = \"resclip\"\n[sweep.grid]\n\"inference.attention\" = [\"sclip\", \"nacilp\"]\n",
    );
    let err = fails(&run(&["validate", spec.to_str().unwrap()], tmp.path()));
    assert!(
        err.contains("nacilp") && err.contains("not a built-in attention"),
        "{err}"
    );
}
