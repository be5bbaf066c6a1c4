//! The ResCLIP last block (ResCLIP `clip/model.py:463-494`, `arch='wo_resi'`,
//! `attn_strategy='resclip'`) and its coarse pass.
//!
//! Per head, with s = head_dim^-½ and Ω NACLIP's Gaussian prior:
//!
//! ```text
//! S  = k kᵀ·s                                   (NACLIP's key-key logits)
//! S' = τ_sfr·((1−λ_sfr)·S + λ_sfr·Â_sfr) + Ω     (SFR on; Â_sfr = A_sfr/max, f16)
//! S' = S + Ω                                     (SFR off, and the coarse pass)
//! A  = τ_rcs·((1−λ_rcs)·softmax(S') + λ_rcs·A_rcs)   (RCS on; no renormalisation)
//! out = out_proj(A v)                            (no residual, no FFN)
//! ```

use candle_core::{DType, Device, Tensor};
use segsweep_clip::attention::{attend, gaussian_prior, head_scale, scores, softmax};
use segsweep_core::{tensor::l2_normalise, AttentionCtx, CoreError, LastBlock, PrefixOut, Result};

use crate::params::{Mix, ResClipConfig, SfrConfig};
use crate::sfr::{injected_term, sfr_matrix, SfrParts};

/// RCS reads the standard attention of these layers (1-based, as in the paper).
pub const RCS_LAYERS: [usize; 4] = [6, 7, 8, 9];

/// The coarse pass's PAMR, hard-coded in the reference (`model.py:279`).
pub const SFR_PAMR_STEPS: usize = 10;
/// Dilations of the coarse pass's PAMR.
pub const SFR_PAMR_DILATIONS: [usize; 2] = [8, 16];

/// A_rcs: the mean of the recorded standard attention probabilities of [`RCS_LAYERS`],
/// `(B, heads, T, T)` f32.
pub fn rcs_attention(prefix: &PrefixOut) -> Result<Tensor> {
    let mut maps = Vec::with_capacity(RCS_LAYERS.len());
    for l in RCS_LAYERS {
        let a = prefix.attn_probs.get(&l).ok_or_else(|| {
            CoreError::plugin(
                "resclip",
                format!(
                    "RCS needs the attention probabilities of layer {l}, which the prefix did \
                     not record (a backbone with fewer than 9 layers, or `needs()` was ignored); \
                     set `rcs = false` to run without RCS"
                ),
            )
        })?;
        maps.push(a.to_dtype(DType::F32)?);
    }
    Ok((Tensor::stack(&maps, 0)?.sum(0)? / RCS_LAYERS.len() as f64)?)
}

/// Attention weights `(B, heads, T, T)` from key-key logits `s_kk = k kᵀ·s` `(B, heads, T, T)`,
/// the prior `omega` `(T, T)`, an optional SFR term `(λ_sfr·Â_sfr (B, T, T), τ_sfr, λ_sfr)` and
/// an optional RCS term `(A_rcs (B, heads, T, T), τ_rcs, λ_rcs)`.
pub fn attention_weights(
    s_kk: &Tensor,
    omega: &Tensor,
    sfr: Option<(&Tensor, Mix)>,
    rcs: Option<(&Tensor, Mix)>,
) -> Result<Tensor> {
    let logits = match sfr {
        // `tau·((1−λ)·S + λ·Â)`: the λ·Â product is precomputed in f16 by `injected_term`.
        Some((lam_a, m)) => s_kk
            .affine(1.0 - m.lambda, 0.0)?
            .broadcast_add(&lam_a.unsqueeze(1)?)?
            .affine(m.tau, 0.0)?,
        None => s_kk.clone(),
    };
    let a = softmax(&logits.broadcast_add(omega)?)?;
    Ok(match rcs {
        Some((a_rcs, m)) => {
            (a.affine(1.0 - m.lambda, 0.0)? + a_rcs.affine(m.lambda, 0.0)?)?.affine(m.tau, 0.0)?
        }
        None => a,
    })
}

/// What the last block computes once per batch and both passes share.
pub struct Shared {
    s_kk: Tensor,
    v: Tensor,
    omega: Tensor,
    a_rcs: Option<Tensor>,
}

impl Shared {
    /// ln_1, q/k/v, the key-key logits, Ω for `grid` and (if RCS is on) A_rcs.
    ///
    /// Shapes: `x` is the last block's input `(B, T, D)` with `T = 1 + N` tokens (CLS first,
    /// then the `N = gh·gw` patches row-major); `grid` is `(gh, gw)`; `prefix` must hold the
    /// attention probabilities `(B, heads, T, T)` of [`RCS_LAYERS`] when RCS is on. Keeps
    /// `s_kk` `(B, heads, T, T)`, `v` `(B, heads, T, head_dim)`, Ω `(T, T)` and A_rcs
    /// `(B, heads, T, T)`.
    pub fn new(
        block: &dyn LastBlock,
        x: &Tensor,
        grid: (usize, usize),
        prefix: &PrefixOut,
        cfg: &ResClipConfig,
    ) -> Result<Shared> {
        let (_q, k, v) = block.qkv(&block.ln_1(x)?)?;
        let s_kk = scores(&k, &k, head_scale(&k)?)?;
        let omega = gaussian_prior(grid, cfg.sigma, x.device())?;
        let a_rcs = match cfg.rcs {
            Some(_) => Some(rcs_attention(prefix)?),
            None => None,
        };
        Ok(Shared {
            s_kk,
            v,
            omega,
            a_rcs,
        })
    }

    /// The block output `(B, T, D)` with an optional SFR term `(B, T, T)` (λ·Â already applied).
    pub fn output(
        &self,
        block: &dyn LastBlock,
        cfg: &ResClipConfig,
        sfr_term: Option<&Tensor>,
    ) -> Result<Tensor> {
        let sfr = match (sfr_term, cfg.sfr) {
            (Some(t), Some(s)) => Some((t, s.mix)),
            _ => None,
        };
        let rcs = match (&self.a_rcs, cfg.rcs) {
            (Some(a), Some(m)) => Some((a, m)),
            _ => None,
        };
        let w = attention_weights(&self.s_kk, &self.omega, sfr, rcs)?;
        attend(block, &w, &self.v)
    }
}

/// The coarse pass after the block: `head` → L2-normalise → cosine with the text → bilinear to
/// the crop size (`align_corners=False`) → PAMR(10, (8, 16)) on the crop → softmax over all
/// queries of `logit_scale·logits`. Returns `(B, Q, Hc, Wc)` f32.
pub fn coarse_probs(ctx: &AttentionCtx<'_>, tokens: &Tensor, logit_scale: f64) -> Result<Tensor> {
    let feats = l2_normalise(
        &ctx.backbone.head(tokens, ctx.grid)?.to_dtype(DType::F32)?,
        1,
    )?;
    let (b, e, gh, gw) = feats.dims4()?;
    let (_, _, hc, wc) = ctx.crops.dims4()?;
    let text = ctx.text.to_dtype(DType::F32)?;
    let logits = text
        .broadcast_matmul(&feats.reshape((b, e, gh * gw))?)?
        .reshape((b, (), gh, gw))?
        .upsample_bilinear2d(hc, wc, false)?;
    // PAMR is invariant to the per-channel normalisation, so the normalised crop serves as the
    // image as it is (the reference also feeds the normalised crop).
    let crops = ctx.crops.to_dtype(DType::F32)?;
    let refined = segsweep_plugin_pamr::pamr(&crops, &logits, SFR_PAMR_STEPS, &SFR_PAMR_DILATIONS)?;
    segsweep_core::tensor::softmax(&refined.affine(logit_scale, 0.0)?, 1)
}

/// Steps 2–8 of SFR for each crop: the injected term λ_sfr·Â_sfr, `(B, T, T)` f32, and the
/// per-crop intermediate results.
pub fn sfr_terms(
    probs: &Tensor,
    patch: usize,
    grid: (usize, usize),
    cfg: &ResClipConfig,
    sfr: &SfrConfig,
    device: &Device,
) -> Result<(Tensor, Vec<SfrParts>)> {
    let (b, q, h, w) = probs.dims4()?;
    let host = probs
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let t = grid.0 * grid.1 + 1;
    let mut terms = Vec::with_capacity(b * t * t);
    let mut parts = Vec::with_capacity(b);
    for crop in host.chunks(q * h * w) {
        let p = sfr_matrix(
            crop,
            (q, h, w),
            patch,
            grid,
            sfr.temp_thd as f32,
            cfg.sigma,
            sfr.rounding,
        )?;
        terms.extend(injected_term(&p.a_sfr, sfr.mix.lambda));
        parts.push(p);
    }
    Ok((Tensor::from_vec(terms, (b, t, t), device)?, parts))
}

/// The whole ResCLIP last block for one batch of crops: `(B, 1 + N, D)`.
pub fn resclip_block(ctx: &AttentionCtx<'_>, cfg: &ResClipConfig) -> Result<Tensor> {
    Ok(resclip_block_with_parts(ctx, cfg)?.0)
}

/// [`resclip_block`] that also returns the SFR intermediates (empty when SFR is off).
pub fn resclip_block_with_parts(
    ctx: &AttentionCtx<'_>,
    cfg: &ResClipConfig,
) -> Result<(Tensor, Vec<SfrParts>)> {
    let block = ctx.backbone.last_block();
    let shared = Shared::new(block, ctx.x, ctx.grid, ctx.prefix, cfg)?;
    // The coarse pass is the block with RCS and without SFR, which is also the final output
    // when SFR is off.
    let coarse = shared.output(block, cfg, None)?;
    let Some(sfr) = cfg.sfr else {
        return Ok((coarse, Vec::new()));
    };
    let probs = coarse_probs(ctx, &coarse, sfr.logit_scale)?;
    let patch = ctx.backbone.info().patch_size;
    let (term, parts) = sfr_terms(&probs, patch, ctx.grid, cfg, &sfr, ctx.x.device())?;
    Ok((shared.output(block, cfg, Some(&term))?, parts))
}
