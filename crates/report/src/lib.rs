//! segsweep-report: result records and what is drawn from them.
//!
//! The runner measures and saves one [`Record`] per finished configuration
//! (`counts/<hash>.json`); this crate turns records into bytes: `summary.csv`, `per_class.csv`
//! and the charts. It never computes a metric from pixels and never sees a tensor, so every table
//! and chart can be redrawn from saved records alone (`segsweep plot RESULTS_DIR`).
//!
//! Central types: [`Record`] (one configuration's result), [`write_tables`], [`draw_charts`].
//!
//! Design decision: charts are rendered with plotters through a font embedded in the binary
//! (DejaVu Sans via `ab_glyph`), never a system font, so they render identically on a headless
//! machine with no fontconfig.

mod charts;
pub mod overlay;
mod records;
mod tables;

pub use charts::{draw_charts, ChartFiles};
pub use records::{
    label_of, load_record, load_records, load_run, run_order, write_atomic, Counts, Metrics,
    Record, RunRecords, SweptValue,
};
pub use tables::{write_tables, PER_CLASS_CSV, SUMMARY_CSV};

/// Errors of the report crate; each names the file involved. A message holds its cause's text,
/// so no variant returns that cause again from `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    /// A result file (record, checkpoint, table, chart, overlay) could not be written.
    #[error("{path}: cannot write: {cause} (hint: check that the directory is writable and its disk has space; what was written before is kept, so the same command continues from there)")]
    Write { path: String, cause: std::io::Error },
    #[error("{path}: not a valid segsweep record: {msg} (hint: records are written by `segsweep sweep`; delete a corrupt file and re-run the sweep to recompute it)")]
    BadRecord { path: String, msg: String },
    #[error("{path}: cannot write CSV: {msg}")]
    Csv { path: String, msg: String },
    #[error("{path}: cannot draw chart: {msg}")]
    Chart { path: String, msg: String },
    /// An overlay PNG could not be encoded or its pixels do not match its size.
    #[error("{path}: cannot write PNG: {msg}")]
    Png { path: String, msg: String },
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;
