//! Progress reporting for long file loops (`prepare`, `check`, `eval`).
//!
//! Library functions take `&dyn Fn(done, total)` so that tests pass [`no_progress`] and the CLI
//! passes [`ProgressBar`]'s callback; the library never decides whether a terminal is attached.

use std::sync::OnceLock;

/// A callback `(done, total)` called after each file.
pub type ProgressFn<'a> = &'a dyn Fn(usize, usize);

/// A callback that reports nothing.
pub fn no_progress(_done: usize, _total: usize) {}

/// An indicatif bar created on the first report (so the total is known), hidden when stderr is
/// not a terminal (indicatif's own rule).
pub struct ProgressBar {
    label: String,
    bar: OnceLock<indicatif::ProgressBar>,
}

impl ProgressBar {
    /// A bar titled `label`.
    pub fn new(label: impl Into<String>) -> ProgressBar {
        ProgressBar {
            label: label.into(),
            bar: OnceLock::new(),
        }
    }

    /// Report `done` of `total`; pass `&|d, t| bar.report(d, t)` as a [`ProgressFn`].
    pub fn report(&self, done: usize, total: usize) {
        let bar = self.bar.get_or_init(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta} left)")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(self.label.clone());
            b
        });
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if done >= total {
            bar.finish();
        }
    }
}
