//! What `segsweep` prints when it fails, from outside: each cause once, the hint once and last,
//! and no stack trace inside the message even with `RUST_BACKTRACE=1` (review A3, D18, D20).
//!
//! Before, every I/O error printed its OS error twice (the error's message held it and the
//! binary printed the `source()` chain too: `x: No such file…: No such file…`, the second one
//! after the hint), and candle errors carried 20–30 lines of frames under `RUST_BACKTRACE=1`.

use std::path::{Path, PathBuf};

mod common;
use common::repo;

/// `segsweep ARGS` with `env` (and nothing of the caller's `SEGSWEEP_*`, `RUST_LOG` or
/// `RUST_*BACKTRACE`) and a private cache; returns stderr, asserting that the command failed.
fn fails(args: &[&str], env: &[(&str, &str)], cache: &Path) -> String {
    common::fails(
        &common::segsweep()
            .env("SEGSWEEP_CACHE", cache)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run segsweep"),
    )
}

/// The OS's text for a missing file, as std prints it ("No such file or directory (os error 2)"
/// on Linux).
fn not_found_text() -> String {
    std::fs::read("/segsweep/definitely/missing")
        .unwrap_err()
        .to_string()
}

/// Each cause once, one hint, and that hint on the last line.
fn assert_once_with_hint_last(err: &str, cause: &str) {
    assert_eq!(
        err.matches(cause).count(),
        1,
        "`{cause}` not exactly once:\n{err}"
    );
    assert_eq!(err.matches("hint").count(), 1, "not one hint:\n{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains("hint"), "the hint is not last:\n{err}");
}

/// No frames of a captured backtrace in the message.
fn assert_no_backtrace(err: &str) {
    assert!(!err.contains("stack backtrace"), "{err}");
    // Log lines may come before the message; the message is what follows `error: `.
    let msg = &err[err.find("error: ").unwrap_or(0)..];
    assert!(!err.contains("candle_core::"), "{err}");
    let frame = |l: &str| {
        let t = l.trim_start();
        t.split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    assert!(!msg.lines().any(frame), "a backtrace frame line:\n{err}");
    assert!(msg.lines().count() <= 2, "{err}");
}

#[test]
fn a_missing_spec_prints_the_os_error_once_then_the_hint() {
    let cache = tempfile::tempdir().unwrap();
    for sub in ["validate", "sweep"] {
        let err = fails(
            &[sub, "/segsweep/missing/spec.toml"],
            &[("RUST_BACKTRACE", "1")],
            cache.path(),
        );
        assert!(err.contains("/segsweep/missing/spec.toml"), "{err}");
        assert_once_with_hint_last(&err, &not_found_text());
        assert_no_backtrace(&err);
    }
}

#[test]
fn a_missing_class_file_for_predict_prints_the_os_error_once() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // The image exists (inputs are checked first), the class file does not.
    let image = out.path().join("x.png");
    image::RgbImage::from_pixel(8, 6, image::Rgb([1, 2, 3]))
        .save(&image)
        .unwrap();
    let err = fails(
        &[
            "predict",
            "--model",
            "builtin:tiny-random",
            "--classes",
            "/segsweep/missing/classes.txt",
            image.to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
        cache.path(),
    );
    assert!(err.contains("/segsweep/missing/classes.txt"), "{err}");
    assert_eq!(err.matches(&not_found_text()).count(), 1, "{err}");
}

#[test]
fn plot_on_a_directory_without_records_prints_the_os_error_once_then_the_hint() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&["plot", dir.path().to_str().unwrap()], &[], cache.path());
    assert!(err.contains("counts"), "{err}");
    assert_once_with_hint_last(&err, &not_found_text());
}

/// A copy of the tiny CLIP fixture whose `config.json` asks for one vision layer more than the
/// weights hold, and an image to segment.
fn mismatched_model(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("model");
    std::fs::create_dir(&model).unwrap();
    let fixture = repo("tests/fixtures/tiny-clip");
    std::fs::copy(
        fixture.join("model.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap())
            .unwrap();
    let layers = &mut config["vision_config"]["num_hidden_layers"];
    *layers = (layers.as_u64().expect("num_hidden_layers") + 1).into();
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let image = dir.join("x.png");
    image::RgbImage::new(32, 24).save(&image).unwrap();
    (model, image)
}

#[test]
fn a_candle_error_has_no_backtrace_with_rust_backtrace_set() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (model, image) = mismatched_model(dir.path());
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "a\nb\n").unwrap();
    let out = dir.path().join("out");
    let args = [
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--classes",
        classes.to_str().unwrap(),
        image.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for env in [
        &[("RUST_BACKTRACE", "1")][..],
        &[("RUST_BACKTRACE", "full")],
        // Asked for by name: the message still holds no frames.
        &[("RUST_LIB_BACKTRACE", "1")],
    ] {
        let err = fails(&args, env, cache.path());
        assert!(err.contains("model.safetensors"), "{env:?}: {err}");
        assert_once_with_hint_last(&err, "cannot find tensor");
        assert_no_backtrace(&err);
    }
}

#[test]
fn a_truncated_weights_file_is_named_once_without_backtrace() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (model, image) = mismatched_model(dir.path());
    std::fs::write(
        model.join("config.json"),
        std::fs::read(repo("tests/fixtures/tiny-clip/config.json")).unwrap(),
    )
    .unwrap();
    let weights = model.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.path().join("classes.txt"), "a\nb\n").unwrap();
    let err = fails(
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--classes",
            dir.path().join("classes.txt").to_str().unwrap(),
            image.to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ],
        &[("RUST_BACKTRACE", "1")],
        cache.path(),
    );
    assert_eq!(
        err.matches(weights.to_str().unwrap()).count(),
        1,
        "the weights file is not named exactly once:\n{err}"
    );
    assert_eq!(err.matches("hint").count(), 1, "{err}");
    assert_no_backtrace(&err);
}

/// `segsweep validate SPEC | head -1`: a reader that closes the pipe early ends the process
/// quietly (SIGPIPE, as other tools), not with a `println!` panic.
#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_ends_quietly_without_a_panic() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    // 1,000 configurations print far more than a pipe buffer (64 KiB) holds.
    let values: Vec<String> = (0..1000)
        .map(|i| format!("{}", 0.001 * f64::from(i)))
        .collect();
    let spec = tmp.path().join("big.toml");
    std::fs::write(
        &spec,
        format!(
            "[experiment]\nname = \"big\"\n[model]\nsource = \"builtin:tiny-random\"\n[sweep.grid]\n\"inference.prob_thd\" = [{}]\n",
            values.join(", ")
        ),
    )
    .unwrap();
    let mut child = common::segsweep()
        .args(["validate", spec.to_str().unwrap()])
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is dropped here, closing the pipe while the child still writes.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ended by SIGPIPE; stderr: {stderr}"
    );
}

/// Audit: `segsweep plugins PAMR` listed the plugins without guessing `pamr` (too short for the
/// edit distance) and gave no hint.
#[test]
fn plugins_with_a_wrong_case_name_suggests_the_registered_one() {
    let cache = tempfile::tempdir().unwrap();
    for (name, guess) in [("PAMR", "pamr"), ("ClipTrase", "cliptrase")] {
        let err = fails(&["plugins", name], &[], cache.path());
        assert!(
            err.contains(&format!("did you mean `{guess}`?"))
                && err.contains("registered plugins: clip-rc, cliptrase"),
            "{err}"
        );
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(last.contains("hint: plugin names are lower-case"), "{err}");
    }
}
