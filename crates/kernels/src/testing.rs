//! Helpers shared by the tests of the kernels' users (this crate's unit tests, `tests/cuda_ops.rs`,
//! segsweep-clip's `tests/cuda_fused.rs`). Not part of the API.

use candle_core::{DType, Device, Result, Tensor};

/// Deterministic values in (−2, 2) without a RNG: a scrambled sine, `shape` f32 on the CPU.
pub fn pseudo_random(shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 12.9898 + seed as f32 * 78.233).sin() * 43758.545).fract() * 2.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// `max |a − b| / max |b|`, both taken to the CPU in f32 (any shapes of equal size).
pub fn max_rel(a: &Tensor, b: &Tensor) -> Result<f32> {
    let f = |t: &Tensor| -> Result<Tensor> {
        t.to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()
    };
    let (a, b) = (f(a)?, f(b)?);
    let d = (&a - &b)?.abs()?.max(0)?.to_scalar::<f32>()?;
    let s = b.abs()?.max(0)?.to_scalar::<f32>()?;
    Ok(d / s.max(1e-12))
}
