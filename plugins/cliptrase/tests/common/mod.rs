//! Test helpers: golden loading and a backbone that only answers `info` and `device`, enough
//! for feature-stage plugins that read nothing but the features.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use segsweep_core::{
    Backbone, BackboneInfo, CoreError, LastBlock, Needs, PrefixOut, Result, WeightsKind,
};

/// `tests/fixtures/<area>/<file>` of the workspace.
pub fn fixture(area: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(area)
        .join(file)
}

/// All tensors of a golden file.
pub fn load(area: &str, file: &str) -> HashMap<String, Tensor> {
    let path = fixture(area, file);
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run tests/reference/cliptrase_cliprc_reference.py)",
            path.display()
        )
    })
}

/// Largest absolute difference between two f32 tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub struct NoBlock;

fn absent() -> CoreError {
    CoreError::Msg("the test backbone has no weights".into())
}

impl LastBlock for NoBlock {
    fn heads(&self) -> usize {
        1
    }
    fn ln_1(&self, _: &Tensor) -> Result<Tensor> {
        Err(absent())
    }
    fn qkv(&self, _: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        Err(absent())
    }
    fn out_proj(&self, _: &Tensor) -> Result<Tensor> {
        Err(absent())
    }
    fn ln_2(&self, _: &Tensor) -> Result<Tensor> {
        Err(absent())
    }
    fn mlp(&self, _: &Tensor) -> Result<Tensor> {
        Err(absent())
    }
}

/// A backbone without weights.
pub struct NoBackbone {
    info: BackboneInfo,
    device: Device,
    block: NoBlock,
}

impl NoBackbone {
    pub fn new() -> NoBackbone {
        NoBackbone {
            info: BackboneInfo {
                model_id: "test:none".into(),
                file_hash: "0".into(),
                weights: WeightsKind::Synthetic,
                patch_size: 16,
                image_size: 224,
                width: 8,
                embed_dim: 8,
                layers: 12,
                heads: 1,
                mean: [0.5; 3],
                std: [0.25; 3],
                dtype: "f32".into(),
                device: "cpu".into(),
            },
            device: Device::Cpu,
            block: NoBlock,
        }
    }
}

impl Backbone for NoBackbone {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn prefix(&self, _: &Tensor, _: &Needs) -> Result<PrefixOut> {
        Err(absent())
    }
    fn last_block(&self) -> &dyn LastBlock {
        &self.block
    }
    fn builtin_attention(&self, _: &str, _: &Tensor, _: (usize, usize)) -> Result<Tensor> {
        Err(absent())
    }
    fn builtin_attention_names(&self) -> &'static [&'static str] {
        &[]
    }
    fn head(&self, _: &Tensor, _: (usize, usize)) -> Result<Tensor> {
        Err(absent())
    }
    fn encode_text(&self, _: &[String]) -> Result<Tensor> {
        Err(absent())
    }
}

/// An empty prefix for a grid.
pub fn empty_prefix(grid: (usize, usize)) -> PrefixOut {
    PrefixOut {
        tokens: Tensor::zeros(
            (1, 1 + grid.0 * grid.1, 8),
            candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap(),
        grid,
        attn_probs: Default::default(),
        qkv: Default::default(),
    }
}
