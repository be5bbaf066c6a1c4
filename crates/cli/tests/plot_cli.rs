//! `segsweep plot` on a real run directory of the demo (tiny random CLIP, synthetic data).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn segsweep(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segsweep"))
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run segsweep")
}

fn demo_run(out: &Path) -> PathBuf {
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments/demo.toml");
    let o = segsweep(&[
        "sweep",
        spec.to_str().unwrap(),
        "--quiet",
        "--run-id",
        "plot-test",
        "--set",
        &format!("experiment.output_dir=\"{}\"", out.display()),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("demo").join("plot-test")
}

#[test]
fn plot_rejects_an_unknown_baseline_and_redraws_with_a_known_one() {
    let out = tempfile::tempdir().unwrap();
    let run = demo_run(out.path());
    let o = segsweep(&["plot", run.to_str().unwrap(), "--baseline", "basline"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("basline") && err.contains("baseline"), "{err}");
    let o = segsweep(&["plot", run.to_str().unwrap(), "--baseline", "+cliptrase"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("charts/delta.png").exists());
}
