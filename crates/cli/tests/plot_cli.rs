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
