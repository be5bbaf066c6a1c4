//! Last-block attention strategies, written against [`LastBlock`] so that plugins (ResCLIP,
//! CLIPtrase, ...) can reuse and recombine them.
//!
//! Every strategy maps the last block's input `x: (B, 1 + N, D)` (CLS first) to its output
//! `(B, 1 + N, D)`; `s = head_dim^-½` throughout. What each keeps (methods.md §1–§2):
//!
//! | strategy | attention per head | residual | FFN |
//! |---|---|---|---|
//! | [`vanilla`] | `softmax(q kᵀ·s)` | yes | yes |
//! | [`sclip`] (CSA) | `softmax(q qᵀ·s) + softmax(k kᵀ·s)`, not renormalised | yes | yes |
//! | [`naclip`] | `softmax(k kᵀ·s + Ω)`, Ω = [`gaussian_prior`] | no | no |
//! | [`maskclip`] | none: `out_proj(v_proj(ln_1 x))` | no | no |
//!
//! Probabilities are computed in f32; the products with v run in the model dtype.

use candle_core::{DType, Device, Tensor, D};
use segsweep_core::{LastBlock, Result};

/// Names of the built-in strategies, in documentation order.
pub const BUILTIN: &[&str] = &["vanilla", "sclip", "naclip", "maskclip"];

/// NACLIP's default σ of the Gaussian prior, in patches.
pub const NACLIP_SIGMA: f64 = 5.0;

/// Scaled similarity `a bᵀ · scale` per head: `(B, H, T, hd) × (B, H, T, hd) → (B, H, T, T)`, f32.
pub fn scores(a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    Ok(a.affine(scale, 0.)?.matmul(&b.t()?)?.to_dtype(DType::F32)?)
}

/// Softmax over the last dimension in f32.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    Ok(crate::block::softmax_f32(x)?)
}

/// `head_dim^-½` for per-head tensors `(B, H, T, hd)`.
pub fn head_scale(q: &Tensor) -> Result<f64> {
    Ok((q.dim(D::Minus1)? as f64).powf(-0.5))
}

/// `(B, H, T, hd) → (B, T, H·hd)`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    Ok(crate::block::merge_heads(x)?)
}

/// Apply per-head attention weights `(B, H, T, T)` to `v: (B, H, T, hd)`, merge the heads and
/// run the out-projection: `→ (B, T, D)`.
pub fn attend(block: &dyn LastBlock, weights: &Tensor, v: &Tensor) -> Result<Tensor> {
    block.out_proj(&weighted_values(weights, v)?)
}

/// `weights · v` per head (weights cast to v's dtype), heads merged: `(B, H, T, T)` and
/// `(B, H, T, hd)` → `(B, T, H·hd)`.
fn weighted_values(weights: &Tensor, v: &Tensor) -> Result<Tensor> {
    merge_heads(&weights.to_dtype(v.dtype())?.matmul(v)?)
}

/// `x + out_proj(merge(weights · v))`: [`attend`] with the residual (added in the
/// out-projection's epilogue where the backbone fuses it): `weights: (B, H, T, T)`,
/// `v: (B, H, T, hd)`, `x: (B, T, D)` → `(B, T, D)`.
pub fn attend_residual(
    block: &dyn LastBlock,
    weights: &Tensor,
    v: &Tensor,
    x: &Tensor,
) -> Result<Tensor> {
    block.out_proj_residual(&weighted_values(weights, v)?, x)
}

/// `x + mlp(ln_2 x)`: the second half of a standard block, `(B, T, D) → (B, T, D)`.
pub fn ffn_residual(block: &dyn LastBlock, x: &Tensor) -> Result<Tensor> {
    block.ffn_residual(x)
}

/// The standard block: `x' = x + attn(ln_1 x)`, then `x' + mlp(ln_2 x')`. Where the backbone
/// has a fused attention kernel ([`LastBlock::fused_attention`]) the attention is one kernel.
pub fn vanilla(block: &dyn LastBlock, x: &Tensor) -> Result<Tensor> {
    let (q, k, v) = block.qkv(&block.ln_1(x)?)?;
    let s = head_scale(&q)?;
    let x = match block.fused_attention(&q, &k, &v, s)? {
        Some(o) => block.out_proj_residual(&o, x)?,
        None => attend_residual(block, &softmax(&scores(&q, &k, s)?)?, &v, x)?,
    };
    block.ffn_residual(&x)
}

/// SCLIP's correlative self-attention (CSA) in the last block, residual and FFN kept
/// (SCLIP `clip/model.py:283-313`).
///
/// Where the backbone has a fused attention kernel ([`LastBlock::fused_attention`]) the
/// product is computed as `softmax(q qᵀ·s) v + softmax(k kᵀ·s) v` (two kernels), which equals
/// SCLIP's `(softmax(q qᵀ·s) + softmax(k kᵀ·s)) v` up to rounding; elsewhere as SCLIP writes it.
pub fn sclip(block: &dyn LastBlock, x: &Tensor) -> Result<Tensor> {
    let (q, k, v) = block.qkv(&block.ln_1(x)?)?;
    let s = head_scale(&q)?;
    if let Some(oq) = block.fused_attention(&q, &q, &v, s)? {
        if let Some(ok) = block.fused_attention(&k, &k, &v, s)? {
            let x = block.out_proj_residual(&(oq + ok)?, x)?;
            return block.ffn_residual(&x);
        }
    }
    // The sum of two row-stochastic matrices (rows sum to 2), deliberately not renormalised.
    let a = (softmax(&scores(&q, &q, s)?)? + softmax(&scores(&k, &k, s)?)?)?;
    let x = attend_residual(block, &a, &v, x)?;
    block.ffn_residual(&x)
}

/// NACLIP's neighbourhood attention: `softmax(k kᵀ·s + Ω)`, no residual, no FFN
/// (NACLIP `clip/model.py`, `custom_attn` with `arch='reduced'`). `prior` is
/// [`gaussian_prior`] for the crop's grid, `(1 + N, 1 + N)` f32.
pub fn naclip_with_prior(block: &dyn LastBlock, x: &Tensor, prior: &Tensor) -> Result<Tensor> {
    let (_q, k, v) = block.qkv(&block.ln_1(x)?)?;
    let a = softmax(&scores(&k, &k, head_scale(&k)?)?.broadcast_add(prior)?)?;
    attend(block, &a, &v)
}

/// [`naclip_with_prior`] with the prior computed for `grid = (gh, gw)` and `sigma` (patches).
pub fn naclip(
    block: &dyn LastBlock,
    x: &Tensor,
    grid: (usize, usize),
    sigma: f64,
) -> Result<Tensor> {
    let prior = gaussian_prior(grid, sigma, x.device())?;
    naclip_with_prior(block, x, &prior)
}

/// MaskCLIP's value path: `out_proj(v_proj(ln_1 x))`, no attention, no residual, no FFN.
pub fn maskclip(block: &dyn LastBlock, x: &Tensor) -> Result<Tensor> {
    let (_q, _k, v) = block.qkv(&block.ln_1(x)?)?;
    block.out_proj(&merge_heads(&v)?)
}

/// NACLIP's Gaussian spatial prior Ω over the patch grid, `(1 + gh·gw, 1 + gh·gw)` f32:
/// `Ω[p, q] = exp(−‖pos_p − pos_q‖² / (2σ²))` with row-major patch coordinates `(y, x)`; the
/// CLS row and column are 0. NACLIP builds it by convolving a `(2gh−1, 2gw−1)` Gaussian window,
/// which never truncates, so the closed form is the same function.
pub fn gaussian_prior(grid: (usize, usize), sigma: f64, device: &Device) -> Result<Tensor> {
    let (gh, gw) = grid;
    let n = gh * gw;
    let t = n + 1;
    let mut data = vec![0f32; t * t];
    let inv = 1.0 / (2.0 * sigma * sigma);
    for p in 0..n {
        let (py, px) = ((p / gw) as f64, (p % gw) as f64);
        let row = &mut data[(p + 1) * t..(p + 2) * t];
        for q in 0..n {
            let (qy, qx) = ((q / gw) as f64, (q % gw) as f64);
            row[q + 1] = (-((py - qy).powi(2) + (px - qx).powi(2)) * inv).exp() as f32;
        }
    }
    Ok(Tensor::from_vec(data, (t, t), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_prior_hand_values_on_non_square_grid() {
        // grid 2×3: patch 0 = (0,0), patch 5 = (1,2): distance² = 5.
        let p: Vec<Vec<f32>> = gaussian_prior((2, 3), 2.0, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(p.len(), 7);
        assert_eq!(p[0], vec![0.0; 7]);
        assert!(p.iter().all(|r| r[0] == 0.0));
        assert_eq!(p[1][1], 1.0);
        assert!((p[1][6] - (-5.0f32 / 8.0).exp()).abs() < 1e-7);
        assert!((p[6][1] - p[1][6]).abs() < 1e-9);
        // (0,1) vs (1,1): distance 1.
        assert!((p[2][5] - (-1.0f32 / 8.0).exp()).abs() < 1e-7);
    }
}
