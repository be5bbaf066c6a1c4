//! Helpers shared by the test binaries that run `segsweep` from outside (`tests/e2e.rs` and
//! `crates/cli/tests/*.rs`; each is a crate of its own and includes this file as `mod common`).

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, with none of the caller's `SEGSWEEP_*`, `RUST_LOG` or backtrace variables, so a
/// developer's environment cannot change what a test sees.
pub fn segsweep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_segsweep"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SEGSWEEP_") {
            c.env_remove(k);
        }
    }
    c.env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    c
}

/// `segsweep ARGS` in `cwd`, with the text-embedding cache in `cwd/cache`.
pub fn run(args: &[&str], cwd: &Path) -> Output {
    segsweep()
        .args(args)
        .current_dir(cwd)
        .env("SEGSWEEP_CACHE", cwd.join("cache"))
        .output()
        .expect("run segsweep")
}

/// Stdout and stderr of a run that must have succeeded.
#[track_caller]
pub fn ok(out: &Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "segsweep failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// Stderr of a run that must have failed.
#[track_caller]
pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A path in the repository.
pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}
