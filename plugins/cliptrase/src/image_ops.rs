//! Plane operations of CLIPtrase's cluster post-processing, each matching the library call the
//! reference uses: torch `F.interpolate(mode='bilinear', align_corners=False)` and scipy
//! `ndimage.median_filter(size, mode='reflect')`. Planes are row-major `(h, w)` `f32` slices.

// The taps are torch's `align_corners=False` source indices and weights computed in f32 as
// torch's CPU kernel does; segsweep-kernels' `bilinear_axis` is that function, shared with the
// pipeline's own upsampling (quality review D25: this crate had an identical copy).
use segsweep_kernels::post::bilinear_axis;

/// Bilinear resize of one plane `(ih, iw) → (oh, ow)`, torch `align_corners=False` semantics
/// (the width is interpolated inside each source row first, then the rows are blended).
pub fn resize_bilinear(
    src: &[f32],
    (ih, iw): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    assert_eq!(
        src.len(),
        ih * iw,
        "resize_bilinear: plane must hold ih·iw values"
    );
    let ty = bilinear_axis(ih, oh);
    let tx = bilinear_axis(iw, ow);
    let mut out = Vec::with_capacity(oh * ow);
    for &(y0, y1, wy0, wy1) in &ty {
        let r0 = &src[y0 * iw..(y0 + 1) * iw];
        let r1 = &src[y1 * iw..(y1 + 1) * iw];
        for &(x0, x1, wx0, wx1) in &tx {
            let t0 = r0[x0] * wx0 + r0[x1] * wx1;
            let t1 = r1[x0] * wx0 + r1[x1] * wx1;
            out.push(t0 * wy0 + t1 * wy1);
        }
    }
    out
}

/// The bilinear taps of every output pixel as `(source index, weight)` pairs (4 per pixel,
/// possibly repeated at the border), for linear maps of upsampled planes.
pub fn bilinear_taps(
    (ih, iw): (usize, usize),
    (oh, ow): (usize, usize),
) -> impl Iterator<Item = [(usize, f32); 4]> {
    let ty = bilinear_axis(ih, oh);
    let tx = bilinear_axis(iw, ow);
    (0..oh * ow).map(move |p| {
        let (y0, y1, wy0, wy1) = ty[p / ow];
        let (x0, x1, wx0, wx1) = tx[p % ow];
        [
            (y0 * iw + x0, wy0 * wx0),
            (y0 * iw + x1, wy0 * wx1),
            (y1 * iw + x0, wy1 * wx0),
            (y1 * iw + x1, wy1 * wx1),
        ]
    })
}

/// scipy's `mode='reflect'` index: `d c b a | a b c d | d c b a`, for any offset.
fn reflect(i: isize, len: usize) -> usize {
    let n = len as isize;
    let m = i.rem_euclid(2 * n);
    (if m >= n { 2 * n - 1 - m } else { m }) as usize
}

/// Median filter of one plane with a `size × size` window and scipy's `reflect` border,
/// returning the element of rank `size² / 2` (scipy's choice; the exact median for odd sizes).
pub fn median_filter(src: &[f32], (h, w): (usize, usize), size: usize) -> Vec<f32> {
    assert_eq!(
        src.len(),
        h * w,
        "median_filter: plane must hold h·w values"
    );
    // scipy centres the window at size / 2 (origin 0).
    let before = (size / 2) as isize;
    let rank = size * size / 2;
    let mut window = Vec::with_capacity(size * size);
    let mut out = Vec::with_capacity(h * w);
    for y in 0..h as isize {
        for x in 0..w as isize {
            window.clear();
            for dy in 0..size as isize {
                let row = reflect(y + dy - before, h) * w;
                for dx in 0..size as isize {
                    window.push(src[row + reflect(x + dx - before, w)]);
                }
            }
            let (_, m, _) = window.select_nth_unstable_by(rank, f32::total_cmp);
            out.push(*m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_torch_by_hand() {
        // torch: F.interpolate(tensor([[[[0., 4.]]]]), size=(1, 4), mode='bilinear')
        // = [0, 1, 3, 4]  (src = 0.5·(dst + 0.5) − 0.5 → −0.25→0, 0.25, 0.75, 1.25→tap 1).
        assert_eq!(
            resize_bilinear(&[0.0, 4.0], (1, 2), (1, 4)),
            vec![0.0, 1.0, 3.0, 4.0]
        );
        // Same size is the identity.
        let p: Vec<f32> = (0..12).map(|i| i as f32 * 0.3).collect();
        assert_eq!(resize_bilinear(&p, (3, 4), (3, 4)), p);
    }

    #[test]
    fn taps_reproduce_resize() {
        let p: Vec<f32> = (0..15).map(|i| ((i * 7) % 5) as f32).collect();
        let r = resize_bilinear(&p, (3, 5), (8, 11));
        for (o, taps) in bilinear_taps((3, 5), (8, 11)).enumerate() {
            let v: f32 = taps.iter().map(|&(i, w)| p[i] * w).sum();
            assert!((v - r[o]).abs() < 1e-5);
        }
    }

    #[test]
    fn reflect_is_half_sample_symmetric() {
        let idx: Vec<usize> = (-4..8).map(|i| reflect(i, 4)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
    }

    #[test]
    fn median_by_hand() {
        // 3×3 window on a 1×3 row [1, 5, 2] with reflect: the centre window is rows
        // {row, row, row} and columns {1, 5, 2} → values 1,5,2 ×3 → median 2.
        assert_eq!(
            median_filter(&[1.0, 5.0, 2.0], (1, 3), 3),
            vec![1.0, 2.0, 2.0]
        );
    }
}
