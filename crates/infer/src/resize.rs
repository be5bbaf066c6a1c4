//! Image preprocessing exactly as SCLIP's mmseg pipeline does it: mmcv `imrescale` with OpenCV's
//! fixed-point `INTER_LINEAR` on uint8, then per-channel normalisation.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use segsweep_core::RgbImage;

use crate::error::{InferError, Result};

/// OpenCV's `INTER_RESIZE_COEF_BITS`: interpolation weights are 11-bit fixed point.
const COEF_SCALE: f32 = 2048.0;

/// Output rows per parallel task of the resize and the normalisation.
const BAND_ROWS: usize = 16;

/// mmcv `rescale_size` with `scale = (long_cap, short)`: the factor
/// `f = min(max(scale) / long_side, min(scale) / short_side)` and the new size
/// `(int(h·f + 0.5), int(w·f + 0.5))`, computed in f64 as Python does. Returns `(h, w)`.
pub fn rescale_size(h: usize, w: usize, short: usize, long_cap: usize) -> (usize, usize) {
    let (max_edge, min_edge) = (short.max(long_cap) as f64, short.min(long_cap) as f64);
    let f = (max_edge / h.max(w) as f64).min(min_edge / h.min(w) as f64);
    ((h as f64 * f + 0.5) as usize, (w as f64 * f + 0.5) as usize)
}

/// Resize so that the short side becomes `short` (the long side capped at `long_cap`), as mmcv's
/// `imrescale(img, (long_cap, short))` with the cv2 backend does: `(h, w, 3) → (h', w', 3)`.
///
/// The interpolation is bit-exact with `cv2.resize(img, (w', h'), interpolation=INTER_LINEAR)`
/// of OpenCV 5.0 on x86 (checked on up- and down-scales, odd sizes and exact 2× reductions; the
/// goldens in `tests/fixtures/sclip/` cover it): 11-bit weights rounded half-to-even, an exact
/// integer horizontal pass, and the SIMD vertical pass
/// `((((r0 >> 4) · β0) >> 16) + (((r1 >> 4) · β1) >> 16) + 2) >> 2`.
pub fn resize_short_side(img: &RgbImage, short: usize, long_cap: usize) -> Result<RgbImage> {
    if img.h == 0 || img.w == 0 {
        return Err(InferError::Config {
            key: "image",
            msg: format!("cannot resize an empty {}×{} image", img.h, img.w),
        });
    }
    if short == 0 || long_cap == 0 {
        return Err(InferError::Config {
            key: "short_side",
            msg: "must be at least 1 pixel".into(),
        });
    }
    let (h, w) = rescale_size(img.h, img.w, short, long_cap);
    Ok(resize_linear_u8(img, h.max(1), w.max(1)))
}

/// One axis of cv2's linear resize: source index and the two fixed-point weights per output.
/// `clamp` is true for x (cv2 clamps the weight at the border) and false for y (cv2 keeps the
/// fractional weight and clamps only the row index, which changes rounding on border rows).
fn cv_axis(src: usize, dst: usize, clamp: bool) -> Vec<(isize, i32, i32)> {
    // cv2 computes `scale = 1 / (dst / src)` in double, then the position in float.
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as isize;
            f -= s as f32;
            if clamp {
                if s < 0 {
                    f = 0.0;
                    s = 0;
                }
                if s >= src as isize - 1 {
                    f = 0.0;
                    s = src as isize - 1;
                }
            }
            let a0 = ((1.0 - f) * COEF_SCALE).round_ties_even() as i32;
            let a1 = (f * COEF_SCALE).round_ties_even() as i32;
            (s, a0, a1)
        })
        .collect()
}

/// cv2 `INTER_LINEAR` on an RGB u8 image to `(h, w)`.
fn resize_linear_u8(img: &RgbImage, h: usize, w: usize) -> RgbImage {
    if (h, w) == (img.h, img.w) {
        return img.clone();
    }
    let xs = cv_axis(img.w, w, true);
    let ys = cv_axis(img.h, h, false);
    let last_x = img.w - 1;
    // Horizontal pass for one source row: exact integers (value · 2048 scale).
    let hrow = |r: usize, out: &mut [i32]| {
        let row = &img.data[r * img.w * 3..(r + 1) * img.w * 3];
        for (o, &(sx, a0, a1)) in out.chunks_exact_mut(3).zip(&xs) {
            let s0 = sx as usize * 3;
            let s1 = (sx as usize + 1).min(last_x) * 3;
            let (p0, p1) = (&row[s0..s0 + 3], &row[s1..s1 + 3]);
            for c in 0..3 {
                o[c] = p0[c] as i32 * a0 + p1[c] as i32 * a1;
            }
        }
    };
    // Bands of output rows in parallel (each with its own cache of the two source rows):
    // every output byte is computed exactly as in the serial loop.
    let mut data = vec![0u8; h * w * 3];
    let clamp_row = |s: isize| s.clamp(0, img.h as isize - 1) as usize;
    data.par_chunks_mut(BAND_ROWS * w * 3)
        .zip(ys.par_chunks(BAND_ROWS))
        .for_each(|(band, ys)| {
            let mut r0 = vec![0i32; w * 3];
            let mut r1 = vec![0i32; w * 3];
            let mut cached = (usize::MAX, usize::MAX);
            for (out, &(sy, b0, b1)) in band.chunks_mut(w * 3).zip(ys) {
                let (i0, i1) = (clamp_row(sy), clamp_row(sy + 1));
                if cached != (i0, i1) {
                    // Moving down one source row reuses the lower row as the upper one: one
                    // horizontal pass per output row instead of two.
                    if cached.1 == i0 {
                        std::mem::swap(&mut r0, &mut r1);
                    } else {
                        hrow(i0, &mut r0);
                    }
                    hrow(i1, &mut r1);
                    cached = (i0, i1);
                }
                for ((o, &s0), &s1) in out.iter_mut().zip(&r0).zip(&r1) {
                    // OpenCV's v_mul_hi on int16 lanes: floor((a · b) / 65536).
                    let v = (((s0 >> 4) * b0) >> 16) + (((s1 >> 4) * b1) >> 16);
                    *o = ((v + 2) >> 2).clamp(0, 255) as u8;
                }
            }
        });
    RgbImage { h, w, data }
}

/// Normalise an RGB image to `(3, h, w)` f32: `(x − 255·mean) / (255·std)` per channel, with
/// `mean`/`std` on the 0..=1 scale (SCLIP's `SegDataPreProcessor` on the 0..=255 scale).
pub fn normalise(img: &RgbImage, mean: [f32; 3], std: [f32; 3], device: &Device) -> Result<Tensor> {
    let data = normalise_vec(img, mean, std);
    Ok(Tensor::from_vec(data, (3, img.h, img.w), device)?)
}

/// [`normalise`] computed on `device` from the image's bytes: `(h, w, 3)` u8 → `(3, h, w)` f32,
/// bit-identical to [`normalise_vec`] (the same f32 `(x − m) / s` with IEEE subtraction and
/// division). On a GPU this uploads the bytes, a quarter of the f32 image, and leaves the host
/// free of the normalisation.
pub(crate) fn normalise_on(
    img: &RgbImage,
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<Tensor> {
    // The statistics are the same for every image: uploaded once per device (an upload from
    // pageable memory may wait for the work queued before it).
    let per_channel = |v: [f32; 3]| -> Result<Tensor> {
        Ok(segsweep_kernels::tables::upload(&v.map(|x| x * 255.0), device)?.reshape((3, 1, 1))?)
    };
    let (m, s) = (per_channel(mean)?, per_channel(std)?);
    let x = Tensor::from_slice(&img.data, (img.h, img.w, 3), device)?
        .to_dtype(candle_core::DType::F32)?
        .permute((2, 0, 1))?
        .contiguous()?;
    Ok(x.broadcast_sub(&m)?.broadcast_div(&s)?)
}

/// [`normalise`] into a plain `(3, h, w)` row-major vector.
pub(crate) fn normalise_vec(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let n = img.h * img.w;
    let mut out = vec![0f32; 3 * n];
    // Bands of rows of each channel plane in parallel.
    let band = (BAND_ROWS * img.w).max(1);
    out.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(c, plane)| {
            // Deviation: SCLIP's config writes the 0..255 values rounded to 3 decimals
            // (122.771, …); we scale CLIP's 0..1 values, a ≤ 1e-6 relative difference in the
            // input.
            let (m, s) = (mean[c] * 255.0, std[c] * 255.0);
            plane
                .par_chunks_mut(band)
                .enumerate()
                .for_each(|(k, part)| {
                    let src = &img.data[k * band * 3..];
                    for (p, o) in part.iter_mut().enumerate() {
                        *o = (src[p * 3 + c] as f32 - m) / s;
                    }
                });
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_on_a_device_equals_the_host_to_the_bit() {
        let (h, w) = (7, 13);
        let img = RgbImage {
            h,
            w,
            data: (0..h * w * 3).map(|i| (i * 37 % 256) as u8).collect(),
        };
        let (mean, std) = (
            [0.481_454_6, 0.457_827_5, 0.408_210_7],
            [0.268_629_5, 0.261_302_6, 0.275_777_1],
        );
        let host = normalise_vec(&img, mean, std);
        let dev = normalise_on(&img, mean, std, &Device::Cpu).unwrap();
        assert_eq!(dev.dims(), [3, h, w]);
        let dev: Vec<f32> = dev.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            host.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            dev.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn rescale_size_follows_mmcv() {
        // 375×500 → short side 336: f = 336/375 = 0.896 → (336, 448).
        assert_eq!(rescale_size(375, 500, 336, 2048), (336, 448));
        // the long-side cap wins for very elongated images: 100×3000, f = min(2048/3000, 3.36).
        assert_eq!(rescale_size(100, 3000, 336, 2048), (68, 2048));
        // upscaling a small non-square image: 150×230 → 224 short: f=1.4933 → (224, 343.97→343).
        assert_eq!(rescale_size(150, 230, 224, 2048), (224, 343));
        // portrait
        assert_eq!(rescale_size(230, 150, 224, 2048), (343, 224));
    }

    #[test]
    fn identity_and_constant_images_are_preserved() {
        let img = RgbImage::new(5, 7, (0..105).map(|i| (i * 7 % 256) as u8).collect()).unwrap();
        assert_eq!(resize_linear_u8(&img, 5, 7), img);
        let flat = RgbImage::new(9, 13, vec![200; 9 * 13 * 3]).unwrap();
        for (h, w) in [(20, 31), (4, 6), (9, 26)] {
            let r = resize_linear_u8(&flat, h, w);
            assert!(r.data.iter().all(|&v| v == 200), "{h}×{w}");
        }
    }

    #[test]
    fn exact_two_times_reduction_averages_two_by_two_blocks() {
        // 2×4 → 1×2: cv2 gives round-half-up of the 2×2 block means.
        let data: Vec<u8> = [10u8, 20, 30, 41, 50, 60, 70, 80]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let r = resize_linear_u8(&RgbImage::new(2, 4, data).unwrap(), 1, 2);
        // (10+20+50+60)/4 = 35, (30+41+70+80)/4 = 55.25 → 55
        assert_eq!(&r.data[..], &[35, 35, 35, 55, 55, 55]);
    }

    #[test]
    fn normalise_uses_the_0_255_scale() {
        let img = RgbImage::new(1, 2, vec![0, 128, 255, 255, 0, 128]).unwrap();
        let t = normalise(&img, [0.5; 3], [0.25; 3], &Device::Cpu).unwrap();
        let v: Vec<Vec<Vec<f32>>> = t.to_vec3().unwrap();
        assert!((v[0][0][0] - (0.0 - 127.5) / 63.75).abs() < 1e-6);
        assert!((v[1][0][0] - (128.0 - 127.5) / 63.75).abs() < 1e-6);
        assert!((v[2][0][1] - (128.0 - 127.5) / 63.75).abs() < 1e-6);
    }
}
