//! The published CLIPtrase computation for one batch of crops (`variant = "paper"`),
//! methods.md §3, written from `clip_utils/{model,attn2}.py` and `clip_self_correlation.py`.
//!
//! ```text
//! prefix tokens ─► last block with softmax(qqᵀs)+softmax(kkᵀs)+softmax(vvᵀs), residual, FFN
//!               ─► head ─► f̂ (patch features, L2-normalised)
//! layer-11 q,k,v ─► C = head-mean (cos qq + cos kk + cos vv)/3 ─► C' = relu(C_patch − C_cls)
//!               ─► DBSCAN rows ─► cluster maps ─► ×4 bilinear ─► median 7 ─► crop size ─► argmax
//!               ─► per region: mean of the upsampled f̂ (d2 vote) or majority query
//! ```

use candle_core::{DType, Tensor, D};
use segsweep_core::tensor::{l2_normalise, softmax};
use segsweep_core::{CoreError, LastBlock, Result};

use crate::dbscan::dbscan;
use crate::image_ops::{bilinear_taps, median_filter, resize_bilinear};

/// Upsampling factor of the cluster maps before the median filter (`ratio = 4` upstream).
pub const CLUSTER_UPSAMPLE: usize = 4;
/// Median filter window, `2·ratio − 1` upstream.
pub const MEDIAN_SIZE: usize = 2 * CLUSTER_UPSAMPLE - 1;

/// How each cluster region decides its pixels' output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    /// The d2 version: every pixel of a region gets the region's mean logits, expressed as the
    /// mean of the bilinearly upsampled normalised patch features (logits are linear in them).
    MeanLogits,
    /// The per-window majority vote: every pixel of a region gets the query that most of the
    /// region's pixels argmax to, expressed as that query's text embedding.
    Majority,
}

/// DBSCAN settings per input resolution from the reference (`clip_self_correlation.py`):
/// `eps = 0.7, min_samples = 3` at 224 px (196 patches) and `1.1, 7` at 336 px (441 patches).
/// Other grids take the preset whose patch count is nearer.
pub fn dbscan_preset(n_patches: usize) -> (f64, usize) {
    if n_patches <= (196 + 441) / 2 {
        (0.7, 3)
    } else {
        (1.1, 7)
    }
}

/// CLIPtrase's last block: `x + out_proj(A v)` with
/// `A = softmax(q qᵀ·s) + softmax(k kᵀ·s) + softmax(v vᵀ·s)` per head (rows sum to 3, not
/// renormalised), then `+ mlp(ln_2(·))`. `(B, T, D) → (B, T, D)`; CLS included in all tokens.
pub fn trase_last_block(block: &dyn LastBlock, x: &Tensor) -> Result<Tensor> {
    let (q, k, v) = block.qkv(&block.ln_1(x)?)?;
    let s = (q.dim(D::Minus1)? as f64).powf(-0.5);
    let self_attn = |a: &Tensor| -> Result<Tensor> {
        let a32 = a.to_dtype(DType::F32)?;
        softmax(&(a32.affine(s, 0.0)?.matmul(&a32.t()?)?), 3)
    };
    let attn = ((self_attn(&q)? + self_attn(&k)?)? + self_attn(&v)?)?;
    let o = attn.to_dtype(v.dtype())?.matmul(&v)?; // (B, H, T, hd)
    let (b, h, t, hd) = o.dims4()?;
    let merged = o.transpose(1, 2)?.contiguous()?.reshape((b, t, h * hd))?;
    let x = (x + block.out_proj(&merged)?)?;
    Ok((&x + block.mlp(&block.ln_2(&x)?)?)?)
}

/// Head-averaged self-correlation of one layer: `mean_h (cos(q,q) + cos(k,k) + cos(v,v)) / 3`,
/// from per-head `(B, H, T, hd)` tensors → `(B, T, T)` f32 (attn2.py, `self_out_weight`).
pub fn self_correlation(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let cos = |a: &Tensor| -> Result<Tensor> {
        let a = l2_normalise(&a.to_dtype(DType::F32)?, 3)?;
        Ok(a.matmul(&a.t()?)?)
    };
    let sum = ((cos(q)? + cos(k)?)? + cos(v)?)?;
    Ok((sum / 3.0)?.mean(1)?)
}

/// Global-patch removal: `C' = max(C[1:, 1:] − C[0, 1:], 0)`, `(B, T, T) → (B, N, N)`.
pub fn remove_global(c: &Tensor) -> Result<Tensor> {
    let (_, t, _) = c.dims3()?;
    let n = t - 1;
    let patches = c.narrow(1, 1, n)?.narrow(2, 1, n)?;
    let cls = c.narrow(1, 0, 1)?.narrow(2, 1, n)?;
    Ok(patches.broadcast_sub(&cls)?.relu()?)
}

/// The clusters of one crop and the region map they induce at the crop's pixel size.
#[derive(Debug, Clone, PartialEq)]
pub struct Clusters {
    /// DBSCAN label per patch (`-1` = noise), length `h·w`.
    pub labels: Vec<i32>,
    /// Number of clusters K.
    pub count: usize,
    /// Region (cluster index) of every crop pixel, `(Hc, Wc)` row-major; empty when K = 0.
    pub region: Vec<u32>,
}

/// Cluster one crop's `C'` (`N × N` row-major, `N = gh·gw`) and build its region map at `crop`
/// size: cluster map k = mean of the `C'` rows of cluster k, as a `(gh, gw)` plane; ×4
/// bilinear; median filter 7; bilinear to `crop`; argmax over clusters (lowest index wins ties).
pub fn cluster_regions(
    c_prime: &[f32],
    grid: (usize, usize),
    crop: (usize, usize),
    eps: f64,
    min_samples: usize,
) -> Clusters {
    let n = grid.0 * grid.1;
    let labels = dbscan(c_prime, n, n, eps, min_samples);
    let count = labels.iter().map(|&l| l + 1).max().unwrap_or(0) as usize;
    if count == 0 {
        return Clusters {
            labels,
            count,
            region: Vec::new(),
        };
    }
    let fine = (CLUSTER_UPSAMPLE * grid.0, CLUSTER_UPSAMPLE * grid.1);
    let mut best = vec![f32::NEG_INFINITY; crop.0 * crop.1];
    let mut region = vec![0u32; crop.0 * crop.1];
    for k in 0..count {
        let members: Vec<usize> = (0..n).filter(|&i| labels[i] == k as i32).collect();
        let mut map = vec![0f32; n];
        for &i in &members {
            for (m, c) in map.iter_mut().zip(&c_prime[i * n..(i + 1) * n]) {
                *m += c;
            }
        }
        let inv = members.len() as f32;
        map.iter_mut().for_each(|m| *m /= inv);
        let up = resize_bilinear(&map, grid, fine);
        let smooth = median_filter(&up, fine, MEDIAN_SIZE);
        let full = resize_bilinear(&smooth, fine, crop);
        for (p, v) in full.into_iter().enumerate() {
            // Strictly greater: on ties the lower cluster index stays (torch argmax).
            if v > best[p] {
                best[p] = v;
                region[p] = k as u32;
            }
        }
    }
    Clusters {
        labels,
        count,
        region,
    }
}

/// The d2 vote as features: for one crop's normalised patch features `f̂` `(E, gh, gw)`, every
/// pixel of region k gets `mean_{p ∈ k} bilinear(f̂)(p)`, so that its logits are the mean of the
/// region's upsampled logits. Returns `(E, Hc, Wc)`.
pub fn region_mean_features(
    f_hat: &Tensor,
    clusters: &Clusters,
    crop: (usize, usize),
) -> Result<Tensor> {
    let mut out = Vec::new();
    region_mean_into(f_hat, clusters, crop, &mut out)?;
    Ok(Tensor::from_vec(
        out,
        (f_hat.dim(0)?, crop.0, crop.1),
        f_hat.device(),
    )?)
}

/// [`region_mean_features`], appending the `(E, Hc, Wc)` values to `out`.
pub fn region_mean_into(
    f_hat: &Tensor,
    clusters: &Clusters,
    crop: (usize, usize),
    out: &mut Vec<f32>,
) -> Result<()> {
    let (e, gh, gw) = f_hat.dims3()?;
    let n = gh * gw;
    let k = clusters.count;
    let mut weights = vec![0f64; k * n];
    let mut counts = vec![0usize; k];
    for (p, taps) in bilinear_taps((gh, gw), crop).enumerate() {
        let r = clusters.region[p] as usize;
        counts[r] += 1;
        for (i, w) in taps {
            weights[r * n + i] += f64::from(w);
        }
    }
    let weights: Vec<f32> = weights
        .chunks(n)
        .zip(&counts)
        .flat_map(|(row, &c)| row.iter().map(move |w| (w / c.max(1) as f64) as f32))
        .collect();
    let dev = f_hat.device();
    let w = Tensor::from_vec(weights, (k, n), dev)?;
    let f = f_hat.to_dtype(DType::F32)?.reshape((e, n))?;
    let region_feats = w.matmul(&f.t()?)?; // (K, E)
    expand_regions_into(&region_feats, &clusters.region, out)
}

/// The per-window majority vote as features: argmax query per pixel over the bilinearly
/// upsampled logits `text · f̂`, the most frequent query per region (lowest index wins ties),
/// and that query's text embedding for every pixel of the region. Returns `(E, Hc, Wc)`.
pub fn majority_features(
    f_hat: &Tensor,
    text: &Tensor,
    clusters: &Clusters,
    crop: (usize, usize),
) -> Result<Tensor> {
    let mut out = Vec::new();
    majority_into(f_hat, text, clusters, crop, &mut out)?;
    Ok(Tensor::from_vec(
        out,
        (text.dim(1)?, crop.0, crop.1),
        f_hat.device(),
    )?)
}

/// [`majority_features`], appending the `(E, Hc, Wc)` values to `out`.
pub fn majority_into(
    f_hat: &Tensor,
    text: &Tensor,
    clusters: &Clusters,
    crop: (usize, usize),
    out: &mut Vec<f32>,
) -> Result<()> {
    let (e, gh, gw) = f_hat.dims3()?;
    let (q, _) = text.dims2()?;
    let text = text.to_dtype(DType::F32)?;
    let logits = text.matmul(&f_hat.to_dtype(DType::F32)?.reshape((e, gh * gw))?)?; // (Q, N)
    let logits: Vec<Vec<f32>> = logits.to_vec2()?;
    let px = crop.0 * crop.1;
    let mut best = vec![f32::NEG_INFINITY; px];
    let mut arg = vec![0usize; px];
    for (j, plane) in logits.iter().enumerate() {
        for (p, v) in resize_bilinear(plane, (gh, gw), crop)
            .into_iter()
            .enumerate()
        {
            if v > best[p] {
                best[p] = v;
                arg[p] = j;
            }
        }
    }
    // Deviation: upstream votes over class ids after mapping its background prompts to one
    // class; the features stage sees queries only, so synonyms vote separately here. Identical
    // when every class has one query (no measured effect on the fixtures, which have no synonyms).
    let mut votes = vec![0usize; clusters.count * q];
    for (p, &r) in clusters.region.iter().enumerate() {
        votes[r as usize * q + arg[p]] += 1;
    }
    let winners: Vec<u32> = votes
        .chunks(q)
        .map(|row| {
            let mut w = 0;
            for (j, &c) in row.iter().enumerate() {
                if c > row[w] {
                    w = j;
                }
            }
            w as u32
        })
        .collect();
    let winners = Tensor::new(winners.as_slice(), text.device())?;
    let region_feats = text.index_select(&winners, 0)?; // (K, E)
    expand_regions_into(&region_feats, &clusters.region, out)
}

/// Append `(E, Hc, Wc)` values to `out` from `(K, E)` region features and a `(Hc, Wc)` region
/// map.
///
/// Written as a plain gather into the output layout: candle's `index_select` followed by a
/// transposed copy took about a second per 224² crop at E = 512, this takes milliseconds.
fn expand_regions_into(region_feats: &Tensor, region: &[u32], out: &mut Vec<f32>) -> Result<()> {
    // (E, K): one short row per channel, gathered by region index.
    let by_channel: Vec<Vec<f32>> = region_feats.t()?.to_dtype(DType::F32)?.to_vec2()?;
    out.reserve(by_channel.len() * region.len());
    for row in &by_channel {
        out.extend(region.iter().map(|&r| row[r as usize]));
    }
    Ok(())
}

/// Bilinear upsampling of `(E, gh, gw)` features to `(E, Hc, Wc)`: the crops without any
/// cluster, so that a batch has one shape; the logits equal the pipeline's upsampled logits.
pub fn upsample_features(f_hat: &Tensor, crop: (usize, usize)) -> Result<Tensor> {
    let mut out = Vec::new();
    upsample_into(f_hat, crop, &mut out)?;
    Ok(Tensor::from_vec(
        out,
        (f_hat.dim(0)?, crop.0, crop.1),
        f_hat.device(),
    )?)
}

/// [`upsample_features`], appending the `(E, Hc, Wc)` values to `out`.
pub fn upsample_into(f_hat: &Tensor, crop: (usize, usize), out: &mut Vec<f32>) -> Result<()> {
    let (e, gh, gw) = f_hat.dims3()?;
    let planes: Vec<Vec<f32>> = f_hat
        .to_dtype(DType::F32)?
        .reshape((e, gh * gw))?
        .to_vec2()?;
    for p in &planes {
        out.extend(resize_bilinear(p, (gh, gw), crop));
    }
    Ok(())
}

/// Checks that the prefix recorded what the paper variant reads.
pub fn layer_qkv(
    prefix: &segsweep_core::PrefixOut,
    layer: usize,
) -> Result<&(Tensor, Tensor, Tensor)> {
    prefix.qkv.get(&layer).ok_or_else(|| {
        CoreError::plugin(
            crate::NAME,
            format!(
                "variant \"paper\" reads q, k, v of layer {layer}, but the backbone prefix did \
                 not record them (recorded: {:?}); the runner must pass the plugin's needs() to \
                 Backbone::prefix",
                prefix.qkv.keys().collect::<Vec<_>>()
            ),
        )
    })
}
