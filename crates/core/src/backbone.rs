//! The model interface the pipeline runs on: a CLIP-like ViT split into a cacheable prefix, a
//! replaceable last block and a projection head, plus a text tower.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use candle_core::{Device, Tensor};

use crate::error::Result;

/// Where the weights came from; written into every result row so that nobody mistakes a
/// random-weight or synthetic number for a benchmark result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightsKind {
    /// Released pretrained weights (e.g. `openai/clip-vit-base-patch16`).
    Real,
    /// Seeded random weights written by the project's fixture script.
    RandomFixture,
    /// The built-in generated model used by tests and `just demo`.
    Synthetic,
}

impl fmt::Display for WeightsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightsKind::Real => "real",
            WeightsKind::RandomFixture => "random-fixture",
            WeightsKind::Synthetic => "synthetic",
        })
    }
}

/// Static facts about a loaded backbone.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneInfo {
    /// Hugging Face repo id, local directory, or `builtin:<name>`.
    pub model_id: String,
    /// Short content hash of the weights file (keys caches and result rows).
    pub file_hash: String,
    pub weights: WeightsKind,
    /// Patch size in pixels (16 for ViT-B/16).
    pub patch_size: usize,
    /// Training resolution in pixels (224); the position grid is `image_size / patch_size`.
    pub image_size: usize,
    /// Residual width D (768 for ViT-B/16).
    pub width: usize,
    /// Joint embedding size E (512 for ViT-B/16).
    pub embed_dim: usize,
    /// Number of transformer blocks L (12).
    pub layers: usize,
    /// Attention heads per block (12).
    pub heads: usize,
    /// Per-channel mean on the 0..=1 scale (CLIP: 0.4815, 0.4578, 0.4082).
    pub mean: [f32; 3],
    /// Per-channel std on the 0..=1 scale (CLIP: 0.2686, 0.2613, 0.2758).
    pub std: [f32; 3],
    /// `f32`, `f16` or `bf16`.
    pub dtype: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
}

/// What the backbone prefix must record for later stages, declared by plugins.
/// Layer numbers are 1-based, as in the papers (ResCLIP's RCS reads layers 6–9).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Needs {
    /// Layers whose standard attention probabilities `softmax(q kᵀ / √d)` must be kept.
    pub attn_probs: BTreeSet<usize>,
    /// Layers whose per-head q, k, v must be kept.
    pub qkv: BTreeSet<usize>,
}

impl Needs {
    /// Union of two requests.
    pub fn union(mut self, other: &Needs) -> Needs {
        self.attn_probs.extend(other.attn_probs.iter().copied());
        self.qkv.extend(other.qkv.iter().copied());
        self
    }
}

/// Output of the backbone prefix (patch embedding + positions + pre-LN + blocks 1..L-1) for a
/// batch of crops.
#[derive(Debug, Clone)]
pub struct PrefixOut {
    /// Input of the last block, `(B, 1 + gh·gw, D)`, CLS first.
    pub tokens: Tensor,
    /// Patch grid `(gh, gw)`.
    pub grid: (usize, usize),
    /// Layer → standard attention probabilities `(B, heads, T, T)`.
    pub attn_probs: BTreeMap<usize, Tensor>,
    /// Layer → `(q, k, v)`, each `(B, heads, T, head_dim)`, with bias, unscaled.
    pub qkv: BTreeMap<usize, (Tensor, Tensor, Tensor)>,
}

impl PrefixOut {
    /// The rows `start..start + len` of the batch.
    pub fn narrow(&self, start: usize, len: usize) -> Result<PrefixOut> {
        let n = |t: &Tensor| t.narrow(0, start, len);
        Ok(PrefixOut {
            tokens: n(&self.tokens)?,
            grid: self.grid,
            attn_probs: self
                .attn_probs
                .iter()
                .map(|(l, t)| Ok((*l, n(t)?)))
                .collect::<Result<_>>()?,
            qkv: self
                .qkv
                .iter()
                .map(|(l, (q, k, v))| Ok((*l, (n(q)?, n(k)?, n(v)?))))
                .collect::<Result<_>>()?,
        })
    }

    /// Concatenate prefixes of the same grid along the batch.
    pub fn cat(parts: &[PrefixOut]) -> Result<PrefixOut> {
        let first = parts
            .first()
            .ok_or_else(|| crate::CoreError::Msg("PrefixOut::cat of nothing".into()))?;
        let cat = |f: &dyn Fn(&PrefixOut) -> Tensor| -> Result<Tensor> {
            let ts: Vec<Tensor> = parts.iter().map(f).collect();
            Ok(Tensor::cat(&ts, 0)?)
        };
        let mut attn_probs = BTreeMap::new();
        for l in first.attn_probs.keys() {
            attn_probs.insert(*l, cat(&|p| p.attn_probs[l].clone())?);
        }
        let mut qkv = BTreeMap::new();
        for l in first.qkv.keys() {
            qkv.insert(
                *l,
                (
                    cat(&|p| p.qkv[l].0.clone())?,
                    cat(&|p| p.qkv[l].1.clone())?,
                    cat(&|p| p.qkv[l].2.clone())?,
                ),
            );
        }
        Ok(PrefixOut {
            tokens: cat(&|p| p.tokens.clone())?,
            grid: first.grid,
            attn_probs,
            qkv,
        })
    }
}

/// The operations of the last transformer block, so that attention strategies and plugins can
/// recombine them (keep or drop the residual and the FFN, replace the attention).
pub trait LastBlock: Send + Sync {
    /// Number of heads.
    fn heads(&self) -> usize;
    /// `ln_1`: `(B, T, D) → (B, T, D)`.
    fn ln_1(&self, x: &Tensor) -> Result<Tensor>;
    /// In-projection with bias, split per head: `(B, T, D) → 3 × (B, heads, T, head_dim)`.
    fn qkv(&self, x_ln: &Tensor) -> Result<(Tensor, Tensor, Tensor)>;
    /// Out-projection with bias on merged heads: `(B, T, D) → (B, T, D)`.
    fn out_proj(&self, x: &Tensor) -> Result<Tensor>;
    /// `ln_2`: `(B, T, D) → (B, T, D)`.
    fn ln_2(&self, x: &Tensor) -> Result<Tensor>;
    /// The MLP (fc1, QuickGELU, fc2): `(B, T, D) → (B, T, D)`.
    fn mlp(&self, x: &Tensor) -> Result<Tensor>;

    /// `softmax(scale · q kᵀ) v` per head with the heads merged, as one fused kernel where the
    /// backbone has one for this device and these shapes: `q, k, v: (B, heads, T, head_dim)` →
    /// `(B, T, D)`. `Ok(None)` (the default) where it has none; callers then compose scores,
    /// softmax and the product with v themselves.
    fn fused_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
    ) -> Result<Option<Tensor>> {
        let _ = (q, k, v, scale);
        Ok(None)
    }
    /// `x + out_proj(o)`: `o, x: (B, T, D) → (B, T, D)`. Backbones may add the residual inside
    /// the out-projection's epilogue.
    fn out_proj_residual(&self, o: &Tensor, x: &Tensor) -> Result<Tensor> {
        Ok((x + self.out_proj(o)?)?)
    }
    /// `x + mlp(ln_2 x)`, the second half of a standard block: `(B, T, D) → (B, T, D)`.
    /// Backbones may add the residual inside fc2's epilogue.
    fn ffn_residual(&self, x: &Tensor) -> Result<Tensor> {
        Ok((x + self.mlp(&self.ln_2(x)?)?)?)
    }
}

/// A CLIP-like model as the pipeline sees it.
pub trait Backbone: Send + Sync {
    fn info(&self) -> &BackboneInfo;
    fn device(&self) -> &Device;
    /// Run the prefix on normalised crops `(B, 3, H, W)` (H, W multiples of the patch size;
    /// a remainder is dropped as the stride-16 convolution does), recording what `needs` asks.
    fn prefix(&self, crops: &Tensor, needs: &Needs) -> Result<PrefixOut>;
    /// The last block's operations.
    fn last_block(&self) -> &dyn LastBlock;
    /// A built-in last-block strategy (`vanilla`, `sclip`, `naclip`, `maskclip`, ...) on the
    /// last block's input `x: (B, 1 + N, D)` with patch grid `(gh, gw)` (N = gh·gw): returns the
    /// block output `(B, 1 + N, D)`. Built-ins read nothing else (attention-stage plugins get an
    /// [`AttentionCtx`](crate::AttentionCtx)), so the pipeline neither cuts crops for them nor keeps them per image,
    /// and can run them on crops of several images at once.
    fn builtin_attention(&self, name: &str, x: &Tensor, grid: (usize, usize)) -> Result<Tensor>;
    /// Names accepted by [`Backbone::builtin_attention`].
    fn builtin_attention_names(&self) -> &'static [&'static str];
    /// `ln_post` + projection on the patch tokens (CLS dropped), not normalised:
    /// `(B, 1 + gh·gw, D) → (B, E, gh, gw)`.
    fn head(&self, tokens: &Tensor, grid: (usize, usize)) -> Result<Tensor>;
    /// Encode prompts with the text tower: `P` prompts → `(P, E)`, L2-normalised.
    fn encode_text(&self, prompts: &[String]) -> Result<Tensor>;
}
