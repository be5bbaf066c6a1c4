//! segsweep-infer: SCLIP-style dense zero-shot inference on any [`segsweep_core::Backbone`].
//!
//! It turns an RGB image into class probabilities and labels at the image's original size:
//! mmcv-exact resize ([`resize_short_side`]), normalisation, SCLIP's sliding windows
//! ([`slide_windows`]) or the whole image, the backbone prefix in batches across windows and
//! images, the last block (a built-in strategy or an attention plugin), the head, feature
//! plugins, cosine logits, stitching into a canvas, dense plugins, the softmax with the synonym
//! max, and `area_thd`/`prob_thd`, then label plugins. It does not load models, build text
//! classifiers, read datasets or write files.
//!
//! Central types: [`Prepared`] (one image after the backbone prefix), [`DenseLogits`] (one
//! image after the attention and feature stages), [`Segmentation`] (probs and labels), and the
//! functions [`prepare`], [`prepare_many`], [`finish`] (= [`dense_logits`] + [`postprocess`])
//! and [`segment`] (= `prepare` + `finish`). [`dense_logits_many`] is [`dense_logits`] for
//! several images, running the last block on all their crops at once where no attention- or
//! feature-stage plugin runs ([`dense_batches_across_images`]).
//!
//! Design decision: the pipeline is split at the backbone prefix (layers 1..L−1, about 11/12 of
//! the FLOPs). [`prepare`] keeps every window's prefix output, so a sweep can run all of its
//! configurations on one prepared image with [`finish`], and [`segment`] is literally
//! `prepare` + `finish` — the cached and the uncached paths are the same code, which is what
//! makes their results identical. Stitching and post-processing run on plain f32 planes in
//! parallel (not as whole-tensor candle ops) so that a 2048×1024 image needs no `(Q, H, W)`
//! temporaries beyond the canvas and the resized logits.

mod device_dense;
mod error;
pub mod fake;
mod interp;
mod pipeline;
mod post;
mod resize;
mod stitch;
mod windows;

pub use error::{InferError, Result};
pub use interp::resize_planes;
pub use pipeline::{
    class_probabilities, dense_batches_across_images, dense_logits, dense_logits_many, finish,
    finish_traced, labels_from_probs, needs_of, postprocess, prepare, prepare_many, prepare_staged,
    segment, stage, window_count, window_count_for, ClassProbs, DenseLogits, Prepared,
    Segmentation, Step, Trace, LONG_SIDE_CAP,
};
pub use post::{class_probs, threshold_labels};
pub use resize::{normalise, rescale_size, resize_short_side};
pub use windows::{slide_windows, windows_for, Window};
