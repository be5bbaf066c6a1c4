//! Helpers shared by the runner's integration tests.

use segsweep_runner::{run, run_dir, Experiment, RunOptions};

/// Runs `exp`, which must fail, and asserts that it left no run directory behind (nothing that
/// looks like a result); returns the error's text.
pub fn run_fails_without_run_dir(exp: &Experiment, opts: &RunOptions) -> String {
    let err = run(exp, opts).unwrap_err().to_string();
    assert!(
        !run_dir(exp, opts).exists(),
        "a failed start left {}",
        run_dir(exp, opts).display()
    );
    err
}
