//! The override layers of a spec, from outside: `SEGSWEEP_<SECTION>__<KEY>` environment
//! variables, `--set`, and `--device` / `--dtype` on `validate` and `sweep` (issue 2's layering,
//! issue 7's flag). `validate` loads no weights, so these run in milliseconds.

use std::path::PathBuf;
use std::process::Output;

mod common;

fn demo_spec() -> PathBuf {
    common::repo("experiments/demo.toml")
}

/// `segsweep SUB demo.toml ARGS` with `env` set and every other `SEGSWEEP_*` removed.
fn segsweep(sub: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    common::segsweep()
        .arg(sub)
        .arg(demo_spec())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run segsweep")
}

fn validate(args: &[&str], env: &[(&str, &str)]) -> Output {
    segsweep("validate", args, env)
}

/// The first configuration's line of `validate`'s output.
fn first_config(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "validate failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with("#1 "))
        .unwrap_or_else(|| panic!("no configuration line in:\n{stdout}"))
        .to_string()
}

fn hash(line: &str) -> &str {
    line.split_whitespace().nth(1).expect("a hash column")
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn environment_overrides_the_spec_in_upper_case_as_documented() {
    let base = first_config(&validate(&[], &[]));
    assert!(base.contains("prob_thd=0 "), "{base}");
    let env = first_config(&validate(&[], &[("SEGSWEEP_INFERENCE__PROB_THD", "0.3")]));
    assert!(env.contains("prob_thd=0.3 "), "{env}");
    assert_ne!(
        hash(&base),
        hash(&env),
        "the override must change the configuration"
    );
    // The same in lower case (figment lower-cases keys) gives the same configuration.
    let lower = first_config(&validate(&[], &[("SEGSWEEP_inference__prob_thd", "0.3")]));
    assert_eq!(hash(&lower), hash(&env));
    // Variables outside the spec's sections are not spec keys (SEGSWEEP_CACHE is a path).
    let other = first_config(&validate(&[], &[("SEGSWEEP_CACHE", "/nonexistent")]));
    assert_eq!(hash(&other), hash(&base));
}

#[test]
fn a_bad_environment_value_is_an_error_naming_key_and_source() {
    let err = stderr(&validate(
        &[],
        &[("SEGSWEEP_INFERENCE__LOGIT_SCALE", "abc")],
    ));
    assert!(err.contains("inference.logit_scale"), "{err}");
    assert!(err.contains("SEGSWEEP_"), "{err}");
}

#[test]
fn set_beats_the_environment() {
    let both = first_config(&validate(
        &["--set", "inference.prob_thd=0.2"],
        &[("SEGSWEEP_INFERENCE__PROB_THD", "0.3")],
    ));
    assert!(both.contains("prob_thd=0.2 "), "{both}");
}

#[test]
fn device_and_dtype_flags_set_the_model_section() {
    let base = first_config(&validate(&[], &[]));
    assert!(base.contains("device=cpu dtype=f32"), "{base}");
    let flags = first_config(&validate(&["--device", "cuda:0", "--dtype", "f16"], &[]));
    assert!(flags.contains("device=cuda:0 dtype=f16"), "{flags}");
    // The same as the `--set` spelling ...
    let set = first_config(&validate(
        &[
            "--set",
            "model.device=\"cuda:0\"",
            "--set",
            "model.dtype=\"f16\"",
        ],
        &[],
    ));
    assert_eq!(hash(&set), hash(&flags));
    // ... and applied after it.
    let both = first_config(&validate(
        &["--set", "model.dtype=\"bf16\"", "--dtype", "f16"],
        &[],
    ));
    assert!(both.contains("device=cpu dtype=f16"), "{both}");
}

#[test]
fn bad_device_and_dtype_flags_name_the_key() {
    let err = stderr(&validate(&["--device", "gpu"], &[]));
    assert!(
        err.contains("model.device") && err.contains("hint"),
        "{err}"
    );
    let err = stderr(&validate(&["--dtype", "f64"], &[]));
    assert!(err.contains("model.dtype") && err.contains("hint"), "{err}");
}

/// `SEGSWEEP_<SECTION>__<KEY>` for a section the environment does not set (a typo, a pipeline
/// entry, the sweep) is an error naming the variable, not silently ignored.
#[test]
fn an_environment_variable_for_an_unknown_section_is_an_error() {
    for (var, want) in [
        ("SEGSWEEP_INFERNCE__PROB_THD", "did you mean `inference`"),
        ("SEGSWEEP_PAMR__STEPS", "--set"),
        ("SEGSWEEP_SWEEP__BASELINE", "--set"),
    ] {
        let err = stderr(&validate(&[], &[(var, "1")]));
        assert!(err.contains(var) && err.contains(want), "{var}: {err}");
    }
}

/// An environment value on a key the sweep sets would be overwritten silently: an error. One
/// underscore where two are needed gets the spelling.
#[test]
fn environment_values_that_would_be_ignored_are_errors() {
    // demo.toml sweeps cliptrase.correlation_temperature; its variants set no section keys, so
    // use a grid on a section key through a spec of our own.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.toml");
    std::fs::write(
        &spec,
        "[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"synthetic\"\n[sweep.grid]\n\"inference.logit_scale\" = [40.0, 50.0]\n",
    )
    .unwrap();
    let out = common::segsweep()
        .args(["validate", spec.to_str().unwrap()])
        .env("SEGSWEEP_INFERENCE__LOGIT_SCALE", "70")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("inference.logit_scale") && err.contains("SEGSWEEP_"),
        "{err}"
    );
    let err = stderr(&validate(&[], &[("SEGSWEEP_INFERENCE_PROB_THD", "0.1")]));
    assert!(err.contains("SEGSWEEP_INFERENCE__PROB_THD"), "{err}");
}

/// What a variant's `set` changes is listed under its configuration (the label shows only the
/// variant's name).
#[test]
fn validate_lists_what_a_variant_sets() {
    let out = common::segsweep()
        .args(["validate"])
        .arg(common::repo("experiments/phase1.toml"))
        .output()
        .unwrap();
    let (stdout, _) = common::ok(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("phase1-loftup-faithful"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        lines[at + 1].trim(),
        "variant `phase1-loftup-faithful` sets: loftup.feature_source=\"maskclip-rerun\""
    );
    assert_eq!(stdout.matches(" sets: ").count(), 1, "{stdout}");
}
