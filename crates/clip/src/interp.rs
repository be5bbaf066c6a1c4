//! Position-embedding interpolation for patch grids other than the training grid
//! (methods.md §0, SCLIP `clip/model.py:263-281`).
//!
//! SCLIP calls `F.interpolate(pos, scale_factor=((gh+0.1)/g0, (gw+0.1)/g0), mode='bicubic',
//! align_corners=False)`. Because a scale factor (not a size) is passed, torch maps output to
//! input coordinates with `1/scale_factor`, not `g0/gh`; a port that uses the size ratio gives
//! different numbers. This file reproduces torch's CPU kernel (`UpSampleKernel.cpp`,
//! `HelperInterpCubic`): cubic convolution with A = −0.75, source index
//! `(dst + 0.5)/sf − 0.5`, `floor` then clamp of the index into the input, replicated borders,
//! arithmetic in f32 like torch's `opmath_t` for float.

const A: f32 = -0.75;

fn cubic1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

fn cubic2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// Source indices (4 taps, clamped) and weights for each output position along one axis.
fn taps(in_len: usize, out_len: usize, scale_factor: f64) -> Vec<([usize; 4], [f32; 4])> {
    // torch: compute_scales_value → static_cast<float>(1.0 / scale_factor).
    let scale = (1.0 / scale_factor) as f32;
    (0..out_len)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            // guard_index_and_lambda
            let idx = (real.floor() as i64).min(in_len as i64 - 1);
            let t = (real - idx as f32).clamp(0.0, 1.0);
            let w = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
            let clamp = |i: i64| i.clamp(0, in_len as i64 - 1) as usize;
            (
                [clamp(idx - 1), clamp(idx), clamp(idx + 1), clamp(idx + 2)],
                w,
            )
        })
        .collect()
}

/// Output size torch derives from a scale factor: `floor(in · sf)`.
pub fn scaled_len(in_len: usize, scale_factor: f64) -> usize {
    (in_len as f64 * scale_factor).floor() as usize
}

/// SCLIP's scale factor for a target grid side: `(g + 0.1) / g0`.
pub fn sclip_scale_factor(target: usize, base: usize) -> f64 {
    (target as f64 + 0.1) / base as f64
}

/// Bicubic resize of a channel-last map `(in_h, in_w, c)` (row-major) by per-axis scale factors,
/// torch-style (see the module doc). Returns `(out_h, out_w, c)` with
/// `out = floor(in · sf)` per axis.
pub fn bicubic_hwc(
    src: &[f32],
    (in_h, in_w, c): (usize, usize, usize),
    (sf_h, sf_w): (f64, f64),
) -> (Vec<f32>, (usize, usize)) {
    let (out_h, out_w) = (scaled_len(in_h, sf_h), scaled_len(in_w, sf_w));
    let ty = taps(in_h, out_h, sf_h);
    let tx = taps(in_w, out_w, sf_w);
    let mut out = vec![0f32; out_h * out_w * c];
    let mut rows = [0f32; 4];
    for (oy, (iy, wy)) in ty.iter().enumerate() {
        for (ox, (ix, wx)) in tx.iter().enumerate() {
            let dst = &mut out[(oy * out_w + ox) * c..(oy * out_w + ox + 1) * c];
            for (ch, d) in dst.iter_mut().enumerate() {
                // Along x for each of the 4 source rows, then along y (torch's order).
                for (r, &y) in iy.iter().enumerate() {
                    let at = |x: usize| src[(y * in_w + x) * c + ch];
                    rows[r] = at(ix[0]) * wx[0]
                        + at(ix[1]) * wx[1]
                        + at(ix[2]) * wx[2]
                        + at(ix[3]) * wx[3];
                }
                *d = rows[0] * wy[0] + rows[1] * wy[1] + rows[2] * wy[2] + rows[3] * wy[3];
            }
        }
    }
    (out, (out_h, out_w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_scale_reproduces_input() {
        // scale 1 → src index = dst, t = 0 → weights (0, 1, 0, 0).
        let src: Vec<f32> = (0..12).map(|v| v as f32 * 0.5).collect();
        let (out, size) = bicubic_hwc(&src, (3, 4, 1), (1.0, 1.0));
        assert_eq!(size, (3, 4));
        for (a, b) in out.iter().zip(&src) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn constant_map_stays_constant_and_weights_sum_to_one() {
        let src = vec![2.5f32; 14 * 14 * 2];
        let (out, size) = bicubic_hwc(
            &src,
            (14, 14, 2),
            (sclip_scale_factor(21, 14), sclip_scale_factor(9, 14)),
        );
        assert_eq!(size, (21, 9));
        assert!(out.iter().all(|v| (v - 2.5).abs() < 1e-5));
    }

    #[test]
    fn sclip_rule_gives_the_target_grid() {
        for g in 1..64 {
            assert_eq!(scaled_len(14, sclip_scale_factor(g, 14)), g);
        }
    }
}
