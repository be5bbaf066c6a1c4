//! Bilinear resampling of f32 planes exactly as PyTorch's
//! `F.interpolate(x, size, mode='bilinear', align_corners=False)` computes it on the CPU.
//!
//! Written here rather than with candle's `upsample_bilinear2d` because the stitcher adds each
//! upsampled crop straight into the canvas (no `(Q, 224, 224)` temporary per crop), runs the
//! planes in parallel, and follows torch's f32 arithmetic order
//! (`(v00·wx0 + v01·wx1)·wy0 + (v10·wx0 + v11·wx1)·wy1`).

use rayon::prelude::*;

/// Source indices and weights along one axis.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    i0: Vec<usize>,
    i1: Vec<usize>,
    w0: Vec<f32>,
    w1: Vec<f32>,
}

impl Axis {
    /// torch `area_pixel_compute_source_index` with `scale = in / out` in f32: the tables of
    /// `segsweep_kernels::post::bilinear_axis`, which the GPU kernels use too.
    pub(crate) fn new(input: usize, output: usize) -> Axis {
        let mut a = Axis {
            i0: Vec::with_capacity(output),
            i1: Vec::with_capacity(output),
            w0: Vec::with_capacity(output),
            w1: Vec::with_capacity(output),
        };
        for (i0, i1, w0, w1) in segsweep_kernels::post::bilinear_axis(input, output) {
            a.i0.push(i0);
            a.i1.push(i1);
            a.w0.push(w0);
            a.w1.push(w1);
        }
        a
    }

    /// Output index `d`'s two source indices and weights `(i0, i1, w0, w1)`.
    pub(crate) fn at(&self, d: usize) -> (usize, usize, f32, f32) {
        (self.i0[d], self.i1[d], self.w0[d], self.w1[d])
    }
}

/// Resample one plane `(ih, iw)` to `(oh, ow)` and write (or add, with `add`) it into `dst`, a
/// plane of row stride `dst_w`, at offset `(y0, x0)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resize_plane_into(
    src: &[f32],
    (ih, iw): (usize, usize),
    ax_y: &Axis,
    ax_x: &Axis,
    dst: &mut [f32],
    dst_w: usize,
    (y0, x0): (usize, usize),
    add: bool,
) {
    let ow = ax_x.i0.len();
    // Horizontal pass over every source row first: torch interpolates along x inside each row.
    let mut rows = vec![0f32; ih * ow];
    for r in 0..ih {
        let s = &src[r * iw..(r + 1) * iw];
        let o = &mut rows[r * ow..(r + 1) * ow];
        for x in 0..ow {
            o[x] = s[ax_x.i0[x]] * ax_x.w0[x] + s[ax_x.i1[x]] * ax_x.w1[x];
        }
    }
    for (y, ((&i0, &i1), (&w0, &w1))) in ax_y
        .i0
        .iter()
        .zip(&ax_y.i1)
        .zip(ax_y.w0.iter().zip(&ax_y.w1))
        .enumerate()
    {
        let (r0, r1) = (&rows[i0 * ow..(i0 + 1) * ow], &rows[i1 * ow..(i1 + 1) * ow]);
        let start = (y0 + y) * dst_w + x0;
        let d = &mut dst[start..start + ow];
        if add {
            for ((d, &a), &b) in d.iter_mut().zip(r0).zip(r1) {
                *d += a * w0 + b * w1;
            }
        } else {
            for ((d, &a), &b) in d.iter_mut().zip(r0).zip(r1) {
                *d = a * w0 + b * w1;
            }
        }
    }
}

/// Resample `(P, ih, iw)` planes to `(P, oh, ow)`, planes in parallel.
pub fn resize_planes(
    src: &[f32],
    planes: usize,
    (ih, iw): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    let mut out = vec![0f32; planes * oh * ow];
    if planes == 0 || oh * ow == 0 {
        return out;
    }
    let (ay, ax) = (Axis::new(ih, oh), Axis::new(iw, ow));
    out.par_chunks_mut(oh * ow)
        .zip(src.par_chunks(ih * iw))
        .for_each(|(o, s)| resize_plane_into(s, (ih, iw), &ay, &ax, o, ow, (0, 0), false));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_two_pixels_matches_torch() {
        // torch: F.interpolate(tensor([[[[0., 4.]]]]), size=(1, 4), mode='bilinear')
        //        → [0, 1, 3, 4]
        let out = resize_planes(&[0.0, 4.0], 1, (1, 2), (1, 4));
        assert_eq!(out, vec![0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn downsampling_by_two_averages_pairs_and_identity_is_exact() {
        // scale 2: source x = 2d + 0.5 → the mean of each pair.
        let out = resize_planes(&[1.0, 3.0, 5.0, 9.0], 1, (1, 4), (1, 2));
        assert_eq!(out, vec![2.0, 7.0]);
        let src: Vec<f32> = (0..12).map(|v| v as f32 * 0.37).collect();
        assert_eq!(resize_planes(&src, 2, (2, 3), (2, 3)), src);
    }

    #[test]
    fn non_square_plane_matches_a_direct_formula() {
        // 2×3 → 5×4 against the per-pixel definition.
        let src = [0.5f32, -1.0, 2.0, 3.0, 0.25, -2.0];
        let out = resize_planes(&src, 1, (2, 3), (5, 4));
        let coord = |d: usize, i: usize, o: usize| {
            ((i as f32 / o as f32) * (d as f32 + 0.5) - 0.5).max(0.0)
        };
        for y in 0..5 {
            for x in 0..4 {
                let (sy, sx) = (coord(y, 2, 5), coord(x, 3, 4));
                let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
                let (y1, x1) = ((y0 + 1).min(1), (x0 + 1).min(2));
                let (ly, lx) = (sy - y0 as f32, sx - x0 as f32);
                let v = |r: usize, c: usize| src[r * 3 + c];
                let want = (v(y0, x0) * (1.0 - lx) + v(y0, x1) * lx) * (1.0 - ly)
                    + (v(y1, x0) * (1.0 - lx) + v(y1, x1) * lx) * ly;
                assert!((out[y * 4 + x] - want).abs() < 1e-6, "({y}, {x})");
            }
        }
    }
}
