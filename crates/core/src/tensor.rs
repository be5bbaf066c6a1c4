//! Small tensor helpers shared by the pipeline and plugins.

use candle_core::{DType, Tensor, D};

use crate::error::{CoreError, Result};

/// L2-normalise along `dim` (no epsilon, as PyTorch's `x / x.norm(dim, keepdim=True)`).
///
/// A slice whose norm is 0 (an all-zero row) becomes NaN (0 / 0), exactly as in PyTorch; callers
/// that can meet one must guard it.
pub fn l2_normalise(x: &Tensor, dim: usize) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(dim)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// Softmax along `dim`, computed in f32 with the max subtracted.
pub fn softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let max = x.max_keepdim(dim)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(dim)?;
    Ok(e.broadcast_div(&s)?.to_dtype(dtype)?)
}

/// SCLIP's synonym merge: `softmax(scale · logits)` over all Q queries, then for each class the
/// max over its queries' probabilities. `(Q, H, W) → (C, H, W)`.
pub fn class_probs(
    logits: &Tensor,
    logit_scale: f32,
    query_class: &[usize],
    n_classes: usize,
) -> Result<Tensor> {
    let (q, _h, _w) = logits.dims3()?;
    if q != query_class.len() {
        return Err(CoreError::shape(
            "dense logits",
            format!("({}, H, W) (one plane per query)", query_class.len()),
            logits.dims(),
        ));
    }
    let p = softmax(&(logits.to_dtype(DType::F32)? * logit_scale as f64)?, 0)?;
    let mut planes = Vec::with_capacity(n_classes);
    for c in 0..n_classes {
        let idx: Vec<u32> = query_class
            .iter()
            .enumerate()
            .filter(|(_, &k)| k == c)
            .map(|(i, _)| i as u32)
            .collect();
        if idx.is_empty() {
            return Err(CoreError::Msg(format!("class {c} has no query")));
        }
        let idx = Tensor::new(idx.as_slice(), p.device())?;
        planes.push(p.index_select(&idx, 0)?.max_keepdim(0)?);
    }
    Ok(Tensor::cat(&planes, 0)?)
}

/// Argmax over the first dimension: `(C, H, W) → (H, W)` u32; ties go to the lowest index.
pub fn argmax0(x: &Tensor) -> Result<Tensor> {
    Ok(x.argmax_keepdim(0)?.squeeze(0)?.to_dtype(DType::U32)?)
}

/// The last dimension index helper re-exported for plugins.
pub const LAST: D = D::Minus1;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn class_probs_is_softmax_then_max_over_synonyms() {
        // 3 queries (class 0 has two synonyms), 1×2 image.
        let l = Tensor::new(&[[[0.1f32, 0.5]], [[0.3, 0.2]], [[0.2, 0.1]]], &Device::Cpu).unwrap();
        let p = class_probs(&l, 10.0, &[0, 0, 1], 2).unwrap();
        let p: Vec<Vec<Vec<f32>>> = p.to_vec3().unwrap();
        // pixel 0: exp(1), exp(3), exp(2) → class0 = max(e1, e3)/Σ, class1 = e2/Σ
        let s = 1f32.exp() + 3f32.exp() + 2f32.exp();
        assert!((p[0][0][0] - 3f32.exp() / s).abs() < 1e-6);
        assert!((p[1][0][0] - 2f32.exp() / s).abs() < 1e-6);
        let s = 5f32.exp() + 2f32.exp() + 1f32.exp();
        assert!((p[0][0][1] - 5f32.exp() / s).abs() < 1e-6);
    }

    #[test]
    fn argmax_ties_go_to_lowest_index() {
        let x = Tensor::new(&[[[1f32, 0.]], [[1., 2.]]], &Device::Cpu).unwrap();
        let a: Vec<Vec<u32>> = argmax0(&x).unwrap().to_vec2().unwrap();
        assert_eq!(a, vec![vec![0, 1]]);
    }
}
