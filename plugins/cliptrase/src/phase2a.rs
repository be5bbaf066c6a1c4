//! The design notes' self-correlation recalibration (`variant = "phase2a"`).
//!
//! Pure tensor functions; no knowledge of the pipeline.

use candle_core::Tensor;
use segsweep_core::tensor::{l2_normalise, softmax};
use segsweep_core::{CoreError, Result};

/// Rows of the `N × N` correlation held at once: bounds memory to about 64 MiB per crop when
/// the features are per-pixel (after an upsampler, N = 224² = 50 176).
const MAX_CHUNK_ELEMS: usize = 1 << 24;

/// Self-correlation recalibration of crop features, `(B, E, h, w) → (B, E, h, w)`.
///
/// For each crop, with the `N = h·w` positions as rows:
/// `f̂ = f / ‖f‖`, `W = softmax_rows(f̂ f̂ᵀ / temperature)`, `out = (1 − α)·f̂ + α·W f̂`.
///
/// Both terms use the L2-normalised features f̂ (see the crate docs for why); the result is not
/// normalised, the head normalises it before the cosine with the text.
pub fn recalibrate(feats: &Tensor, temperature: f64, strength: f64) -> Result<Tensor> {
    let (_, _, h, w) = feats.dims4()?;
    let chunk = (MAX_CHUNK_ELEMS / (h * w).max(1)).max(1);
    recalibrate_chunked(feats, temperature, strength, chunk)
}

/// [`recalibrate`] with at most `chunk` correlation rows at a time.
fn recalibrate_chunked(
    feats: &Tensor,
    temperature: f64,
    strength: f64,
    chunk: usize,
) -> Result<Tensor> {
    let (b, e, h, w) = feats.dims4()?;
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(CoreError::Param {
            plugin: crate::NAME.into(),
            key: "correlation_temperature".into(),
            msg: format!("must be a finite number > 0, got {temperature}"),
            hint: Some("τ of softmax_rows(f̂ f̂ᵀ / τ); the design notes use 0.05".into()),
        });
    }
    let n = h * w;
    // (B, E, h, w) → (B, N, E), one row per position.
    let f = feats.reshape((b, e, n))?.transpose(1, 2)?.contiguous()?;
    let f_hat = l2_normalise(&f, 2)?;
    let f_hat_t = f_hat.transpose(1, 2)?.contiguous()?;
    let chunk = chunk.clamp(1, n.max(1));
    let mut parts = Vec::with_capacity(n.div_ceil(chunk));
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let rows = f_hat.narrow(1, start, len)?;
        let corr = (rows.matmul(&f_hat_t)? / temperature)?;
        let weights = softmax(&corr, 2)?;
        parts.push(weights.matmul(&f_hat)?);
        start += len;
    }
    let r = Tensor::cat(&parts, 1)?;
    let out = ((f_hat * (1.0 - strength))? + (r * strength)?)?;
    Ok(out.transpose(1, 2)?.contiguous()?.reshape((b, e, h, w))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn f64s(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    /// Two positions, E = 2, hand-computed: f̂₁ = (1, 0), f̂₂ = (1, 1)/√2, τ = 1, α = 0.5.
    #[test]
    fn two_positions_by_hand() {
        // (B=1, E=2, h=1, w=2): position 0 = (3, 0), position 1 = (2, 2).
        let f = Tensor::new(&[[[[3f32, 2.]], [[0., 2.]]]], &Device::Cpu).unwrap();
        let out = recalibrate(&f, 1.0, 0.5).unwrap();
        assert_eq!(out.dims(), &[1, 2, 1, 2]);
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let f1 = [1.0, 0.0];
        let f2 = [s, s];
        // Row softmax of [[1, s], [s, 1]].
        let w11 = 1f64.exp() / (1f64.exp() + s.exp());
        let w12 = 1.0 - w11;
        let (w21, w22) = (w12, w11);
        let o1: Vec<f64> = (0..2)
            .map(|d| 0.5 * f1[d] + 0.5 * (w11 * f1[d] + w12 * f2[d]))
            .collect();
        let o2: Vec<f64> = (0..2)
            .map(|d| 0.5 * f2[d] + 0.5 * (w21 * f1[d] + w22 * f2[d]))
            .collect();
        // Layout (E, h, w): [e0 p0, e0 p1, e1 p0, e1 p1].
        let want = [o1[0], o2[0], o1[1], o2[1]];
        for (g, w) in f64s(&out).iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn zero_strength_returns_normalised_input() {
        let f = Tensor::new(&[[[[3f32, 0.]], [[4., -2.]]]], &Device::Cpu).unwrap();
        let out = f64s(&recalibrate(&f, 0.05, 0.0).unwrap());
        let want = [0.6, 0.0, 0.8, -1.0];
        for (g, w) in out.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn chunked_rows_equal_one_block() {
        let f = Tensor::randn(0f32, 1.0, (2, 6, 3, 5), &Device::Cpu).unwrap();
        let whole = f64s(&recalibrate_chunked(&f, 0.1, 0.7, 1 << 20).unwrap());
        for chunk in [1, 4, 7] {
            let parts = f64s(&recalibrate_chunked(&f, 0.1, 0.7, chunk).unwrap());
            for (a, b) in whole.iter().zip(&parts) {
                assert!((a - b).abs() < 1e-6, "chunk {chunk}: {a} vs {b}");
            }
        }
    }

    /// quality review C20: the error names the plugin and the parameter, with a hint.
    #[test]
    fn rejects_non_positive_temperature_naming_the_parameter() {
        let f = Tensor::ones((1, 2, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = recalibrate(&f, t, 0.5).unwrap_err();
            assert!(
                matches!(&e, CoreError::Param { plugin, key, hint: Some(_), .. }
                    if plugin == "cliptrase" && key == "correlation_temperature"),
                "{e}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains("`cliptrase`") && msg.contains("`correlation_temperature`"),
                "{msg}"
            );
        }
    }
}
