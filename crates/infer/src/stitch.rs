//! SCLIP's stitching: each crop's logits upsampled to its window and averaged over the
//! windows that cover a pixel (`forward_slide`: `preds += pad(crop)`, `count_mat += 1`,
//! `preds / count_mat`).

use rayon::prelude::*;

use crate::error::{InferError, Result};
use crate::interp::{resize_plane_into, Axis};
use crate::windows::Window;

/// `n` zeros written into fresh memory, in parallel. [`Canvas::add`] adds into its buffers, and
/// an add into `vec![0.0; n]` (calloc: untouched pages) reads each page first, which maps the
/// shared zero page, and then writes it, which copies that page and flushes the TLBs of every
/// thread: on this repository's 2-core machine that took more time than the resampling (a
/// third of a tiny-model run). Pages first touched by a write are simply allocated.
pub(crate) fn zeros_written(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0.0f32, n));
    v
}

/// Sum of upsampled crop logits and the per-pixel window count at the resized size.
pub(crate) struct Canvas {
    q: usize,
    h: usize,
    w: usize,
    sum: Vec<f32>,
    count: Vec<f32>,
}

impl Canvas {
    pub(crate) fn new(q: usize, h: usize, w: usize) -> Canvas {
        Canvas {
            q,
            h,
            w,
            sum: zeros_written(q * h * w),
            count: zeros_written(h * w),
        }
    }

    /// Upsample one crop's `(Q, gh, gw)` logits to its window (bilinear, `align_corners=False`)
    /// and add them in, planes in parallel.
    pub(crate) fn add(&mut self, logits: &[f32], (gh, gw): (usize, usize), win: Window) {
        let (ay, ax) = (Axis::new(gh, win.h), Axis::new(gw, win.w));
        let w = self.w;
        self.sum
            .par_chunks_mut(self.h * self.w)
            .zip(logits.par_chunks(gh * gw))
            .for_each(|(plane, src)| {
                resize_plane_into(src, (gh, gw), &ay, &ax, plane, w, (win.y, win.x), true)
            });
        for y in win.y..win.y + win.h {
            for c in &mut self.count[y * w + win.x..y * w + win.x + win.w] {
                *c += 1.0;
            }
        }
    }

    /// The average over windows, `(Q, H, W)`.
    pub(crate) fn average(mut self) -> Result<Vec<f32>> {
        if self.count.contains(&0.0) {
            return Err(InferError::Pipeline(
                "a pixel of the resized image is in no window".into(),
            ));
        }
        let count = &self.count;
        self.sum
            .par_chunks_mut(self.h * self.w)
            .for_each(|plane| plane.iter_mut().zip(count).for_each(|(v, &c)| *v /= c));
        debug_assert_eq!(self.sum.len(), self.q * self.h * self.w);
        Ok(self.sum)
    }
}
