//! `summary.csv` and `per_class.csv`.
//!
//! The summary has one column per swept parameter, and which parameters are swept depends on the
//! spec, so rows are written as string records behind a fixed header rather than one serde
//! struct (the fixed part of the header is the contract; swept columns follow `variant`).

use std::path::Path;

use crate::records::{write_atomic, Record};
use crate::{ReportError, Result};

pub const SUMMARY_CSV: &str = "summary.csv";
pub const PER_CLASS_CSV: &str = "per_class.csv";

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_default()
}

/// Write `summary.csv` and `per_class.csv` for `records` into `run_dir`, atomically.
pub fn write_tables(run_dir: &Path, records: &[Record]) -> Result<()> {
    write_atomic(&run_dir.join(SUMMARY_CSV), &summary_bytes(records)?)?;
    write_atomic(&run_dir.join(PER_CLASS_CSV), &per_class_bytes(records)?)?;
    Ok(())
}

fn csv_err(file: &str, e: impl std::fmt::Display) -> ReportError {
    ReportError::Csv {
        path: file.to_string(),
        msg: e.to_string(),
    }
}

/// Swept parameter paths across all records, in first-seen order.
pub(crate) fn swept_columns(records: &[Record]) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    for r in records {
        for s in &r.swept {
            if !cols.contains(&s.path) {
                cols.push(s.path.clone());
            }
        }
    }
    cols
}

fn summary_bytes(records: &[Record]) -> Result<Vec<u8>> {
    let cols = swept_columns(records);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = vec!["run_id".into(), "config_hash".into(), "variant".into()];
    header.extend(cols.iter().cloned());
    header.extend(
        [
            "dataset",
            "images",
            "skipped",
            "miou_pct",
            "person_iou_pct",
            "aacc_pct",
            "macc_pct",
            "fwiou_pct",
            "seconds",
            "ms_per_image",
            "model_id",
            "model_file_hash",
            "device",
            "dtype",
            "segsweep_version",
            "git_rev",
            "weights",
            "data_kind",
            "kernels",
            "f16_prefix_images",
        ]
        .map(String::from),
    );
    w.write_record(&header)
        .map_err(|e| csv_err(SUMMARY_CSV, e))?;
    for r in records {
        let mut row = vec![r.run_id.clone(), r.config_hash.clone(), r.variant.clone()];
        for c in &cols {
            row.push(
                r.swept
                    .iter()
                    .find(|s| &s.path == c)
                    .map(|s| s.display())
                    .unwrap_or_default(),
            );
        }
        let m = &r.metrics;
        row.extend([
            r.dataset.clone(),
            r.images.to_string(),
            r.skipped.to_string(),
            fmt_opt(m.miou_pct),
            fmt_opt(m.person_iou_pct),
            fmt_opt(m.aacc_pct),
            fmt_opt(m.macc_pct),
            fmt_opt(m.fwiou_pct),
            format!("{:.3}", r.seconds),
            format!("{:.2}", r.ms_per_image),
            r.model_id.clone(),
            r.model_file_hash.clone(),
            r.device.clone(),
            r.dtype.clone(),
            r.segsweep_version.clone(),
            r.git_rev.clone(),
            r.weights.clone(),
            r.data_kind.clone(),
            r.kernels.clone(),
            r.f16_prefix_images.to_string(),
        ]);
        w.write_record(&row).map_err(|e| csv_err(SUMMARY_CSV, e))?;
    }
    w.into_inner().map_err(|e| csv_err(SUMMARY_CSV, e))
}

/// `per_class.csv`: one row per configuration and class. The swept parameters come last, one
/// column each (as in `summary.csv`, strings without their TOML quotes), so a per-class table
/// can be pivoted by parameter without a join; the columns before them keep their places.
fn per_class_bytes(records: &[Record]) -> Result<Vec<u8>> {
    let cols = swept_columns(records);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "run_id",
        "config_hash",
        "variant",
        "class_id",
        "class_name",
        "iou_pct",
        "acc_pct",
        "intersect_px",
        "union_px",
        "pred_px",
        "label_px",
        // As in summary.csv: real, random-fixture, synthetic (external, mixed for eval).
        "weights",
        // As in summary.csv: benchmark, custom or synthetic.
        "data_kind",
    ]
    .map(String::from)
    .to_vec();
    header.extend(cols.iter().cloned());
    w.write_record(&header)
        .map_err(|e| csv_err(PER_CLASS_CSV, e))?;
    for r in records {
        let swept: Vec<String> = cols
            .iter()
            .map(|c| {
                r.swept
                    .iter()
                    .find(|s| &s.path == c)
                    .map(|s| s.display())
                    .unwrap_or_default()
            })
            .collect();
        for (c, name) in r.class_names.iter().enumerate() {
            let get = |v: &Vec<u64>| v.get(c).copied().unwrap_or(0).to_string();
            let mut row = vec![
                r.run_id.clone(),
                r.config_hash.clone(),
                r.variant.clone(),
                c.to_string(),
                name.clone(),
                fmt_opt(r.metrics.per_class_iou_pct.get(c).copied().flatten()),
                fmt_opt(r.metrics.per_class_acc_pct.get(c).copied().flatten()),
                get(&r.counts.intersect),
                get(&r.counts.union),
                get(&r.counts.pred),
                get(&r.counts.label),
                r.weights.clone(),
                r.data_kind.clone(),
            ];
            row.extend(swept.iter().cloned());
            w.write_record(&row)
                .map_err(|e| csv_err(PER_CLASS_CSV, e))?;
        }
    }
    w.into_inner().map_err(|e| csv_err(PER_CLASS_CSV, e))
}
