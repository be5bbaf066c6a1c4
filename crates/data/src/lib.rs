//! segsweep-data: the datasets segsweep evaluates on, the tools that prepare them, and the
//! benchmark metric.
//!
//! It reads the eight standard open-vocabulary segmentation benchmarks in MMSegmentation's
//! directory layouts ([`registry::DATASETS`]), custom directories ([`CustomConfig`]) and a
//! seeded synthetic set ([`synthetic_dataset`]), all as one [`Dataset`] type that lists samples
//! in split order and loads [`Sample`]s (an [`RgbImage`](segsweep_core::RgbImage) and a
//! [`LabelMap`]). It converts official releases into those layouts ([`prepare()`]), checks a
//! tree ([`check()`]), and scores label maps with mmseg's `IoUMetric` ([`IouCounts`],
//! [`IouSummary`], [`eval_dir`]).
//!
//! It must not run models or touch tensors: the metric works on plain `u32` ids, so reports and
//! the `eval` command can score predictions from any tool without candle.
//!
//! Design decision: the metric state is four per-class `u64` histograms summed over images
//! ([`IouCounts`]), never a running mIoU. mmseg defines mIoU on dataset-level sums, and integer
//! sums make shards and resumed runs add up bit-exactly.

pub mod archive;
pub mod check;
pub mod classes;
pub mod context;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod io;
pub mod metric;
pub mod prepare;
pub mod progress;
pub mod registry;
pub mod subset;
pub mod synthetic;

pub use check::{check, check_dataset, CheckReport, SizeMismatch};
pub use classes::ClassNames;
pub use dataset::{CustomConfig, Dataset, DatasetInfo, Layout, Sample, SampleRef};
pub use error::{DataError, Result};
pub use eval::{eval_dir, EvalOptions, EvalReport, GtSource, SkippedFile};
pub use io::{
    load_label, load_rgb, png_text, save_label_png, save_label_png_with, save_rgb_png, LabelMap,
    IGNORE_INDEX, PREDICTION_MODEL_KEY, PREDICTION_WEIGHTS_KEY,
};
pub use metric::{IouCounts, IouSummary};
pub use prepare::{prepare, PrepareReport};
pub use progress::{no_progress, ProgressBar, ProgressFn};
pub use registry::{
    dataset_names, dataset_spec, DatasetDefaults, DatasetSpec, PrepareKind, DATASETS,
};
pub use subset::{SplitMix64, Subset};
pub use synthetic::{synthetic_classes, synthetic_dataset, synthetic_info, write_synthetic};
