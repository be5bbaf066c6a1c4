//! What a configuration's hash covers, and what a run checks before it creates its directory
//! (built-in tiny random CLIP and synthetic data; no number here is a benchmark).

use std::path::Path;

// The binary names every plugin crate; a test of the runner must too (inventory issue #50).
use segsweep_plugin_cliptrase as _;
use segsweep_runner::{expand, load_text, run, run_dir, Experiment, RunOptions};

mod common;

const SPEC: &str = r#"
[experiment]
name = "ident"
[model]
source = "builtin:tiny-random"
[dataset]
name = "synthetic"
synthetic_images = 1
"#;

fn exp(extra: &str, sets: &[(&str, toml::Value)]) -> segsweep_runner::Result<Experiment> {
    let sets: Vec<(String, toml::Value)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let text = format!("{SPEC}{extra}");
    expand(load_text(Path::new("ident.toml"), text, &sets)?, &sets)
}

fn hash(extra: &str, sets: &[(&str, toml::Value)]) -> String {
    exp(extra, sets).unwrap().configs[0].hash.clone()
}

#[test]
fn an_explicit_default_short_side_hashes_like_no_value() {
    // Synthetic data resizes to short side 224 unless told otherwise.
    let none = hash("", &[]);
    let explicit = hash("", &[("dataset.short_side", toml::Value::Integer(224))]);
    let other = hash("", &[("dataset.short_side", toml::Value::Integer(336))]);
    assert_eq!(none, explicit);
    assert_ne!(none, other);
}

#[test]
fn the_hash_covers_a_class_file_s_content_not_only_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classes.txt");
    let set = |p: &Path| {
        vec![(
            "dataset.classes",
            toml::Value::String(p.display().to_string()),
        )]
    };
    std::fs::write(&path, "background\nperson\n").unwrap();
    let a = hash("", &set(&path));
    std::fs::write(&path, "background\nperson, man\n").unwrap();
    let b = hash("", &set(&path));
    assert_ne!(a, b, "an edited class file must not resume the old results");
    // A class file that cannot be read here still validates (a spec may be checked on another
    // machine, `predict --spec` brings its own --classes); a run reads it before any work and
    // fails naming it.
    let missing = set(&dir.path().join("missing.txt"));
    exp("", &missing).unwrap();
    let err = fails_before_any_work("", &missing);
    assert!(
        err.contains("missing.txt") && err.contains("dataset.classes") && err.contains("hint"),
        "{err}"
    );
}

/// A run that cannot start leaves no run directory behind (nothing that looks like a result).
fn fails_before_any_work(extra: &str, sets: &[(&str, toml::Value)]) -> String {
    let out = tempfile::tempdir().unwrap();
    let mut sets = sets.to_vec();
    sets.push((
        "experiment.output_dir",
        toml::Value::String(out.path().display().to_string()),
    ));
    let exp = exp(extra, &sets).unwrap();
    let opts = RunOptions {
        data_dir: out.path().join("no-data"),
        ..RunOptions::default()
    };
    common::run_fails_without_run_dir(&exp, &opts)
}

#[test]
fn a_missing_dataset_root_fails_before_the_run_directory_exists() {
    let err = fails_before_any_work("", &[("dataset.name", toml::Value::String("voc21".into()))]);
    assert!(err.contains("no-data"), "{err}");
}

#[test]
fn a_class_file_with_another_class_count_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("three.txt");
    std::fs::write(&path, "background\nperson\ncar\n").unwrap();
    let err = fails_before_any_work(
        "",
        &[(
            "dataset.classes",
            toml::Value::String(path.display().to_string()),
        )],
    );
    assert!(
        err.contains("dataset.classes") && err.contains("three.txt"),
        "{err}"
    );
}

/// A damaged checkpoint is an error naming the file, never a panic or a silently wrong record.
#[test]
fn a_damaged_checkpoint_is_an_error_naming_the_file() {
    let out = tempfile::tempdir().unwrap();
    let sets = [
        ("dataset.synthetic_images", toml::Value::Integer(3)),
        (
            "experiment.output_dir",
            toml::Value::String(out.path().display().to_string()),
        ),
    ];
    let exp = exp("", &sets).unwrap();
    let stop = RunOptions {
        stop_after_images: Some(1),
        ..RunOptions::default()
    };
    let _ = run(&exp, &stop);
    let partial = run_dir(&exp, &stop)
        .join("counts")
        .join(format!("{}.partial.json", exp.configs[0].hash));
    let good = std::fs::read_to_string(&partial).expect("a checkpoint after one image");
    let json: serde_json::Value = serde_json::from_str(&good).unwrap();
    let damage = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut j = json.clone();
        f(&mut j);
        std::fs::write(&partial, j.to_string()).unwrap();
        let err = run(&exp, &RunOptions::default()).unwrap_err().to_string();
        assert!(
            err.contains(".partial.json") && err.contains("delete"),
            "{err}"
        );
        err
    };
    let err = damage(&|j| {
        j["counts"]["intersect"].as_array_mut().unwrap().truncate(2);
    });
    assert!(err.contains("counts.intersect"), "{err}");
    let err = damage(&|j| j["next_image"] = serde_json::json!(1000));
    assert!(err.contains("next_image"), "{err}");
    let err = damage(&|j| j["next_image"] = serde_json::json!(2));
    assert!(err.contains("disagrees"), "{err}");
    // Counts from other weights under the same model.source are not continued.
    assert!(!json["model_file_hash"].as_str().unwrap_or("").is_empty());
    let err = damage(&|j| j["model_file_hash"] = serde_json::json!("0123456789abcdef"));
    assert!(err.contains("weights 0123456789abcdef"), "{err}");
    // A dangling link in the checkpoint's place is damage, not "no checkpoint".
    #[cfg(unix)]
    {
        std::fs::remove_file(&partial).unwrap();
        std::os::unix::fs::symlink(out.path().join("nowhere"), &partial).unwrap();
        let err = run(&exp, &RunOptions::default()).unwrap_err().to_string();
        assert!(err.contains(".partial.json"), "{err}");
        std::fs::remove_file(&partial).unwrap();
    }
    let err = damage(&|j| {
        j["counts"]["intersect"][0] = serde_json::json!(u64::MAX);
    });
    assert!(err.contains("inconsistent"), "{err}");
    // The intact checkpoint still resumes to a finished record.
    std::fs::write(&partial, good).unwrap();
    let done = run(&exp, &RunOptions::default()).unwrap();
    assert_eq!(done.records.len(), 1);
    assert_eq!(done.records[0].images, 3);
}

/// A `[dataset] classes` file replaces the prompts one for one; the dataset's background class
/// keeps its display name `background` in the records (SCLIP's background line starts `sky`).
#[test]
fn a_class_file_keeps_the_background_display_name() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("classes.txt");
    std::fs::write(
        &path,
        "wall, floor, ceiling\nperson, man\ncar\ntree\nsky\nroad\n",
    )
    .unwrap();
    let sets = [
        (
            "dataset.classes",
            toml::Value::String(path.display().to_string()),
        ),
        (
            "experiment.output_dir",
            toml::Value::String(out.path().display().to_string()),
        ),
    ];
    let exp = exp("", &sets).unwrap();
    let done = run(&exp, &RunOptions::default()).unwrap();
    let names = &done.records[0].class_names;
    assert_eq!(names[0], "background");
    assert_eq!(names[1], "person");
    assert_eq!(names[4], "sky");
}

/// A custom dataset's records carry the name of its `[dataset.custom]` table, so two custom
/// datasets can be told apart in summary.csv.
#[test]
fn a_custom_dataset_is_recorded_under_its_own_name() {
    let out = tempfile::tempdir().unwrap();
    let data = out.path().join("mine");
    segsweep_data::write_synthetic(&data, 1, 0).unwrap();
    let text = format!(
        r#"
[experiment]
name = "custom"
output_dir = "{out}"
[model]
source = "builtin:tiny-random"
[dataset]
name = "custom"
[dataset.custom]
name = "my-shapes"
root = "{root}"
img_suffix = ".png"
classes = "classes.txt"
"#,
        out = out.path().display(),
        root = data.display()
    );
    let exp = expand(load_text(Path::new("custom.toml"), text, &[]).unwrap(), &[]).unwrap();
    let done = run(&exp, &RunOptions::default()).unwrap();
    assert_eq!(done.records[0].dataset, "my-shapes");
}

/// A checkpoint is continued only on the sample list it was counted on: after files under a
/// custom dataset's root change (one image removed, others added), the resume is refused by
/// name instead of counting images of two lists as one; an unchanged list resumes.
#[test]
fn a_resume_on_another_sample_list_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let data = out.path().join("mine");
    segsweep_data::write_synthetic(&data, 4, 0).unwrap();
    let text = format!(
        "[experiment]\nname = \"moved\"\noutput_dir = \"{}\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"custom\"\n[dataset.custom]\nname = \"shapes\"\nroot = \"{}\"\nimg_suffix = \".png\"\nclasses = \"classes.txt\"\n",
        out.path().display(),
        data.display()
    );
    let exp = expand(load_text(Path::new("moved.toml"), text, &[]).unwrap(), &[]).unwrap();
    let stop = RunOptions {
        stop_after_images: Some(2),
        ..RunOptions::default()
    };
    assert!(run(&exp, &stop).is_err());
    assert_eq!(first_checkpoint(&exp, &stop)["next_image"], 2);
    // The first image goes, two new ones come: four ids again, but another list.
    let (images, labels) = (data.join("images"), data.join("labels"));
    std::fs::remove_file(images.join("synth_0000.png")).unwrap();
    std::fs::remove_file(labels.join("synth_0000.png")).unwrap();
    for (from, to) in [("synth_0001", "synth_0005"), ("synth_0002", "synth_0006")] {
        for dir in [&images, &labels] {
            std::fs::copy(
                dir.join(format!("{from}.png")),
                dir.join(format!("{to}.png")),
            )
            .unwrap();
        }
    }
    let err = run(&exp, &RunOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains(".partial.json") && err.contains("another list of samples"),
        "{err}"
    );
    assert!(err.contains("hint"), "{err}");
    // A list shorter than the images counted is the same case, not a damaged checkpoint.
    let (images_aside, labels_aside) = (out.path().join("ia"), out.path().join("la"));
    std::fs::rename(&images, &images_aside).unwrap();
    std::fs::rename(&labels, &labels_aside).unwrap();
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::copy(
        images_aside.join("synth_0003.png"),
        images.join("synth_0003.png"),
    )
    .unwrap();
    std::fs::copy(
        labels_aside.join("synth_0003.png"),
        labels.join("synth_0003.png"),
    )
    .unwrap();
    let err = run(&exp, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("another list of samples"), "{err}");
    std::fs::remove_dir_all(&images).unwrap();
    std::fs::remove_dir_all(&labels).unwrap();
    std::fs::rename(&images_aside, &images).unwrap();
    std::fs::rename(&labels_aside, &labels).unwrap();
    // Put the list back as it was: the checkpoint resumes to a finished record.
    for to in ["synth_0005", "synth_0006"] {
        std::fs::remove_file(images.join(format!("{to}.png"))).unwrap();
        std::fs::remove_file(labels.join(format!("{to}.png"))).unwrap();
    }
    std::fs::copy(images.join("synth_0001.png"), images.join("synth_0000.png")).unwrap();
    std::fs::copy(labels.join("synth_0001.png"), labels.join("synth_0000.png")).unwrap();
    let done = run(&exp, &RunOptions::default()).unwrap();
    assert_eq!(done.records[0].images, 4);
}

/// A layer a plugin asks the prefix to record must exist in the loaded model; that is known
/// only after the model loads, still before the run directory exists.
#[test]
fn a_plugin_layer_beyond_the_model_fails_before_the_run_directory_exists() {
    let err = fails_before_any_work(
        "[[pipeline]]\nplugin = \"cliptrase\"\nvariant = \"paper\"\ncorrelation_layer = 64\n",
        &[],
    );
    assert!(
        err.contains("layer 64") && err.contains("cliptrase"),
        "{err}"
    );
}

/// The seed picks a random subset and generates the synthetic set: where it does, it is part of
/// the configuration (a sweep over seeds is legal, a changed seed is not "already finished").
#[test]
fn the_seed_is_part_of_the_hash_where_it_selects_data() {
    let seed = |n: i64| ("experiment.seed", toml::Value::Integer(n));
    assert_ne!(hash("", &[seed(0)]), hash("", &[seed(1)]));
    let voc = ("dataset.name", toml::Value::String("voc21".into()));
    assert_eq!(
        hash("", &[voc.clone(), seed(0)]),
        hash("", &[voc.clone(), seed(1)])
    );
    let random = [
        voc.clone(),
        ("dataset.num_samples", toml::Value::Integer(5)),
        ("dataset.subset", toml::Value::String("random".into())),
    ];
    let with = |n| {
        let mut v = random.to_vec();
        v.push(seed(n));
        hash("", &v)
    };
    assert_ne!(with(0), with(1));
    let grid = exp("[sweep.grid]\n\"experiment.seed\" = [0, 1, 2]\n", &[]).unwrap();
    assert_eq!(grid.configs.len(), 3);
    assert_eq!(
        grid.configs.iter().map(|c| c.seed).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

/// A custom dataset of 2 synthetic samples whose sample 1 is broken by `damage`, as an
/// experiment writing into `out`.
fn damaged_custom(
    out: &Path,
    skip_bad: bool,
    damage: impl FnOnce(&Path),
) -> segsweep_runner::Experiment {
    let data = out.join("shapes");
    segsweep_data::write_synthetic(&data, 2, 0).unwrap();
    damage(&data.join("labels/synth_0001.png"));
    let text = format!(
        "[experiment]\nname = \"bad\"\noutput_dir = \"{}\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"custom\"\nskip_bad = {skip_bad}\n[dataset.custom]\nname = \"shapes\"\nroot = \"{}\"\nimg_suffix = \".png\"\nclasses = \"classes.txt\"\n",
        out.display(),
        data.display()
    );
    expand(load_text(Path::new("bad.toml"), text, &[]).unwrap(), &[]).unwrap()
}

/// The checkpoint (`counts/<hash>.partial.json`) of `exp`'s first configuration, parsed.
fn first_checkpoint(exp: &Experiment, opts: &RunOptions) -> serde_json::Value {
    let partial = run_dir(exp, opts)
        .join("counts")
        .join(format!("{}.partial.json", exp.configs[0].hash));
    serde_json::from_str(&std::fs::read_to_string(&partial).unwrap()).unwrap()
}

/// A missing label is found before any work: the error names the file and the way to skip
/// it, and no run directory is created.
#[test]
fn a_missing_label_fails_before_the_run_directory_exists() {
    let out = tempfile::tempdir().unwrap();
    let exp = damaged_custom(out.path(), false, |l| std::fs::remove_file(l).unwrap());
    let err = common::run_fails_without_run_dir(&exp, &RunOptions::default());
    assert!(
        err.contains("synth_0001.png") && err.contains("skip_bad") && err.contains("missing"),
        "{err}"
    );
}

/// With `skip_bad`, the same missing label is skipped and counted.
#[test]
fn a_missing_label_with_skip_bad_is_skipped_and_counted() {
    let out = tempfile::tempdir().unwrap();
    let exp = damaged_custom(out.path(), true, |l| std::fs::remove_file(l).unwrap());
    let summary = run(&exp, &RunOptions::default()).unwrap();
    let rec = &summary.records[0];
    assert_eq!((rec.images, rec.skipped), (1, 1), "{rec:?}");
}

/// A label that exists but cannot be decoded is only found when it is loaded: the run stops
/// there with the file named and the way to skip it.
#[test]
fn an_unreadable_label_names_the_skip_bad_switch() {
    let out = tempfile::tempdir().unwrap();
    let exp = damaged_custom(out.path(), false, |l| {
        std::fs::write(l, b"not a png").unwrap()
    });
    let opts = RunOptions::default();
    let err = run(&exp, &opts).unwrap_err().to_string();
    assert!(
        err.contains("synth_0001") && err.contains("skip_bad"),
        "{err}"
    );
    // Sample 0, loaded into the same backbone batch, is counted and checkpointed first, as the
    // message's "finished images are kept" says.
    let p = first_checkpoint(&exp, &opts);
    assert_eq!(p["next_image"], 1, "{p}");
}

/// Spellings of one path hash alike (`./m`, `m/`, `m`); other paths do not.
#[test]
fn spellings_of_one_path_hash_alike() {
    let source = |s: &str| vec![("model.source", toml::Value::String(s.into()))];
    let plain = hash("", &source("weights/clip"));
    for other in ["./weights/clip", "weights/clip/", "weights//./clip"] {
        assert_eq!(plain, hash("", &source(other)), "{other}");
    }
    assert_ne!(plain, hash("", &source("weights/clip2")));
    assert_ne!(plain, hash("", &source("../weights/clip")));
    let classes = |s: &str| vec![("dataset.classes", toml::Value::String(s.into()))];
    assert_eq!(
        hash("", &classes("cls/voc.txt")),
        hash("", &classes("./cls/voc.txt"))
    );
}

/// A registered benchmark's location is not part of its identity (like `--data-dir`); a
/// custom dataset's root is.
#[test]
fn a_registered_dataset_s_root_is_not_hashed_a_custom_one_is() {
    let voc = |root: Option<&str>| {
        let mut v = vec![("dataset.name", toml::Value::String("voc21".into()))];
        if let Some(r) = root {
            v.push(("dataset.root", toml::Value::String(r.into())));
        }
        hash("", &v)
    };
    assert_eq!(voc(None), voc(Some("/data/VOCdevkit/VOC2012")));
    assert_eq!(voc(Some("/a/voc")), voc(Some("/b/voc")));
    let custom = |root: &str| {
        hash(
            &format!(
                "[dataset.custom]\nname = \"mine\"\nroot = \"{root}\"\nclasses = \"classes.txt\"\n"
            ),
            &[("dataset.name", toml::Value::String("custom".into()))],
        )
    };
    assert_ne!(custom("/a/mine"), custom("/b/mine"));
    assert_eq!(custom("/a/mine"), custom("/a/./mine/"));
}

/// A finished configuration is not silently kept when the files behind `model.source` were
/// replaced in place: resuming is an error naming its record; unchanged weights resume.
#[test]
fn finished_results_of_replaced_weights_are_not_resumed() {
    let out = tempfile::tempdir().unwrap();
    let model = out.path().join("clip");
    std::fs::create_dir(&model).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-clip");
    for f in ["config.json", "model.safetensors", "segsweep-fixture.json"] {
        std::fs::copy(fixture.join(f), model.join(f)).unwrap();
    }
    let sets = [
        (
            "model.source",
            toml::Value::String(model.display().to_string()),
        ),
        (
            "experiment.output_dir",
            toml::Value::String(out.path().display().to_string()),
        ),
    ];
    let exp = exp("", &sets).unwrap();
    let opts = RunOptions::default();
    assert_eq!(run(&exp, &opts).unwrap().ran, 1);
    assert_eq!(
        run(&exp, &opts).unwrap().resumed,
        1,
        "unchanged weights resume"
    );
    // Another value in the last tensor's bytes: a loadable file with other weights.
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let err = run(&exp, &opts).unwrap_err().to_string();
    let record = format!("{}.json", exp.configs[0].hash);
    assert!(
        err.contains(&record) && err.contains("now holds weights") && err.contains("--run-id"),
        "{err}"
    );
}

/// A sample too thin to segment (1×500: its windows resize below one patch) is a bad sample:
/// named with the file and the skip_bad hint, or skipped and counted with skip_bad.
#[test]
fn a_sample_too_thin_to_segment_is_a_bad_sample() {
    let thin = |label: &Path| {
        let image = label
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("images/synth_0001.png");
        let (h, w) = (1, 500);
        segsweep_data::save_rgb_png(
            &image,
            &segsweep_core::RgbImage::new(h, w, vec![90; h * w * 3]).unwrap(),
        )
        .unwrap();
        segsweep_data::save_label_png(
            label,
            &segsweep_data::LabelMap {
                h,
                w,
                data: vec![0; h * w],
            },
        )
        .unwrap();
    };
    let out = tempfile::tempdir().unwrap();
    let exp = damaged_custom(out.path(), false, thin);
    let err = run(&exp, &RunOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("synth_0001.png")
            && err.contains("smaller than the")
            && err.contains("skip_bad"),
        "{err}"
    );
    let out = tempfile::tempdir().unwrap();
    let exp = damaged_custom(out.path(), true, thin);
    let summary = run(&exp, &RunOptions::default()).unwrap();
    let rec = &summary.records[0];
    assert_eq!((rec.images, rec.skipped), (1, 1), "{rec:?}");
}

/// A configuration whose every sample was skipped has no result: the run fails saying so and
/// writes no record (which would count as finished for ever), so once the data is fixed the
/// same command computes it.
#[test]
fn a_run_that_skipped_every_sample_fails_and_computes_once_fixed() {
    let out = tempfile::tempdir().unwrap();
    let exp = damaged_custom(out.path(), true, |l| {
        std::fs::write(l, b"not a png").unwrap();
        std::fs::write(l.with_file_name("synth_0000.png"), b"nor this").unwrap();
    });
    let opts = RunOptions::default();
    let err = run(&exp, &opts).unwrap_err().to_string();
    assert!(
        err.contains("scored no image") && err.contains("all 2 sample(s) were skipped"),
        "{err}"
    );
    let record = run_dir(&exp, &opts)
        .join("counts")
        .join(format!("{}.json", exp.configs[0].hash));
    assert!(
        !record.exists(),
        "no record for a configuration without result"
    );
    // The labels restored (the same generator, the same files), the same run computes it.
    segsweep_data::write_synthetic(&out.path().join("shapes"), 2, 0).unwrap();
    let summary = run(&exp, &opts).unwrap();
    assert_eq!((summary.ran, summary.records[0].images), (1, 2));
}

/// Samples decoded ahead on a background thread (`load_ahead`, default one per CPU thread)
/// change nothing but speed: on 7 on-disk samples whose sample 4 cannot be decoded, in chunks
/// of about 2 images, every lookahead gives the same records with `skip_bad`, and without it
/// the same error at sample 4 with samples 0–3 kept, also with the next chunk's prefixes
/// computed on a second thread (`pipeline`). The configuration hash ignores it.
#[test]
fn decoding_ahead_changes_nothing_but_speed() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("shapes");
    segsweep_data::write_synthetic(&data, 7, 3).unwrap();
    std::fs::write(data.join("labels/synth_0004.png"), b"not a png").unwrap();
    let spec = |out: &Path, skip_bad: bool, ahead: Option<usize>| {
        let ahead = ahead
            .map(|n| format!("load_ahead = {n}\n"))
            .unwrap_or_default();
        let text = format!(
            "[experiment]\nname = \"ahead\"\noutput_dir = \"{}\"\n{ahead}[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"custom\"\nskip_bad = {skip_bad}\n[dataset.custom]\nname = \"shapes\"\nroot = \"{}\"\nimg_suffix = \".png\"\nclasses = \"classes.txt\"\n[inference]\nbatch_size = 8\n",
            out.display(),
            data.display()
        );
        expand(load_text(Path::new("ahead.toml"), text, &[]).unwrap(), &[]).unwrap()
    };
    let mut records = Vec::new();
    let mut hashes = Vec::new();
    // And with the next batch's prefixes on a second thread (`pipeline`).
    let ways = [0, 1, 3].map(Some).into_iter().chain([None]);
    for (ahead, pipeline) in ways.flat_map(|a| [(a, None), (a, Some(true))]) {
        let opts = RunOptions {
            pipeline,
            ..RunOptions::default()
        };
        let out = tempfile::tempdir().unwrap();
        let exp = spec(out.path(), true, ahead);
        let rec = run(&exp, &opts).unwrap().records.remove(0);
        assert_eq!((rec.images, rec.skipped), (6, 1), "ahead {ahead:?}");
        hashes.push(exp.configs[0].hash.clone());
        records.push((rec.counts, rec.metrics.miou_pct, rec.sample_ids));

        let out = tempfile::tempdir().unwrap();
        let exp = spec(out.path(), false, ahead);
        let err = run(&exp, &opts).unwrap_err().to_string();
        assert!(
            err.contains("synth_0004") && err.contains("skip_bad"),
            "ahead {ahead:?}: {err}"
        );
        let p = first_checkpoint(&exp, &opts);
        assert_eq!(p["next_image"], 4, "ahead {ahead:?}: {p}");
    }
    assert!(hashes.windows(2).all(|h| h[0] == h[1]), "{hashes:?}");
    assert!(records.windows(2).all(|r| r[0] == r[1]));
}

/// Variant names are not hashed, so a renamed spec resumes the same run directory: its
/// finished records take the new names (tables, charts and `--baseline` show them).
#[test]
fn renamed_variants_relabel_the_finished_records() {
    let out = tempfile::tempdir().unwrap();
    let text = |base: &str| {
        format!(
            "[experiment]\nname = \"ren\"\noutput_dir = \"{}\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"synthetic\"\nsynthetic_images = 1\n[sweep]\nbaseline = \"{base}\"\n[[sweep.variants]]\nname = \"{base}\"\nset = {{ \"inference.prob_thd\" = 0.0 }}\n[[sweep.variants]]\nname = \"thd\"\nset = {{ \"inference.prob_thd\" = 0.5 }}\n",
            out.path().display()
        )
    };
    let opts = RunOptions {
        run_id: Some("r".into()),
        ..RunOptions::default()
    };
    let load = |t: String| expand(load_text(Path::new("ren.toml"), t, &[]).unwrap(), &[]).unwrap();
    let first = run(&load(text("baseline")), &opts).unwrap();
    assert_eq!(first.ran, 2);
    let renamed = load(text("base"));
    let again = run(&renamed, &opts).unwrap();
    assert_eq!((again.ran, again.resumed), (0, 2));
    let variants: Vec<&str> = again.records.iter().map(|r| r.variant.as_str()).collect();
    assert_eq!(variants, ["base", "thd"]);
    let on_disk = segsweep_report::load_record(
        &again
            .run_dir
            .join("counts")
            .join(format!("{}.json", renamed.configs[0].hash)),
    )
    .unwrap();
    assert_eq!(on_disk.variant, "base");
    let summary = std::fs::read_to_string(again.run_dir.join("summary.csv")).unwrap();
    assert!(
        summary.contains(",base,") && !summary.contains("baseline"),
        "{summary}"
    );
    assert!(again.run_dir.join("charts/delta.png").is_file());
}
