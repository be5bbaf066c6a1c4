//! Spec mistakes that used to pass `validate` and then fail mid-sweep or silently do nothing:
//! each is now an error naming the key, with a hint.

use std::path::Path;

use segsweep_runner::{expand, load_text, parse_set};

// The binary names every plugin crate; a test of the runner must too (inventory issue #50).
use segsweep_plugin_clip_rc as _;
use segsweep_plugin_cliptrase as _;
use segsweep_plugin_pamr as _;

const SPEC: &str = r#"
[experiment]
name = "checks"
[model]
source = "builtin:tiny-random"
[dataset]
name = "synthetic"
[[pipeline]]
plugin = "cliptrase"
[sweep]
baseline = "baseline"
[sweep.grid]
"cliptrase.correlation_temperature" = [0.05, 0.5]
[[sweep.variants]]
name = "baseline"
pipeline = []
[[sweep.variants]]
name = "full"
"#;

/// The error of expanding `text` with `sets` (`KEY=VALUE` strings), as `(key, message)`.
fn error(text: &str, sets: &[&str]) -> String {
    let sets: Vec<(String, toml::Value)> = sets.iter().map(|s| parse_set(s).unwrap()).collect();
    match load_text(Path::new("checks.toml"), text.to_string(), &sets)
        .and_then(|spec| expand(spec, &sets))
    {
        Ok(exp) => panic!(
            "expected an error, got {} configurations",
            exp.configs.len()
        ),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_spec_itself_is_valid() {
    let spec = load_text(Path::new("checks.toml"), SPEC.into(), &[]).unwrap();
    assert_eq!(expand(spec, &[]).unwrap().configs.len(), 3);
}

#[test]
fn an_unknown_baseline_is_an_error_with_a_suggestion() {
    let e = error(
        &SPEC.replace("baseline = \"baseline\"", "baseline = \"basline\""),
        &[],
    );
    assert!(
        e.contains("sweep.baseline") && e.contains("did you mean `baseline`"),
        "{e}"
    );
}

#[test]
fn a_set_on_a_swept_key_is_an_error_not_silently_ignored() {
    let e = error(SPEC, &["cliptrase.correlation_temperature=0.1"]);
    assert!(
        e.contains("sweep.grid") && e.contains("command line"),
        "{e}"
    );
    let variant_set = SPEC.replace(
        "name = \"full\"",
        "name = \"full\"\nset = { \"cliptrase.correlation_temperature\" = 0.2 }",
    );
    let e = error(&variant_set, &[]);
    assert!(e.contains("sweep.variants.full.set"), "{e}");
}

#[test]
fn a_misspelled_plugin_gets_its_suggestion_before_any_sweep_key_refers_to_it() {
    let e = error(
        &SPEC.replace("plugin = \"cliptrase\"", "plugin = \"cliptrace\""),
        &[],
    );
    assert!(e.contains("did you mean `cliptrase`"), "{e}");
}

#[test]
fn a_misspelled_swept_key_names_the_configuration() {
    let e = error(
        &SPEC.replace(
            "name = \"full\"",
            "name = \"full\"\nset = { \"inference.prob_th\" = 0.2 }",
        ),
        &[],
    );
    assert!(
        e.contains("prob_th")
            && e.contains("`full")
            && e.contains("unknown")
            && e.contains("did you mean `prob_thd`"),
        "{e}"
    );
}

#[test]
fn pipeline_ids_must_be_addressable() {
    for id in ["", "a.b", "inference"] {
        let e = error(
            &SPEC.replace(
                "plugin = \"cliptrase\"",
                &format!("plugin = \"cliptrase\"\nid = \"{id}\""),
            ),
            &[],
        );
        assert!(e.contains("pipeline[0].id"), "{id:?}: {e}");
    }
}

#[test]
fn dataset_and_inference_ranges_name_their_key() {
    let e = error(SPEC, &["dataset.short_side=0"]);
    assert!(e.contains("dataset.short_side"), "{e}");
    let e = error(SPEC, &["dataset.synthetic_images=0"]);
    assert!(e.contains("dataset.synthetic_images"), "{e}");
    let e = error(SPEC, &["inference.crop=8", "inference.stride=8"]);
    assert!(e.contains("inference.crop"), "{e}");
    let e = error(SPEC, &["inference.stride=0"]);
    assert!(e.contains("inference.stride"), "{e}");
}

#[test]
fn experiment_names_and_run_ids_stay_inside_the_output_directory() {
    for name in ["", "..", "a/b", "/abs"] {
        let e = error(
            &SPEC.replace("name = \"checks\"", &format!("name = \"{name}\"")),
            &[],
        );
        assert!(e.contains("experiment.name"), "{name:?}: {e}");
    }
    let spec = load_text(Path::new("checks.toml"), SPEC.into(), &[]).unwrap();
    let exp = expand(spec, &[]).unwrap();
    let out = tempfile::tempdir().unwrap();
    for id in ["", "../..", "/tmp/x", "a/b"] {
        let opts = segsweep_runner::RunOptions {
            run_id: Some(id.into()),
            data_dir: out.path().into(),
            ..Default::default()
        };
        let e = segsweep_runner::run(&exp, &opts).unwrap_err().to_string();
        assert!(e.contains("--run-id"), "{id:?}: {e}");
    }
    assert!(segsweep_runner::sweep::check_dir_name("run-2ae801ce0814").is_ok());
    assert!(segsweep_runner::sweep::check_dir_name("phase2a+pamr_v1.2").is_ok());
}

/// Rules across parameters (a plugin's `check`) fail `validate`, not the sweep hours later.
#[test]
fn plugin_checks_run_at_validation() {
    let e = error(
        &SPEC.replace(
            "plugin = \"cliptrase\"",
            "plugin = \"cliptrase\"\n[[pipeline]]\nplugin = \"pamr\"\ndilations = []",
        ),
        &[],
    );
    assert!(e.contains("pamr") && e.contains("dilations"), "{e}");
    let e = error(
        &SPEC.replace(
            "plugin = \"cliptrase\"",
            "plugin = \"cliptrase\"\neps = 0.5",
        ),
        &[],
    );
    assert!(e.contains("cliptrase") && e.contains("eps"), "{e}");
}

/// CLIPtrase's paper variant recomputes the last block and the features: a feature plugin
/// before it would be silently discarded, so that order is an error; after it, fine.
#[test]
fn cliptrase_paper_after_a_feature_plugin_is_an_error() {
    // Without the grid on `correlation_temperature`, a phase2a-only parameter.
    let pipeline = |first: &str, second: &str| {
        SPEC.replace(
            "[[pipeline]]\nplugin = \"cliptrase\"",
            &format!("{first}\n{second}"),
        )
        .replace(
            "[sweep.grid]\n\"cliptrase.correlation_temperature\" = [0.05, 0.5]\n",
            "",
        )
    };
    let rc = "[[pipeline]]\nplugin = \"clip-rc\"";
    let paper = "[[pipeline]]\nplugin = \"cliptrase\"\nvariant = \"paper\"";
    let e = error(&pipeline(rc, paper), &[]);
    assert!(
        e.contains("cliptrase") && e.contains("clip-rc") && e.contains("variant"),
        "{e}"
    );
    let spec = load_text(Path::new("checks.toml"), pipeline(paper, rc), &[]).unwrap();
    expand(spec, &[]).unwrap();
}

/// Messages for common slips: a non-string plugin name, a misspelled section key (with a
/// suggestion), a negative count.
#[test]
fn common_slips_get_specific_messages() {
    let e = error(&SPEC.replace("plugin = \"cliptrase\"", "plugin = 5"), &[]);
    assert!(
        e.contains("pipeline[0].plugin") && e.contains("not a plugin name"),
        "{e}"
    );
    let e = error(SPEC, &["inference.logit_scal=3"]);
    assert!(
        e.contains("unknown key `logit_scal`") && e.contains("did you mean `logit_scale`"),
        "{e}"
    );
    let e = error(SPEC, &["inference.crop=-1"]);
    assert!(
        e.contains("inference.crop") && e.contains("non-negative"),
        "{e}"
    );
}

/// More places where one setting would silently win over another.
#[test]
fn conflicting_and_misplaced_sweep_settings_are_errors() {
    let variant_set = SPEC.replace(
        "name = \"full\"",
        "name = \"full\"\nset = { \"inference.logit_scale\" = 65.0 }",
    );
    let e = error(&variant_set, &["inference.logit_scale=50"]);
    assert!(
        e.contains("sweep.variants.full.set") && e.contains("command line"),
        "{e}"
    );
    let twice = SPEC.replace(
        "[[sweep.variants]]\nname = \"baseline\"",
        "[sweep.zip]\n\"cliptrase.correlation_temperature\" = [0.1]\n[[sweep.variants]]\nname = \"baseline\"",
    );
    let e = error(&twice, &[]);
    assert!(e.contains("swept by both"), "{e}");
    let no_variants = "[experiment]\nname = \"x\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"synthetic\"\n[sweep]\nbaseline = \"base\"\n";
    let e = error(no_variants, &[]);
    assert!(
        e.contains("sweep.baseline") && e.contains("(none)") && !e.contains("did you mean"),
        "{e}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let e = error(
        SPEC,
        &[&format!(
            "experiment.spill_dir=\"{}\"",
            file.path().display()
        )],
    );
    assert!(
        e.contains("experiment.spill_dir") && e.contains("not a directory"),
        "{e}"
    );
}

/// A [dataset.custom] table is read only with `name = "custom"`.
#[test]
fn a_custom_table_for_another_dataset_is_named() {
    let text = SPEC.replace(
        "[dataset]\nname = \"synthetic\"",
        "[dataset]\nname = \"synthetic\"\n[dataset.custom]\nname = \"mine\"",
    );
    let e = error(&text, &[]);
    assert!(
        e.contains("dataset.custom") && e.contains("name = \"custom\""),
        "{e}"
    );
}

#[test]
fn an_hf_source_must_name_a_repo() {
    let e = error(SPEC, &["model.source=\"hf:org\""]);
    assert!(
        e.contains("model.source") && e.contains("hf:org/name"),
        "{e}"
    );
}

/// A bad value that a sweep, a variant's `set` or `--set` supplies is reported where it was
/// written, not at the pipeline entry (which does not hold it), with the hint on its own line.
#[test]
fn a_bad_overridden_value_is_reported_where_it_was_written() {
    let grid = SPEC.replace(
        "\"cliptrase.correlation_temperature\" = [0.05, 0.5]",
        "\"cliptrase.correlation_temperature\" = [0.05, \"0.5\"]",
    );
    let e = error(&grid, &[]);
    assert!(
        e.contains("sweep `cliptrase.correlation_temperature` = \"0.5\"")
            && e.contains("parameter `correlation_temperature`")
            && e.contains("\n  hint: ")
            && !e.contains("(hint:"),
        "{e}"
    );
    let variant = SPEC.replace(
        "name = \"full\"",
        "name = \"full\"\nset = { \"cliptrase.correlation_temperatur\" = 0.2 }",
    );
    let e = error(&variant, &[]);
    assert!(
        e.contains("sweep.variants.full.set `cliptrase.correlation_temperatur`")
            && e.contains("correlation_temperature"),
        "{e}"
    );
    let e = error(SPEC, &["cliptrase.variant=\"nonsense\""]);
    assert!(
        e.contains("--set cliptrase.variant") && e.contains("nonsense"),
        "{e}"
    );
}

/// A key that names an entry by its plugin instead of its id, or misspells a section, gets
/// the key it most likely meant, and the path is printed once.
#[test]
fn a_sweep_key_by_plugin_name_or_a_misspelt_section_suggests_the_right_key() {
    let by_name = SPEC.replace(
        "plugin = \"cliptrase\"",
        "plugin = \"cliptrase\"\nid = \"ct\"",
    );
    let e = error(&by_name, &[]);
    assert!(
        e.contains("did you mean `ct.correlation_temperature`"),
        "{e}"
    );
    assert_eq!(
        e.matches("cliptrase.correlation_temperature").count(),
        1,
        "{e}"
    );
    let typo = SPEC.replace(
        "\"cliptrase.correlation_temperature\" = [0.05, 0.5]",
        "\"inferense.prob_thd\" = [0.0, 0.5]",
    );
    let e = error(&typo, &[]);
    assert!(e.contains("did you mean `inference.prob_thd`"), "{e}");
}

/// An unquoted dotted sweep key is a nested table in TOML; the error says to quote it.
#[test]
fn an_unquoted_dotted_sweep_key_gets_the_quoting_hint() {
    let e = error(
        &SPEC.replace(
            "\"cliptrase.correlation_temperature\" = [0.05, 0.5]",
            "cliptrase.correlation_temperature = [0.05, 0.5]",
        ),
        &[],
    );
    assert!(
        e.contains("sweep.grid.cliptrase") && e.contains("quote dotted sweep keys"),
        "{e}"
    );
}

/// A device has one spelling (records and hashes compare names as text).
#[test]
fn device_names_have_one_spelling() {
    for bad in ["cuda:01", "cuda:+1", "cuda:", "cuda"] {
        let e = error(SPEC, &[&format!("model.device=\"{bad}\"")]);
        assert!(
            e.contains("model.device") && e.contains("cuda:0"),
            "{bad}: {e}"
        );
    }
    let ok = |d: &str| {
        let sets = vec![parse_set(&format!("model.device=\"{d}\"")).unwrap()];
        let spec = load_text(Path::new("checks.toml"), SPEC.to_string(), &sets).unwrap();
        expand(spec, &sets).is_ok()
    };
    assert!(ok("cuda:0") && ok("cuda:10") && ok("cpu"));
}

/// `[experiment]` settings are read once per run, so a variant's `set`, a list row or a grid
/// that varies one was silently ignored (even an invalid value); only the seed can vary.
#[test]
fn run_wide_experiment_keys_cannot_be_swept() {
    let cases = [
        (
            SPEC.replace(
                "name = \"full\"",
                "name = \"full\"\nset = { \"experiment.output_dir\" = \"zzz\" }",
            ),
            "sweep.variants.full.set `experiment.output_dir`",
        ),
        (
            format!("{SPEC}[[sweep.list]]\n\"experiment.spill\" = \"bogus\"\n"),
            "`experiment.spill`",
        ),
        (
            SPEC.replace(
                "[sweep.grid]\n",
                "[sweep.grid]\n\"experiment.save_visualisations\" = [true, false]\n",
            ),
            "`experiment.save_visualisations`",
        ),
    ];
    for (text, want) in cases {
        let e = error(&text, &[]);
        assert!(
            e.contains(want) && e.contains("applies to the whole run") && e.contains("hint"),
            "{want}: {e}"
        );
    }
    // The seed selects data per configuration: still sweepable.
    let text = SPEC.replace(
        "[sweep.grid]\n",
        "[sweep.grid]\n\"experiment.seed\" = [0, 1]\n",
    );
    let spec = load_text(Path::new("checks.toml"), text, &[]).unwrap();
    assert_eq!(expand(spec, &[]).unwrap().configs.len(), 6);
}

/// An empty `output_dir` wrote results into the working directory, and one naming a file
/// failed only after the model load and the trials.
#[test]
fn an_empty_or_file_output_dir_is_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    for (value, want) in [
        (String::new(), "is empty".to_string()),
        (
            file.display().to_string(),
            format!("{} exists and is not a directory", file.display()),
        ),
    ] {
        let text = SPEC.replace(
            "name = \"checks\"",
            &format!("name = \"checks\"\noutput_dir = \"{value}\""),
        );
        let e = error(&text, &[]);
        assert!(
            e.contains("experiment.output_dir") && e.contains(&want) && e.contains("hint"),
            "{e}"
        );
    }
}

/// A bad `--set` value was blamed on the spec file; the error now says where it came from.
#[test]
fn a_bad_set_value_is_traced_to_the_command_line() {
    let e = error(SPEC, &["inference.prob_thd=\"abc\""]);
    assert!(
        e.contains("(via --set)") && e.contains("inference.prob_thd"),
        "{e}"
    );
}

/// A variant named "" was accepted and labelled `default` in the tables.
#[test]
fn a_variant_needs_a_name() {
    let e = error(&SPEC.replace("name = \"full\"", "name = \"\""), &[]);
    assert!(
        e.contains("sweep.variants") && e.contains("empty name") && e.contains("hint"),
        "{e}"
    );
}

/// `num_samples` beyond the dataset's size ran every sample without a word.
#[test]
fn more_samples_asked_than_the_dataset_has_is_a_warning() {
    let text = SPEC.replace(
        "name = \"synthetic\"",
        "name = \"synthetic\"\nsynthetic_images = 4\nnum_samples = 100",
    );
    let exp = expand(load_text(Path::new("checks.toml"), text, &[]).unwrap(), &[]).unwrap();
    let c = &exp.configs[0];
    let ds = segsweep_runner::open_dataset(&c.dataset, c.seed, Path::new("data")).unwrap();
    assert_eq!(ds.len(), 4);
    assert!(
        ds.warnings
            .iter()
            .any(|w| w.contains("num_samples = 100") && w.contains("4 samples")),
        "{:?}",
        ds.warnings
    );
}

/// `[inference] short_side` (the resolved settings' name for it) was answered with "did you
/// mean `stride`?".
#[test]
fn short_side_under_inference_points_to_the_dataset_section() {
    let e = error(
        &SPEC.replace("[sweep]", "[inference]\nshort_side = 224\n[sweep]"),
        &[],
    );
    assert!(
        e.contains("inference.short_side") && e.contains("dataset.short_side"),
        "{e}"
    );
    assert!(!e.contains("stride"), "{e}");
}

/// The same key swept.
#[test]
fn a_swept_inference_short_side_points_to_the_dataset_section() {
    let e = error(
        &SPEC.replace(
            "[sweep.grid]\n",
            "[sweep.grid]\n\"inference.short_side\" = [224, 336]\n",
        ),
        &[],
    );
    assert!(e.contains("dataset.short_side"), "{e}");
    assert!(!e.contains("did you mean `stride`"), "{e}");
}

/// A `[dataset] root` on the synthetic dataset was silently ignored.
#[test]
fn a_root_for_the_synthetic_dataset_is_a_warning() {
    let text = SPEC.replace(
        "name = \"synthetic\"",
        "name = \"synthetic\"\nroot = \"data/nowhere\"",
    );
    let exp = expand(load_text(Path::new("checks.toml"), text, &[]).unwrap(), &[]).unwrap();
    let c = &exp.configs[0];
    let ds = segsweep_runner::open_dataset(&c.dataset, c.seed, Path::new("data")).unwrap();
    assert!(
        ds.warnings
            .iter()
            .any(|w| w.contains("data/nowhere") && w.contains("ignored")),
        "{:?}",
        ds.warnings
    );
}

/// `--set inference=1` named the Rust type the section is read into.
#[test]
fn a_section_set_to_a_value_says_table_not_a_rust_type() {
    let e = error(SPEC, &["inference=1"]);
    assert!(e.contains("expected a table of keys"), "{e}");
    assert!(!e.contains("Section"), "{e}");
}

/// `--set` wins over the spec file (README: spec file < `--set`), also for a plugin parameter
/// whose value in the file is bad: the file's value is never used, so it is no error.
#[test]
fn set_replaces_a_bad_plugin_value_of_the_file() {
    let text = "[experiment]\nname = \"fix\"\n[model]\nsource = \"builtin:tiny-random\"\n[[pipeline]]\nplugin = \"cliptrase\"\nrecalibration_strength = \"strong\"\n";
    let e = error(text, &[]);
    assert!(e.contains("recalibration_strength"), "{e}");
    let sets = [parse_set("cliptrase.recalibration_strength=0.5").unwrap()];
    let spec = load_text(Path::new("fix.toml"), text.into(), &sets).unwrap();
    let exp = expand(spec, &sets).unwrap();
    assert_eq!(exp.configs.len(), 1);
}

/// A plugin rule over two parameters that fails on a combination of swept values names both.
#[test]
fn a_rule_over_two_swept_parameters_names_both_values() {
    let text = "[experiment]\nname = \"two\"\n[model]\nsource = \"builtin:tiny-random\"\n[[pipeline]]\nplugin = \"pamr\"\n[sweep.grid]\n\"pamr.guide\" = [\"resized\", \"original\"]\n\"pamr.guide_short_side\" = [224]\n";
    let e = error(text, &[]);
    assert!(
        e.contains("guide_short_side") && e.contains("with sweep `pamr.guide` = \"original\""),
        "{e}"
    );
}
