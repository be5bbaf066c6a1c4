//! Model hyper-parameters, read from a Hugging Face `config.json` (`CLIPConfig`).
//!
//! Missing keys take transformers' `CLIPVisionConfig` / `CLIPTextConfig` defaults, so both the
//! full configs written by `save_pretrained(use_diff=False)` and trimmed ones load. Unknown keys
//! are ignored (HF configs carry many that do not affect the forward pass).

use std::path::Path;

use serde::Deserialize;

use crate::error::{ClipError, Result};

/// Activation of the MLPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `x · σ(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

/// The vision tower (`vision_config`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub patch_size: usize,
    pub image_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub num_channels: usize,
}

impl Default for VisionConfig {
    /// transformers' `CLIPVisionConfig()` defaults (ViT-B/32).
    fn default() -> Self {
        VisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            patch_size: 32,
            image_size: 224,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            num_channels: 3,
        }
    }
}

/// The text tower (`text_config`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for TextConfig {
    /// transformers' `CLIPTextConfig()` defaults.
    fn default() -> Self {
        TextConfig {
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            vocab_size: 49408,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// A whole `CLIPConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    pub vision_config: VisionConfig,
    pub text_config: TextConfig,
    /// Joint embedding size E.
    pub projection_dim: usize,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            vision_config: VisionConfig::default(),
            text_config: TextConfig::default(),
            projection_dim: 512,
        }
    }
}

impl ClipConfig {
    /// `openai/clip-vit-base-patch16` (the default model of segsweep and of every SCLIP-family
    /// paper).
    pub fn vit_b16() -> Self {
        let mut c = ClipConfig::default();
        c.vision_config.patch_size = 16;
        c
    }

    /// `openai/clip-vit-base-patch32`.
    pub fn vit_b32() -> Self {
        ClipConfig::default()
    }

    /// `openai/clip-vit-large-patch14`.
    pub fn vit_l14() -> Self {
        ClipConfig {
            vision_config: VisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                patch_size: 14,
                ..VisionConfig::default()
            },
            text_config: TextConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_attention_heads: 12,
                ..TextConfig::default()
            },
            projection_dim: 768,
        }
    }

    /// The tiny random model of the test fixture and of `builtin:tiny-random`
    /// (see `tests/reference/make_tiny_clip.py`).
    pub fn tiny() -> Self {
        ClipConfig {
            vision_config: VisionConfig {
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 12,
                num_attention_heads: 2,
                patch_size: 16,
                ..VisionConfig::default()
            },
            text_config: TextConfig {
                hidden_size: 8,
                intermediate_size: 16,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                ..TextConfig::default()
            },
            projection_dim: 16,
        }
    }

    /// Read and validate a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::io(path, e))?;
        let cfg: ClipConfig = serde_json::from_str(&text).map_err(|e| ClipError::Config {
            path: path.to_path_buf(),
            msg: format!("not a CLIPConfig: {e} (hint: the config.json of a Hugging Face CLIPModel directory is expected, as `openai/clip-vit-base-patch16` has)"),
        })?;
        cfg.validate().map_err(|msg| ClipError::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    /// Check what the forward pass relies on; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let v = &self.vision_config;
        let t = &self.text_config;
        for (key, width, heads) in [
            ("vision_config", v.hidden_size, v.num_attention_heads),
            ("text_config", t.hidden_size, t.num_attention_heads),
        ] {
            if heads == 0 || width % heads != 0 {
                return Err(format!(
                    "{key}.hidden_size ({width}) must be a multiple of num_attention_heads ({heads})"
                ));
            }
        }
        if v.num_hidden_layers == 0 {
            return Err("vision_config.num_hidden_layers must be at least 1".into());
        }
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!(
                "vision_config.image_size ({}) must be a multiple of patch_size ({})",
                v.image_size, v.patch_size
            ));
        }
        if v.num_channels != 3 {
            return Err(format!(
                "vision_config.num_channels is {}, expected 3",
                v.num_channels
            ));
        }
        parse_act(&v.hidden_act).map_err(|e| format!("vision_config.hidden_act: {e}"))?;
        parse_act(&t.hidden_act).map_err(|e| format!("text_config.hidden_act: {e}"))?;
        Ok(())
    }

    /// Patch grid side at the training resolution (14 for ViT-B/16).
    pub fn base_grid(&self) -> usize {
        self.vision_config.image_size / self.vision_config.patch_size
    }
}

pub(crate) fn parse_act(name: &str) -> std::result::Result<Act, String> {
    match name {
        "quick_gelu" => Ok(Act::QuickGelu),
        "gelu" => Ok(Act::Gelu),
        other => Err(format!("`{other}` is not supported (quick_gelu, gelu)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_config_takes_transformers_defaults() {
        let c: ClipConfig =
            serde_json::from_str(r#"{"vision_config": {"patch_size": 16}, "foo": 1}"#).unwrap();
        assert_eq!(c, ClipConfig::vit_b16());
        assert_eq!(c.base_grid(), 14);
    }

    #[test]
    fn bad_head_count_names_the_key() {
        let mut c = ClipConfig::tiny();
        c.vision_config.num_attention_heads = 3;
        let e = c.validate().unwrap_err();
        assert!(e.contains("vision_config.hidden_size"), "{e}");
    }
}
