//! `segsweep plot` on a real run directory of the demo (tiny random CLIP, synthetic data).

use std::path::{Path, PathBuf};

mod common;
use common::{fails, ok, repo, run};

/// Run the demo spec in `out` and return its run directory.
fn demo_run(out: &Path) -> PathBuf {
    let spec = repo("experiments/demo.toml");
    ok(&run(
        &[
            "sweep",
            spec.to_str().unwrap(),
            "--quiet",
            "--run-id",
            "plot-test",
            "--set",
            &format!("experiment.output_dir=\"{}\"", out.display()),
        ],
        out,
    ));
    out.join("demo").join("plot-test")
}

#[test]
fn plot_rejects_an_unknown_baseline_and_redraws_with_a_known_one() {
    let out = tempfile::tempdir().unwrap();
    let dir = demo_run(out.path());
    let d = dir.to_str().unwrap();
    let err = fails(&run(&["plot", d, "--baseline", "basline"], out.path()));
    assert!(err.contains("basline") && err.contains("baseline"), "{err}");
    ok(&run(&["plot", d, "--baseline", "+cliptrase"], out.path()));
    assert!(dir.join("charts/delta.png").exists());
}

/// Audit: an `order.txt` listing none of the records warned that they belong to no
/// configuration, then said `counts/ has no record`; a run with only checkpoints and a `charts`
/// file in the way failed without a hint.
#[test]
fn plot_explains_a_damaged_order_txt_an_unfinished_sweep_and_a_charts_file() {
    let out = tempfile::tempdir().unwrap();
    let dir = demo_run(out.path());
    let d = dir.to_str().unwrap();
    let order = std::fs::read_to_string(dir.join("order.txt")).unwrap();
    std::fs::write(dir.join("order.txt"), "garbage\n").unwrap();
    let err = fails(&run(&["plot", d], out.path()));
    assert!(
        err.contains("order.txt: lists none of the 5 record(s) in counts/")
            && err.contains("hint: order.txt lists the configuration hashes")
            && !err.contains("counts/ has no record"),
        "{err}"
    );
    std::fs::write(dir.join("order.txt"), order).unwrap();
    std::fs::remove_dir_all(dir.join("charts")).unwrap();
    std::fs::write(dir.join("charts"), "").unwrap();
    let err = fails(&run(&["plot", d], out.path()));
    assert!(
        err.contains("charts: is a file, not a directory")
            && err.contains("hint: remove or rename that file"),
        "{err}"
    );

    // A sweep stopped before it finished a configuration leaves only checkpoints.
    let spec = repo("experiments/demo.toml");
    let stopped = run(
        &[
            "sweep",
            spec.to_str().unwrap(),
            "--quiet",
            "--run-id",
            "stopped",
            "--stop-after-images",
            "1",
            "--no-reuse",
            "--set",
            &format!("experiment.output_dir=\"{}\"", out.path().display()),
        ],
        out.path(),
    );
    assert_eq!(stopped.status.code(), Some(130));
    let run_dir = out.path().join("demo/stopped");
    let err = fails(&run(&["plot", run_dir.to_str().unwrap()], out.path()));
    assert!(
        err.contains("*.partial.json")
            && err.contains("has not finished a configuration yet")
            && err.contains("segsweep sweep SPEC"),
        "{err}"
    );
}
