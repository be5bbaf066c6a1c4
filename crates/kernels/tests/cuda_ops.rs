//! segsweep's kernels (`kernels/fused.cu`, `kernels/post.cu`) on a CUDA device against the same
//! ops' CPU implementations, which the unit tests check against candle's composed ops and the
//! host functions. (segsweep-clip's `tests/cuda_fused.rs` runs the tiny model with them.)
//!
//! Only with `--features cuda` (never in CI). `bench/gpu.sh` runs this binary on the GPU
//! machine (built here by `scripts/build-cuda.sh --bench`). Without a CUDA device every test
//! fails with a message rather than passing vacuously: this binary exists to run on one.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, IndexOp, Tensor};
use segsweep_kernels::block::{self as fused, Act};
use segsweep_kernels::post;

fn gpu() -> Device {
    segsweep_kernels::cuda_device(0)
        .expect("a CUDA device: this test binary is meant for the GPU machine")
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    segsweep_kernels::testing::pseudo_random(shape, seed).unwrap()
}

/// max |a − b| / max |b| with both in f32 on the CPU.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    segsweep_kernels::testing::max_rel(a, b).unwrap()
}

/// f32: expf/erff on the device vs libm on the host; halves: at most one rounding step apart.
fn tol(dt: DType) -> f32 {
    match dt {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        _ => 1.6e-2,
    }
}

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

#[test]
fn bias_act_on_the_gpu_equals_the_cpu() {
    let dev = gpu();
    // One odd shape, and one the size of ViT-B/16's fc1 output for 64 crops (more elements than
    // one grid covers, so the grid-stride loop wraps).
    for (rows, cols) in [(3 * 197, 7), (64 * 197, 3072)] {
        let x = rand(&[rows, cols], 1);
        let b = rand(&[cols], 2);
        let r = rand(&[rows, cols], 3);
        for dt in DTYPES {
            let c = |t: &Tensor| t.to_dtype(dt).unwrap();
            let g = |t: &Tensor| t.to_dtype(dt).unwrap().to_device(&dev).unwrap();
            for act in [Act::Identity, Act::QuickGelu, Act::GeluErf] {
                let want = fused::bias_act(&c(&x), &c(&b), act, None).unwrap();
                let got = fused::bias_act(&g(&x), &g(&b), act, None).unwrap();
                assert!(got.device().is_cuda() && got.dtype() == dt);
                assert!(rel(&got, &want) <= tol(dt), "{rows}×{cols} {act:?} {dt:?}");
                let want = fused::bias_act(&c(&x), &c(&b), act, Some(&c(&r))).unwrap();
                let got = fused::bias_act(&g(&x), &g(&b), act, Some(&g(&r))).unwrap();
                let e = rel(&got, &want);
                assert!(e <= tol(dt), "{rows}×{cols} {act:?} {dt:?} + residual: {e}");
            }
        }
    }
}

#[test]
fn head_split_and_merge_on_the_gpu_equal_the_cpu() {
    let dev = gpu();
    for (b, t, heads, hd) in [(2, 5, 3, 4), (64, 197, 12, 64)] {
        let y = rand(&[b, t, 3 * heads * hd], 4);
        let bias = rand(&[3 * heads * hd], 5);
        for dt in DTYPES {
            let want = fused::split_qkv(
                &y.to_dtype(dt).unwrap(),
                &bias.to_dtype(dt).unwrap(),
                heads,
                0.125,
            )
            .unwrap();
            let got = fused::split_qkv(
                &y.to_dtype(dt).unwrap().to_device(&dev).unwrap(),
                &bias.to_dtype(dt).unwrap().to_device(&dev).unwrap(),
                heads,
                0.125,
            )
            .unwrap();
            assert_eq!(got.dims(), [3, b, heads, t, hd]);
            for s in 0..3 {
                let e = rel(&got.i(s).unwrap(), &want.i(s).unwrap());
                assert!(e <= 1e-6, "split {b}×{t} {dt:?} part {s}: {e}");
            }
            // Merge the split v back: (B, H, T, hd) → (B, T, D).
            let want = fused::merge_heads(&want.i(2).unwrap()).unwrap();
            let got = fused::merge_heads(&got.i(2).unwrap()).unwrap();
            assert_eq!(got.dims(), [b, t, heads * hd]);
            assert!(rel(&got, &want) == 0.0, "merge {b}×{t} {dt:?}");
        }
    }
}

#[test]
fn layer_norm_on_the_gpu_equals_the_cpu() {
    let dev = gpu();
    for (rows, cols) in [(7, 33), (64 * 197, 768)] {
        let x = rand(&[rows, cols], 6).affine(4.0, 1.0).unwrap();
        let w = rand(&[cols], 7);
        let b = rand(&[cols], 8);
        for dt in DTYPES {
            let want = fused::layer_norm(&x.to_dtype(dt).unwrap(), &w, &b, 1e-5).unwrap();
            let got = fused::layer_norm(
                &x.to_dtype(dt).unwrap().to_device(&dev).unwrap(),
                &w.to_device(&dev).unwrap(),
                &b.to_device(&dev).unwrap(),
                1e-5,
            )
            .unwrap();
            let e = rel(&got, &want);
            assert!(e <= tol(dt), "{rows}×{cols} {dt:?}: {e}");
        }
    }
}

#[test]
fn attention_on_the_gpu_equals_the_cpu() {
    let dev = gpu();
    // An odd shape (the CUDA-core kernel in every dtype: hd not a multiple of 16), a partial
    // 16-row tile with hd 32 and ViT-B/16's 64 crops of 197 tokens with 12 heads of 64 (the
    // tensor-core kernel in f16 and bf16), and 336-pixel crops' 442 tokens (the largest the
    // tensor-core kernel takes; 47 KB of shared memory at hd 128).
    for (b, h, t, hd) in [
        (2, 3, 37, 24),
        (3, 2, 21, 32),
        (64, 12, 197, 64),
        (2, 2, 442, 128),
        (1, 2, 449, 64),
    ] {
        let q = rand(&[b, h, t, hd], 14).affine(0.125, 0.0).unwrap();
        let k = rand(&[b, h, t, hd], 15);
        let v = rand(&[b, h, t, hd], 16);
        for dt in DTYPES {
            let c = |x: &Tensor| x.to_dtype(dt).unwrap();
            let g = |x: &Tensor| x.to_dtype(dt).unwrap().to_device(&dev).unwrap();
            let want = fused::attention(&c(&q), &c(&k), &c(&v)).unwrap();
            let got = fused::attention(&g(&q), &g(&k), &g(&v)).unwrap();
            assert_eq!(got.dims(), [b, t, h * hd]);
            let e = rel(&got, &want);
            assert!(e <= tol(dt), "attention {b}×{h}×{t}×{hd} {dt:?}: {e}");
        }
    }
    // q at an element offset of 3 (6 bytes: not 32-byte aligned, so not the tensor-core
    // kernel) gives the same result.
    let (b, h, t, hd) = (2, 2, 21, 32);
    let n = b * h * t * hd;
    let big = rand(&[n + 3], 17).affine(0.125, 0.0).unwrap();
    let q = big.narrow(0, 3, n).unwrap().reshape((b, h, t, hd)).unwrap();
    let (k, v) = (rand(&[b, h, t, hd], 18), rand(&[b, h, t, hd], 19));
    let f16 = |x: &Tensor| x.to_dtype(DType::F16).unwrap();
    let want = fused::attention(&f16(&q), &f16(&k), &f16(&v)).unwrap();
    let g = |x: &Tensor| x.to_device(&dev).unwrap();
    let qg = g(&f16(&big))
        .narrow(0, 3, n)
        .unwrap()
        .reshape((b, h, t, hd))
        .unwrap();
    let got = fused::attention(&qg, &g(&f16(&k)), &g(&f16(&v))).unwrap();
    let e = rel(&got, &want);
    assert!(
        e <= tol(DType::F16),
        "attention, q at an unaligned offset: {e}"
    );
}

#[test]
fn post_processing_on_the_gpu_equals_the_cpu() {
    let dev = gpu();
    // 21 classes with synonyms (30 queries) on a VOC-sized 300 × 451 image.
    let query_class: Vec<usize> = (0..30).map(|q| if q < 21 { q } else { q % 7 }).collect();
    let (h, w) = (300, 451);
    let logits = rand(&[30, h, w], 10).affine(0.1, 0.0).unwrap();
    let want = post::class_probs(&logits, 50.0, &query_class, 21).unwrap();
    let got = post::class_probs(&logits.to_device(&dev).unwrap(), 50.0, &query_class, 21).unwrap();
    assert_eq!(got.dims(), [21, h, w]);
    let e = rel(&got, &want);
    assert!(e <= 1e-5, "class_probs: {e}");
    // Counts and labels from the same probabilities on both sides (exact).
    let probs_gpu = want.to_device(&dev).unwrap();
    let cpu_counts: Vec<u32> = post::area_counts(&want).unwrap().to_vec1().unwrap();
    let gpu_counts: Vec<u32> = post::area_counts(&probs_gpu)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(gpu_counts, cpu_counts);
    assert_eq!(cpu_counts.iter().sum::<u32>() as usize, h * w);
    let mut zeroed = vec![false; 21];
    zeroed[3] = true;
    for (thd, bg) in [(0.0, Some(0)), (0.2, Some(0)), (0.5, None)] {
        let a: Vec<u32> = post::threshold_labels(&want, &zeroed, thd, bg)
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<u32> = post::threshold_labels(&probs_gpu, &zeroed, thd, bg)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b, "prob_thd {thd} background {bg:?}");
    }
    // area_thd's flags on the device from the device's counts, then the masked labels (what the
    // dense path runs: nothing comes back before the labels), equal to the CPU.
    let counts_gpu = post::area_counts(&probs_gpu).unwrap();
    let edge = Tensor::new(&[50u32, 10, 11, 29, 0, 16_777_217, 3], &dev).unwrap();
    for (thd, bg) in [(0.0, Some(0)), (0.05, Some(0)), (0.1, None), (0.3, Some(2))] {
        let z_cpu = post::area_zeroed(
            &Tensor::new(cpu_counts.as_slice(), &Device::Cpu).unwrap(),
            thd,
            bg,
        )
        .unwrap();
        let z_gpu = post::area_zeroed(&counts_gpu, thd, bg).unwrap();
        let flags: Vec<u8> = z_gpu.to_device(&Device::Cpu).unwrap().to_vec1().unwrap();
        assert_eq!(
            flags,
            z_cpu.to_vec1::<u8>().unwrap(),
            "area_thd {thd} background {bg:?}"
        );
        let e_cpu = post::area_zeroed(&edge.to_device(&Device::Cpu).unwrap(), thd, bg).unwrap();
        let e_gpu = post::area_zeroed(&edge, thd, bg)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap();
        assert_eq!(
            e_gpu.to_vec1::<u8>().unwrap(),
            e_cpu.to_vec1::<u8>().unwrap()
        );
        let a: Vec<u32> = post::threshold_labels_masked(&want, &z_cpu, 0.1, bg)
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<u32> = post::threshold_labels_masked(&probs_gpu, &z_gpu, 0.1, bg)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b, "area_thd {thd} background {bg:?}");
    }
}

#[test]
fn stitch_and_resize_on_the_gpu_equal_the_cpu_exactly() {
    let dev = gpu();
    // SCLIP on a VOC image resized to 336 × 448: 2 × 3 windows of 224 at stride 112 (the last
    // column clamped), 14 × 14 crop grids, 30 queries; then back to the original 375 × 500.
    let (h, w) = (336, 448);
    let mut wins = Vec::new();
    for y in [0, 112] {
        for x in [0, 112, 224] {
            wins.push((y, x, 224, 224));
        }
    }
    let logits = rand(&[wins.len(), 30, 14, 14], 11);
    let cpu = post::stitch_windows(&logits, &wins, (h, w)).unwrap();
    let gpu = post::stitch_windows(&logits.to_device(&dev).unwrap(), &wins, (h, w)).unwrap();
    assert_eq!(gpu.dims(), [30, h, w]);
    // Products and sums rounded as written on both sides (no fused multiply-adds).
    let flat = |t: &Tensor| -> Vec<f32> {
        t.to_device(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(flat(&gpu), flat(&cpu), "stitch_windows");
    let cpu = post::resize_bilinear(&cpu, (375, 500)).unwrap();
    let gpu = post::resize_bilinear(&gpu, (375, 500)).unwrap();
    assert_eq!(gpu.dims(), [30, 375, 500]);
    assert_eq!(flat(&gpu), flat(&cpu), "resize_bilinear");
}
