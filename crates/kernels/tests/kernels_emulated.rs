//! segsweep's CUDA kernels (`kernels/fused.cu`, `kernels/post.cu`) executed on the CPU:
//! `kernels/emulate.cpp`
//! compiles the kernel source itself with a C++20 compiler and a shim for the CUDA features it
//! uses (thread and block indices, warp shuffles run by 32 threads at a barrier, fp16/bf16),
//! runs every kernel in f32, f16 and bf16 on awkward shapes and compares it with naive nested
//! loops. This checks the kernels' own index arithmetic, guards, row striding and warp
//! reductions without a GPU; `tests/cuda_ops.rs` checks them on one (`bench/gpu.sh`).
//!
//! Needs a C++20 compiler: `$CXX`, else `c++` (g++ ≥ 11 or clang++ ≥ 14; the development and
//! CI machines have g++ 12).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn fused_kernels_under_cpu_emulation_match_naive_loops() {
    let kernels = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("emulate");
    let built = Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O1",
            "-pthread",
            "-ffp-contract=off",
            "-DSEGSWEEP_CPU_EMULATION",
            "-I",
        ])
        .arg(&kernels)
        .arg(kernels.join("emulate.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test compiles kernels/emulate.cpp with a C++20 compiler; `{cxx}`: {e} (set CXX)")
        });
    assert!(
        built.status.success(),
        "compiling kernels/emulate.cpp with {cxx} failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    println!("{out}");
    assert!(
        run.status.success(),
        "a kernel differs from its reference:\n{out}"
    );
    // Every block kernel ran in every dtype (10 checks each, 4 of attention), the two
    // tensor-core attention kernels (WMMA, mma.sync) in f16 and bf16 (3 checks each), the 6
    // post-processing kernels (softmax, counts, area flags, labels, resize, stitch) in f32, and
    // nothing failed.
    for (dtype, checks) in [("f32", 20), ("f16", 20), ("bf16", 20)] {
        let n = out
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == dtype) && l.ends_with(" ok"))
            .count();
        assert_eq!(n, checks, "{dtype}:\n{out}");
    }
    assert!(out.contains("all kernels match") && !out.contains("FAIL"));
}
