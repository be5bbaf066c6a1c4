//! segsweep's own CUDA kernels, as candle custom ops.
//!
//! - [`block`]: the elementwise parts of a ViT block fused into one kernel each (LayerNorm with
//!   f32 weights, bias + GELU, bias + residual, q/k/v split, head merge).
//! - [`post`]: SCLIP's post-processing of dense logits (synonym softmax, area counts, argmax and
//!   thresholds), one kernel per step instead of ~35 candle ops.
//!
//! The kernels are in `kernels/*.cu`, compiled to PTX by `build.rs` with the `cuda` feature. Every
//! op also runs on the CPU: its `cpu_fwd` transliterates the kernel loop for loop, and unit tests
//! check it against candle's composed ops (or segsweep's host functions). `kernels/emulate.cpp`
//! runs the kernel source itself on the CPU under a small CUDA shim (`tests/kernels_emulated.rs`);
//! `tests/kernel_signatures.rs` checks that every launch passes the arguments its kernel
//! declares; and `tests/cuda_ops.rs` compares each kernel on a GPU with the CPU implementation.
//!
//! **Status: the default on CUDA.** Run on an H100 (`bench/gpu.sh`, 2026-11-27): every kernel
//! equals its CPU implementation (`tests/cuda_ops.rs`), `segsweep predict` in f32 agrees with the
//! CPU (probabilities within 4e-6 relative, all labels equal), and the sweeps of
//! `bench/gpu-runner.sh` give the CPU's numbers. Callers use them where [`enabled`] says so: on
//! CUDA unless `SEGSWEEP_CUDA_KERNELS=candle` selects candle's composed ops.

pub mod block;
#[cfg(feature = "cuda")]
mod cuda;
pub mod post;
pub mod tables;
#[doc(hidden)]
pub mod testing;

use std::cell::Cell;
use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Device, Layout, Result};

/// CUDA device `ordinal` as segsweep opens it: candle's device (each host thread launches on
/// CUDA's per-thread default stream) with cudarc's per-allocation event tracking off.
///
/// cudarc creates two CUDA events with every buffer and destroys them with it, so that a buffer
/// used on several of the streams *it* created is ordered across them. candle creates none (a
/// per-thread stream does not count), so those events are never recorded or waited on: they
/// are four driver calls per tensor for nothing, on a path where a ViT block's small ops are
/// bound by per-op host overhead. segsweep orders its threads itself (each thread finishes its
/// work before another reads it; see the README's "Two threads, two streams"), which is what
/// cudarc asks of a caller that turns tracking off. Without the `cuda` feature: candle's error.
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    let device = Device::new_cuda(ordinal)?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &device {
        // SAFETY: only buffers allocated from now on lose their events; nothing in candle or
        // segsweep waits on them (cudarc records and waits only in its multi-stream mode, which
        // candle's per-thread stream never enters), and segsweep synchronises a thread's stream
        // before another thread reads or frees what it produced.
        unsafe { d.cuda_stream().context().disable_event_tracking() };
    }
    Ok(device)
}

/// Environment variable that selects the CUDA kernels: `fused` (this crate's, the default) or
/// `candle` (candle's composed ops).
pub const ENV: &str = "SEGSWEEP_CUDA_KERNELS";

fn env_choice() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(|| parse_choice(std::env::var(ENV).ok().as_deref()))
}

/// [`ENV`]'s value → whether the fused kernels are used: unset, empty or `fused` → yes,
/// `candle` → no (either in any case, spaces around ignored), anything else → yes, with a
/// warning.
fn parse_choice(v: Option<&str>) -> bool {
    parse_either(ENV, v, "fused", "candle")
}

/// Variable `var`'s value `v` as a choice between `default` (unset, empty or `default` → true)
/// and `other` (→ false), in any case, spaces around ignored; anything else keeps the default
/// and logs a warning naming `var`.
fn parse_either(var: &str, v: Option<&str>, default: &str, other: &str) -> bool {
    match v.map(|v| v.trim().to_ascii_lowercase()) {
        None => true,
        Some(t) if t.is_empty() || t == default => true,
        Some(t) if t == other => false,
        Some(_) => {
            let v = v.unwrap_or_default();
            tracing::warn!(
                "{var}={v:?} is not `{default}` or `{other}`; using `{default}` (the default)"
            );
            true
        }
    }
}

/// Environment variable that picks the tensor-core attention kernel on CUDA: `fa` (mma.sync,
/// K and Vᵀ staged in shared memory; the default) or `wmma` (the first kernel: one warp per
/// block, scores through shared memory), for comparing the two on a GPU.
pub const ATTENTION_ENV: &str = "SEGSWEEP_CUDA_ATTENTION";

/// Whether [`ATTENTION_ENV`] leaves the mma.sync attention kernel chosen (read once).
pub(crate) fn attention_fa_chosen() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(|| parse_attention(std::env::var(ATTENTION_ENV).ok().as_deref()))
}

/// [`ATTENTION_ENV`]'s value → whether the mma.sync kernel is chosen: unset, empty or `fa` →
/// yes, `wmma` → no (any case, spaces ignored), anything else → yes, with a warning.
fn parse_attention(v: Option<&str>) -> bool {
    parse_either(ATTENTION_ENV, v, "fa", "wmma")
}

thread_local! {
    /// Tests: use the ops' CPU implementations in place of candle's ops on the CPU too.
    static FORCE: Cell<bool> = const { Cell::new(false) };
}

/// Test hook: runs `f` with [`enabled`] true on every device of this thread, so callers' fused
/// plumbing runs on the CPU (through the ops' CPU implementations) in tests without a GPU.
#[doc(hidden)]
pub fn forced<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FORCE.with(|c| c.set(false));
        }
    }
    FORCE.with(|c| c.set(true));
    let _reset = Reset;
    f()
}

/// Which kernels compute on `dev`, for result records, the reuse check and the feature cache's
/// key: `cpu` (candle's CPU backend and segsweep-clip's fused CPU block), `fused` (CUDA, unless
/// [`ENV`]`=candle`), `fused-wmma` (the same with [`ATTENTION_ENV`]`=wmma`, whose half-precision
/// attention differs in the last bits) or `candle` (candle's ops on any other device).
pub fn kernels_for(dev: &Device) -> &'static str {
    if dev.is_cpu() {
        "cpu"
    } else if dev.is_cuda() && env_choice() {
        fused_label(attention_fa_chosen())
    } else {
        "candle"
    }
}

/// The label of the fused CUDA kernels with the mma.sync attention (`fa`: `fused`) or the WMMA
/// one (`fused-wmma`).
fn fused_label(fa: bool) -> &'static str {
    if fa {
        "fused"
    } else {
        "fused-wmma"
    }
}

/// [`kernels_for`] by a device's name as a spec writes it (`cpu`, `cuda:N`), without creating
/// the device.
pub fn kernels_for_name(device: &str) -> &'static str {
    if device == "cpu" {
        "cpu"
    } else if device.starts_with("cuda") && env_choice() {
        fused_label(attention_fa_chosen())
    } else {
        "candle"
    }
}

/// Whether callers should use these ops for a tensor of `elems` elements on `dev`: on CUDA unless
/// [`ENV`] is `candle` (read once per process), and only below 2^31 elements (the kernels index
/// in 32 bits); everywhere inside [`forced`].
pub fn enabled(dev: &Device, elems: usize) -> bool {
    if FORCE.with(|c| c.get()) {
        return true;
    }
    dev.is_cuda() && elems <= i32::MAX as usize && env_choice()
}

/// Threads a row-strided launch aims at: about four full waves of an H100 (132 SMs × 2048
/// threads), so that each thread covers many rows. A launch of one row per block (the first
/// version) spent more time starting blocks than moving data (the ops took 1.7–3.1× longer on
/// an H100, comparing two leases).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA launches
pub(crate) const TARGET_THREADS: u32 = 1 << 20;

/// Blocks down a row-strided launch of `blocks_x` blocks of `threads` across uses for `rows`
/// rows: about [`TARGET_THREADS`] threads in all, at least 1, at most one per row and 65 535
/// (CUDA's limit for `gridDim.y`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA launches
pub(crate) fn rows_down(blocks_x: u32, threads: u32, rows: u32) -> u32 {
    let cap = (TARGET_THREADS / blocks_x.max(1).saturating_mul(threads.max(1))).clamp(1, 65_535);
    rows.clamp(1, cap)
}

/// A contiguous float tensor's values as f32 (the CPU implementations compute in f32).
pub(crate) fn cpu_f32(s: &CpuStorage, l: &Layout, what: &str) -> Result<Vec<f32>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{what}: expected a contiguous tensor");
    };
    Ok(match s {
        CpuStorage::F32(v) => v[a..b].to_vec(),
        CpuStorage::F16(v) => v[a..b].iter().map(|x| x.to_f32()).collect(),
        CpuStorage::BF16(v) => v[a..b].iter().map(|x| x.to_f32()).collect(),
        _ => bail!("{what}: expected f32, f16 or bf16, got {:?}", s.dtype()),
    })
}

/// f32 values rounded once to `dt`.
pub(crate) fn cpu_round(v: Vec<f32>, dt: DType) -> Result<CpuStorage> {
    Ok(match dt {
        DType::F32 => CpuStorage::F32(v),
        DType::F16 => CpuStorage::F16(v.into_iter().map(half::f16::from_f32).collect()),
        DType::BF16 => CpuStorage::BF16(v.into_iter().map(half::bf16::from_f32).collect()),
        dt => bail!("fused op: unsupported dtype {dt:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_kernels_are_the_default_and_candle_opts_out() {
        assert!(parse_choice(None));
        assert!(parse_choice(Some("")));
        assert!(parse_choice(Some("fused")));
        assert!(!parse_choice(Some("candle")));
        assert!(!parse_choice(Some(" Candle ")));
        assert!(parse_choice(Some("FUSED")));
        assert!(parse_choice(Some("off")), "unknown values keep the default");
    }

    #[test]
    fn mma_sync_attention_is_the_default_and_wmma_opts_out() {
        assert!(parse_attention(None));
        assert!(parse_attention(Some("")));
        assert!(parse_attention(Some(" FA ")));
        assert!(!parse_attention(Some("wmma")));
        assert!(!parse_attention(Some(" WMMA")));
        assert!(
            parse_attention(Some("flash")),
            "unknown values keep the default"
        );
    }

    #[test]
    fn row_strided_launches_cover_many_rows_per_thread_within_cuda_limits() {
        // fc1 of 64 ViT-B/16 crops: 12 blocks of 256 across, 12 608 rows → 341 blocks down,
        // so each thread covers ~37 rows.
        assert_eq!(rows_down(12, 256, 64 * 197), 341);
        // Few rows: one block per row, never zero.
        assert_eq!(rows_down(12, 256, 5), 5);
        assert_eq!(rows_down(12, 256, 0), 1);
        // A launch wider than the target still gets one block down; never above 65 535.
        assert_eq!(rows_down(1 << 20, 1024, 1000), 1);
        assert_eq!(rows_down(1, 1, u32::MAX), 65_535);
        assert_eq!(rows_down(0, 0, 10), 10);
    }

    #[test]
    fn the_cpu_never_reports_fused_kernels() {
        assert_eq!(kernels_for(&Device::Cpu), "cpu");
        assert_eq!(kernels_for_name("cpu"), "cpu");
        assert_eq!(kernels_for_name("metal:0"), "candle");
    }

    #[test]
    fn records_tell_the_two_attention_kernels_apart() {
        assert_eq!(fused_label(true), "fused");
        assert_eq!(fused_label(false), "fused-wmma");
    }
}
