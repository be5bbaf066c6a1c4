//! The text tower (`text_model.*` + `text_projection`), OpenAI-style: causal mask, pooling at
//! the EOT token (argmax of the ids), `final_layer_norm`, projection.
//!
//! Speed: because of the causal mask, the EOT output depends only on the tokens up to it, so a
//! batch runs only up to its longest prompt instead of the full 77-token context (exact; a test
//! compares with the 77-token run), and prompts are sorted by length before batching so that
//! short prompts are not padded to long ones.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::block::{linear, Block, Ln};
use crate::config::{parse_act, ClipConfig};
use crate::error::{ClipError, Result};

/// Prompts per forward batch: large enough to keep the matmuls efficient, small enough that the
/// `(B, heads, T, T)` scores stay a few MB.
const BATCH: usize = 256;

pub(crate) struct Text {
    /// `(vocab, D)`.
    tok_emb: Tensor,
    /// `(context, D)`.
    pos: Tensor,
    layers: Vec<Block>,
    final_ln: Ln,
    proj: Linear,
    pub(crate) context: usize,
    dtype: DType,
}

impl Text {
    pub(crate) fn load(vb: &VarBuilder, cfg: &ClipConfig, dt: DType) -> Result<Text> {
        let c = &cfg.text_config;
        let d = c.hidden_size;
        let act = parse_act(&c.hidden_act).map_err(ClipError::Invalid)?;
        let tm = vb.pp("text_model");
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                Block::load(
                    &tm.pp("encoder.layers").pp(i.to_string()),
                    d,
                    c.intermediate_size,
                    c.num_attention_heads,
                    c.layer_norm_eps,
                    act,
                    dt,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Text {
            tok_emb: tm
                .get((c.vocab_size, d), "embeddings.token_embedding.weight")?
                .to_dtype(dt)?,
            pos: tm
                .get(
                    (c.max_position_embeddings, d),
                    "embeddings.position_embedding.weight",
                )?
                .to_dtype(dt)?,
            layers,
            final_ln: Ln::load(&tm.pp("final_layer_norm"), d, c.layer_norm_eps)?,
            proj: linear(&vb.pp("text_projection"), cfg.projection_dim, d, false, dt)?,
            context: c.max_position_embeddings,
            dtype: dt,
        })
    }

    /// Encode token sequences (each `<sot> … <eot>`, unpadded) → `(P, E)` f32, L2-normalised,
    /// in input order. `run_len`: `None` runs each batch to its longest sequence; `Some(n)` pads
    /// every batch to `n` tokens (the full-context reference).
    pub(crate) fn encode_ids(&self, seqs: &[Vec<u32>], run_len: Option<usize>) -> Result<Tensor> {
        let device = self.tok_emb.device().clone();
        if seqs.is_empty() {
            let e = self.proj.weight().dim(0)?;
            return Ok(Tensor::zeros((0, e), DType::F32, &device)?);
        }
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let mut parts = Vec::new();
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| seqs[i].as_slice()).collect();
            parts.push(self.encode_batch(&batch, run_len, &device)?);
        }
        let sorted = Tensor::cat(&parts, 0)?;
        // Undo the sort: row r of the output is row inv[r] of `sorted`.
        let mut inv = vec![0u32; order.len()];
        for (pos, &i) in order.iter().enumerate() {
            inv[i] = pos as u32;
        }
        Ok(sorted.index_select(&Tensor::new(inv.as_slice(), &device)?, 0)?)
    }

    fn encode_batch(
        &self,
        seqs: &[&[u32]],
        run_len: Option<usize>,
        device: &Device,
    ) -> Result<Tensor> {
        let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let t = run_len.unwrap_or(longest).max(longest);
        if t > self.context {
            return Err(ClipError::Invalid(format!(
                "a prompt has {t} tokens, the text context is {}",
                self.context
            )));
        }
        let p = seqs.len();
        let mut ids = vec![0u32; p * t];
        let mut eot = Vec::with_capacity(p);
        for (r, s) in seqs.iter().enumerate() {
            ids[r * t..r * t + s.len()].copy_from_slice(s);
            // OpenAI pools at `text.argmax(-1)`: the first position of the largest id.
            let (mut best, mut at) = (0u32, 0usize);
            for (j, &v) in s.iter().enumerate() {
                if v > best {
                    best = v;
                    at = j;
                }
            }
            eot.push((r * t + at) as u32);
        }
        let ids = Tensor::from_vec(ids, p * t, device)?;
        let d = self.tok_emb.dim(1)?;
        let mut x = self
            .tok_emb
            .index_select(&ids, 0)?
            .reshape((p, t, d))?
            .broadcast_add(&self.pos.narrow(0, 0, t)?)?;
        let mask = causal_mask(t, self.dtype, device)?;
        for block in &self.layers {
            x = block.forward_recording(&x, Some(&mask), false, false)?.x;
        }
        // LayerNorm is per token, so only the pooled rows need it.
        let pooled = x
            .reshape((p * t, d))?
            .index_select(&Tensor::new(eot.as_slice(), device)?, 0)?;
        let y = self
            .proj
            .forward(&self.final_ln.forward(&pooled)?)?
            .to_dtype(DType::F32)?;
        Ok(segsweep_core::tensor::l2_normalise(&y, 1)?)
    }
}

/// Additive causal mask `(T, T)`: 0 on and below the diagonal, −∞ above.
pub(crate) fn causal_mask(t: usize, dt: DType, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(m, (t, t), device)?.to_dtype(dt)?)
}
