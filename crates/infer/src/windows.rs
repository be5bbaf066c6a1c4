//! Where the crops are taken from the resized image.

use segsweep_core::{InferConfig, Mode};

use crate::error::{InferError, Result};

/// One crop of the resized image: rows `y..y + h`, columns `x..x + w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub y: usize,
    pub x: usize,
    pub h: usize,
    pub w: usize,
}

/// SCLIP's sliding windows over an `(h, w)` image (`clip_segmentor.py` `forward_slide`), in
/// row-major order: per axis `max(n − crop + stride − 1, 0) / stride + 1` windows at
/// `i · stride`, the last one moved back so that it ends at the border
/// (`y1 = max(min(y1 + crop, n) − crop, 0)`). Where the image is smaller than the crop along an
/// axis, the window spans that axis (no padding).
pub fn slide_windows(h: usize, w: usize, crop: usize, stride: usize) -> Vec<Window> {
    let axis = |n: usize| -> Vec<(usize, usize)> {
        let count = (n + stride).saturating_sub(crop + 1) / stride + 1;
        (0..count)
            .map(|i| {
                let end = (i * stride + crop).min(n);
                let start = end.saturating_sub(crop);
                (start, end - start)
            })
            .collect()
    };
    let (ys, xs) = (axis(h), axis(w));
    ys.iter()
        .flat_map(|&(y, wh)| xs.iter().map(move |&(x, ww)| Window { y, x, h: wh, w: ww }))
        .collect()
}

/// The windows of an `(h, w)` resized image under `cfg`: SCLIP's slide rule, or the whole image
/// as one window.
pub fn windows_for(h: usize, w: usize, cfg: &InferConfig) -> Result<Vec<Window>> {
    match cfg.mode {
        Mode::Whole => Ok(vec![Window { y: 0, x: 0, h, w }]),
        Mode::Slide => {
            if cfg.crop == 0 || cfg.stride == 0 {
                return Err(InferError::Config {
                    key: if cfg.crop == 0 { "crop" } else { "stride" },
                    msg: "must be at least 1 pixel".into(),
                });
            }
            Ok(slide_windows(h, w, cfg.crop, cfg.stride))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule written as SCLIP writes it, for comparison.
    fn sclip(h: usize, w: usize, crop: usize, stride: usize) -> Vec<Window> {
        let grids = |n: usize| {
            (n as isize - crop as isize + stride as isize - 1).max(0) as usize / stride + 1
        };
        let mut out = vec![];
        for hi in 0..grids(h) {
            for wi in 0..grids(w) {
                let (y1, x1) = (hi * stride, wi * stride);
                let (y2, x2) = ((y1 + crop).min(h), (x1 + crop).min(w));
                let (y1, x1) = (y2.saturating_sub(crop), x2.saturating_sub(crop));
                out.push(Window {
                    y: y1,
                    x: x1,
                    h: y2 - y1,
                    w: x2 - x1,
                });
            }
        }
        out
    }

    #[test]
    fn slide_rule_matches_sclip_on_many_sizes() {
        for h in [1, 100, 223, 224, 225, 336, 337, 448, 500] {
            for w in [50, 224, 335, 336, 505, 673] {
                assert_eq!(
                    slide_windows(h, w, 224, 112),
                    sclip(h, w, 224, 112),
                    "{h}×{w}"
                );
            }
        }
    }

    #[test]
    fn voc_sized_image_has_eight_crops_with_the_last_clamped() {
        let ws = slide_windows(336, 505, 224, 112);
        assert_eq!(ws.len(), 2 * 4);
        let xs: Vec<usize> = ws.iter().take(4).map(|w| w.x).collect();
        assert_eq!(xs, vec![0, 112, 224, 281]);
        assert!(ws.iter().all(|w| w.h == 224 && w.w == 224));
        assert_eq!(ws[4].y, 112);
    }

    #[test]
    fn small_images_are_one_window_of_their_own_size() {
        let ws = slide_windows(150, 230, 224, 112);
        assert_eq!(
            ws,
            vec![
                Window {
                    y: 0,
                    x: 0,
                    h: 150,
                    w: 224
                },
                Window {
                    y: 0,
                    x: 6,
                    h: 150,
                    w: 224
                }
            ]
        );
    }
}
