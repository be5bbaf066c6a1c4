//! Every kernel launch in `src/cuda.rs` passes the arguments its kernel declares, in order: the
//! `launch!` calls name the kernel and give each argument's kind (`p` device buffer, `u32`,
//! `f32`, checked against the Rust types at compile time), and this test compares those lists
//! with the parameter lists of `kernels/*.cu` after the C preprocessor (which expands the
//! per-dtype macros). It also checks that every kernel is launched and every launch has a
//! kernel. With the CPU emulation (`kernels_emulated.rs`) and the CPU implementations, this
//! leaves only CUDA itself for a GPU to check.
//!
//! Needs a C++ preprocessor: `$CXX`, else `c++`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Kernel name → parameter kinds, from the preprocessed `.cu` files.
fn cu_kernels() -> BTreeMap<String, Vec<String>> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let mut out = BTreeMap::new();
    for file in ["fused.cu", "post.cu"] {
        let pre = Command::new(&cxx)
            .args(["-E", "-P", "-x", "c++", "-DSEGSWEEP_CPU_EMULATION"])
            .arg(root().join("kernels").join(file))
            .output()
            .unwrap_or_else(|e| {
                panic!("this test runs the C++ preprocessor; `{cxx}`: {e} (set CXX)")
            });
        assert!(
            pre.status.success(),
            "{}",
            String::from_utf8_lossy(&pre.stderr)
        );
        let text = String::from_utf8_lossy(&pre.stdout).into_owned();
        let mut rest = text.as_str();
        let marker = "extern \"C\" __global__ void ";
        while let Some(i) = rest.find(marker) {
            rest = &rest[i + marker.len()..];
            // `__launch_bounds__(threads, blocks)` may stand before the name.
            if let Some(after) = rest.strip_prefix("__launch_bounds__(") {
                rest = &after[after.find(')').unwrap() + 1..];
            }
            let open = rest.find('(').unwrap();
            let close = rest.find(')').unwrap();
            let name = rest[..open].trim().to_string();
            let kinds = rest[open + 1..close]
                .split(',')
                .map(|p| {
                    let p = p.trim();
                    if p.contains('*') {
                        "p".to_string()
                    } else if p.starts_with("uint32_t ") {
                        "u32".to_string()
                    } else if p.starts_with("float ") {
                        "f32".to_string()
                    } else {
                        panic!("{file}: kernel {name}: unexpected parameter `{p}`")
                    }
                })
                .collect();
            assert!(out.insert(name.clone(), kinds).is_none(), "{name} twice");
            rest = &rest[close..];
        }
    }
    out
}

/// Kernel name (without dtype suffix) → argument kinds, from the `launch!` calls.
fn rust_launches() -> Vec<(String, Vec<String>)> {
    let src = std::fs::read_to_string(root().join("src/cuda.rs")).unwrap();
    let mut out = Vec::new();
    // Skip the macro's own definition: calls start with `launch!(func,`.
    for call in src.split("launch!(func,").skip(1) {
        let q1 = call.find('"').unwrap();
        let q2 = q1 + 1 + call[q1 + 1..].find('"').unwrap();
        let name = call[q1 + 1..q2].to_string();
        let args = &call[q2 + 1..];
        let args = args
            .trim_start()
            .strip_prefix(';')
            .expect("`; ` after the name");
        let end = args.find(")?").expect("a launch ends with `)?`");
        let kinds = args[..end]
            .split(',')
            .map(|a| a.split_whitespace().next().unwrap_or_default().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        out.push((name, kinds));
    }
    out
}

#[test]
fn every_launch_passes_what_its_kernel_declares() {
    let kernels = cu_kernels();
    let launches = rust_launches();
    assert!(kernels.len() >= 21, "{kernels:?}");
    assert!(launches.len() >= 9, "{launches:?}");
    let mut launched = std::collections::BTreeSet::new();
    for (name, kinds) in &launches {
        // Block kernels exist per dtype; post-processing kernels are named in full.
        let matches: Vec<&String> = kernels
            .keys()
            .filter(|k| {
                *k == name
                    || ["f32", "f16", "bf16"]
                        .iter()
                        .any(|s| **k == format!("{name}_{s}"))
            })
            .collect();
        assert!(
            !matches.is_empty(),
            "launch of `{name}`: no such kernel in kernels/*.cu"
        );
        for k in matches {
            assert_eq!(
                &kernels[k], kinds,
                "`{k}`: the .cu parameters vs the launch's arguments"
            );
            launched.insert(k.clone());
        }
    }
    let never: Vec<_> = kernels.keys().filter(|k| !launched.contains(*k)).collect();
    assert!(never.is_empty(), "kernels never launched: {never:?}");
}
