//! Helpers shared by the parity tests.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

/// Load a golden file from `tests/fixtures/resclip/`.
pub fn golden(name: &str) -> HashMap<String, Tensor> {
    let path = format!(
        "{}/../../tests/fixtures/resclip/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{path}: {e} (regenerate with the reference script)"))
}

/// An i64 label tensor of any shape, flattened to u32.
pub fn labels(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as u32)
        .collect()
}
