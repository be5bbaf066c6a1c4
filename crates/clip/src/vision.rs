//! The vision tower (`vision_model.*` + `visual_projection`), split as the pipeline needs it:
//! prefix (patch embedding, positions, `pre_layrnorm`, blocks 1..L−1), last block, head.
//!
//! Reference: transformers `CLIPVisionTransformer`; SCLIP `clip/model.py:VisionTransformer`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use candle_core::{DType, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use segsweep_core::{Needs, PrefixOut};

use crate::block::{linear, Block, Ln};
use crate::config::{parse_act, ClipConfig};
use crate::error::{ClipError, Result};
use crate::interp;

pub(crate) struct Vision {
    /// Patch embedding as a matrix `(D, 3·p·p)` (conv weight flattened in (c, y, x) order).
    patch_w: Tensor,
    /// `(D,)`.
    class_emb: Tensor,
    /// `(1 + g0², D)` at the training grid, f32 (interpolation source).
    pos: Tensor,
    pre_ln: Ln,
    pub(crate) layers: Vec<Block>,
    post_ln: Ln,
    proj: Linear,
    patch: usize,
    base: usize,
    dtype: DType,
    /// Grid → interpolated position embedding `(1 + gh·gw, D)` in the model dtype.
    pos_cache: Mutex<HashMap<(usize, usize), Tensor>>,
}

impl Vision {
    pub(crate) fn load(vb: &VarBuilder, cfg: &ClipConfig, dt: DType) -> Result<Vision> {
        let c = &cfg.vision_config;
        let (d, p) = (c.hidden_size, c.patch_size);
        let base = cfg.base_grid();
        let act = parse_act(&c.hidden_act).map_err(ClipError::Invalid)?;
        let vm = vb.pp("vision_model");
        let emb = vm.pp("embeddings");
        let patch_w = emb
            .get((d, 3, p, p), "patch_embedding.weight")?
            .reshape((d, 3 * p * p))?
            .to_dtype(dt)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                Block::load(
                    &vm.pp("encoder.layers").pp(i.to_string()),
                    d,
                    c.intermediate_size,
                    c.num_attention_heads,
                    c.layer_norm_eps,
                    act,
                    dt,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Vision {
            patch_w,
            class_emb: emb.get(d, "class_embedding")?.to_dtype(dt)?,
            pos: emb
                .get((base * base + 1, d), "position_embedding.weight")?
                .to_dtype(DType::F32)?,
            pre_ln: Ln::load(&vm.pp("pre_layrnorm"), d, c.layer_norm_eps)?,
            layers,
            post_ln: Ln::load(&vm.pp("post_layernorm"), d, c.layer_norm_eps)?,
            proj: linear(
                &vb.pp("visual_projection"),
                cfg.projection_dim,
                d,
                false,
                dt,
            )?,
            patch: p,
            base,
            dtype: dt,
            pos_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Position embedding for a patch grid `(gh, gw)`: `(1 + gh·gw, D)` in the model dtype.
    /// The training grid is returned as stored; any other grid is interpolated once (SCLIP's
    /// rule, see [`crate::interp`]) and cached.
    pub(crate) fn pos_embed(&self, grid: (usize, usize)) -> Result<Tensor> {
        if grid == (self.base, self.base) {
            return Ok(self.pos.to_dtype(self.dtype)?);
        }
        let mut cache = self
            .pos_cache
            .lock()
            .map_err(|_| ClipError::Invalid("position-embedding cache poisoned".into()))?;
        if let Some(t) = cache.get(&grid) {
            return Ok(t.clone());
        }
        let t = interpolate_pos(&self.pos, self.base, grid)?.to_dtype(self.dtype)?;
        // Cached for every thread: on a GPU each thread has its own stream (candle's per-thread
        // default stream) and nothing orders another thread's reads after this work.
        t.device().synchronize()?;
        cache.insert(grid, t.clone());
        Ok(t)
    }

    /// Patch embedding + CLS + positions + `pre_layrnorm`: `(B, 3, H, W) → (B, 1 + gh·gw, D)`.
    /// The last `H mod p` rows and `W mod p` columns are dropped, as the stride-p conv does.
    pub(crate) fn embed(&self, crops: &Tensor) -> Result<(Tensor, (usize, usize))> {
        let (b, c, h, w) = crops.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        if c != 3 || gh == 0 || gw == 0 {
            return Err(ClipError::Invalid(format!(
                "crops must be (B, 3, H, W) with H, W ≥ {p}, got {:?}",
                crops.dims()
            )));
        }
        let mut x = crops.to_dtype(self.dtype)?;
        if h != gh * p || w != gw * p {
            x = x.narrow(2, 0, gh * p)?.narrow(3, 0, gw * p)?.contiguous()?;
        }
        // Non-overlapping patches as rows: (B·gh·gw, 3·p·p), then one matmul.
        let patches = x
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, c * p * p))?
            .matmul(&self.patch_w.t()?)?;
        let d = self.patch_w.dim(0)?;
        let patches = patches.reshape((b, gh * gw, d))?;
        let cls = self.class_emb.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.pos_embed((gh, gw))?)?;
        Ok((self.pre_ln.forward(&x)?, (gh, gw)))
    }

    pub(crate) fn prefix(&self, crops: &Tensor, needs: &Needs) -> Result<PrefixOut> {
        let l = self.layers.len();
        for &n in needs.attn_probs.iter().chain(&needs.qkv) {
            if n == 0 || n > l {
                return Err(ClipError::Invalid(format!(
                    "a plugin asked for layer {n}, but this model has layers 1..={l}"
                )));
            }
        }
        let (mut x, grid) = self.embed(crops)?;
        let mut attn_probs = BTreeMap::new();
        let mut qkv = BTreeMap::new();
        for (i, block) in self.layers[..l - 1].iter().enumerate() {
            let n = i + 1;
            let out = block.forward_recording(
                &x,
                None,
                needs.attn_probs.contains(&n),
                needs.qkv.contains(&n),
            )?;
            x = out.x;
            if let Some(p) = out.probs {
                attn_probs.insert(n, p);
            }
            if let Some(t) = out.qkv {
                qkv.insert(n, t);
            }
        }
        // The last block itself is not run here, but its q, k, v (and standard attention) can
        // be recorded from ln_1 of its input.
        if needs.qkv.contains(&l) || needs.attn_probs.contains(&l) {
            let last = &self.layers[l - 1];
            let (q, k, v) = last.qkv(&last.ln_1(&x)?)?;
            if needs.attn_probs.contains(&l) {
                let s = crate::attention::head_scale(&q)?;
                let p = crate::attention::softmax(&crate::attention::scores(&q, &k, s)?)?;
                attn_probs.insert(l, p);
            }
            if needs.qkv.contains(&l) {
                qkv.insert(l, (q, k, v));
            }
        }
        Ok(PrefixOut {
            tokens: x,
            grid,
            attn_probs,
            qkv,
        })
    }

    /// Outputs of blocks 1..L−1 for `crops`, each `(B, 1 + gh·gw, D)`.
    pub(crate) fn hidden_states(&self, crops: &Tensor) -> Result<Vec<Tensor>> {
        let (mut x, _grid) = self.embed(crops)?;
        let mut out = Vec::with_capacity(self.layers.len() - 1);
        for block in &self.layers[..self.layers.len() - 1] {
            x = block.forward_recording(&x, None, false, false)?.x;
            out.push(x.clone());
        }
        Ok(out)
    }

    /// `post_layernorm` on all tokens, projection, CLS dropped: `(B, 1 + gh·gw, D) → (B, E, gh, gw)`,
    /// f32, not normalised.
    pub(crate) fn head(&self, tokens: &Tensor, grid: (usize, usize)) -> Result<Tensor> {
        let (b, t, _d) = tokens.dims3()?;
        let (gh, gw) = grid;
        if t != 1 + gh * gw {
            return Err(ClipError::Invalid(format!(
                "head: {t} tokens do not match the grid {gh}×{gw} (+1 CLS)"
            )));
        }
        let y = self.proj.forward(&self.post_ln.forward(tokens)?)?;
        let e = y.dim(2)?;
        Ok(y.narrow(1, 1, gh * gw)?
            .to_dtype(DType::F32)?
            .transpose(1, 2)?
            .reshape((b, e, gh, gw))?)
    }
}

/// `(1 + g0², D)` f32 → `(1 + gh·gw, D)` f32 with SCLIP's bicubic rule; the CLS row is kept.
pub fn interpolate_pos(pos: &Tensor, base: usize, grid: (usize, usize)) -> Result<Tensor> {
    let (t, d) = pos.dims2()?;
    if t != base * base + 1 {
        return Err(ClipError::Invalid(format!(
            "position embedding has {t} rows, expected {} for a {base}×{base} grid",
            base * base + 1
        )));
    }
    let src: Vec<f32> = pos
        .narrow(0, 1, base * base)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let sf = (
        interp::sclip_scale_factor(grid.0, base),
        interp::sclip_scale_factor(grid.1, base),
    );
    let (out, size) = interp::bicubic_hwc(&src, (base, base, d), sf);
    debug_assert_eq!(size, grid);
    let patch = Tensor::from_vec(out, (grid.0 * grid.1, d), pos.device())?;
    Ok(Tensor::cat(
        &[&pos.narrow(0, 0, 1)?.to_dtype(DType::F32)?, &patch],
        0,
    )?)
}
