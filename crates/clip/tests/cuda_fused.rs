//! The tiny model on a CUDA device with segsweep's fused kernels (`SEGSWEEP_CUDA_KERNELS=fused`)
//! against the CPU. Only with `--features cuda` (never in CI); `bench/gpu.sh` runs it on the GPU
//! machine. Without a CUDA device it fails with a message: it exists to run on one.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};

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

/// The tiny model's prefix and SCLIP last block on the GPU with the fused kernels (f32) against
/// the CPU. The kernel choice is read once per process, so it is set before the first use.
#[test]
fn tiny_model_with_fused_kernels_on_the_gpu_equals_the_cpu() {
    std::env::set_var(segsweep_kernels::ENV, "fused");
    use segsweep_clip::{attention, ClipModel};
    use segsweep_core::{Backbone, Needs};
    let dev = gpu();
    let crops = rand(&[2, 3, 48, 80], 9);
    let run = |d: &Device, dt: DType| {
        let m = ClipModel::load("builtin:tiny-random", d, dt).unwrap();
        let x = crops.to_device(d).unwrap().to_dtype(dt).unwrap();
        let p = m.prefix(&x, &Needs::default()).unwrap();
        let y = attention::sclip(m.last_block(), &p.tokens).unwrap();
        let f32 = |t: Tensor| t.to_dtype(DType::F32).unwrap();
        (f32(p.tokens), f32(m.head(&y, p.grid).unwrap()))
    };
    let (tc, hc) = run(&Device::Cpu, DType::F32);
    let (tg, hg) = run(&dev, DType::F32);
    assert!(rel(&tg, &tc) <= 1e-4, "prefix: {}", rel(&tg, &tc));
    assert!(rel(&hg, &hc) <= 1e-4, "head: {}", rel(&hg, &hc));
    // f16 (head dim 16: attention on the tensor cores) against the f32 CPU model, as close as
    // candle's composed f16 ops on the CPU are (a wrong tile layout or mask is off by O(1)).
    let (tc16, hc16) = run(&Device::Cpu, DType::F16);
    let (tg16, hg16) = run(&dev, DType::F16);
    for (what, g, c16, c) in [("prefix", &tg16, &tc16, &tc), ("head", &hg16, &hc16, &hc)] {
        let (eg, ec) = (rel(g, c), rel(c16, c));
        assert!(
            eg <= 2.0 * ec + 5e-3,
            "{what} f16: GPU {eg} vs CPU composed {ec}"
        );
    }
}
