//! Charts drawn from records: PNG and SVG of each, text in an embedded font.
//!
//! One chart kind per function; shared style constants; every drawing call returns `Result`.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::records::{write_atomic, Record};
use crate::{ReportError, Result};

const FONT: &str = "sans-serif";
const TITLE_PX: u32 = 22;
const LABEL_PX: u32 = 15;
const SMALL_PX: u32 = 12;
const CHAR_PX: u32 = 8; // generous average advance of DejaVu Sans at LABEL_PX
const PERSON: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
const OVERALL: RGBColor = RGBColor(0x1b, 0x9e, 0x77);
const SERIES: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// Colour of series `i`: the 8 base colours, then darker and lighter shades of them, so up
/// to 24 series are told apart (the cycle repeats after that).
fn series_color(i: usize) -> RGBColor {
    let RGBColor(r, g, b) = SERIES[i % SERIES.len()];
    let mix = |c: u8, to: f64, t: f64| (f64::from(c) * (1.0 - t) + to * t).round() as u8;
    match (i / SERIES.len()) % 3 {
        0 => RGBColor(r, g, b),
        1 => RGBColor(mix(r, 0.0, 0.45), mix(g, 0.0, 0.45), mix(b, 0.0, 0.45)),
        _ => RGBColor(mix(r, 255.0, 0.5), mix(g, 255.0, 0.5), mix(b, 255.0, 0.5)),
    }
}

type DrawResult = std::result::Result<(), String>;

fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font bytes are 'static and valid TTF; a failure here is a build defect, so the
        // only effect is that text does not render, which the chart tests catch.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// The chart files written for a run.
#[derive(Debug, Clone, Default)]
pub struct ChartFiles {
    pub paths: Vec<PathBuf>,
}

trait Chart {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

fn render<C: Chart>(stem: &Path, chart: &C, out: &mut ChartFiles) -> Result<()> {
    let (w, h) = chart.size();
    let err = |p: &Path, msg: String| ReportError::Chart {
        path: p.display().to_string(),
        msg,
    };
    let png = stem.with_extension("png");
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        chart.draw(&root).map_err(|m| err(&png, m))?;
        root.present().map_err(|x| err(&png, e(x)))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| err(&png, "pixel buffer has the wrong size".into()))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|x| err(&png, e(x)))?;
    write_atomic(&png, bytes.get_ref())?;
    out.paths.push(png);

    let svg = stem.with_extension("svg");
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
        chart.draw(&root).map_err(|m| err(&svg, m))?;
        root.present().map_err(|x| err(&svg, e(x)))?;
    }
    write_atomic(&svg, s.as_bytes())?;
    out.paths.push(svg);
    Ok(())
}

fn caveat(records: &[Record]) -> Option<String> {
    let kinds: Vec<String> = records
        .iter()
        .filter(|r| r.is_not_benchmark())
        .map(|r| format!("weights: {}, data: {}", r.weights, r.data_kind))
        .collect();
    kinds
        .first()
        .map(|k| format!("NOT a benchmark result ({k})"))
}

/// Title on the first line and, for random-weight or synthetic results, the caveat in red on the
/// second, so that neither is ever cut off by a long configuration label.
fn draw_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    note: &Option<String>,
) -> DrawResult {
    root.draw(&Text::new(
        title.to_string(),
        (15, 10),
        (FONT, TITLE_PX).into_font().color(&BLACK),
    ))
    .map_err(e)?;
    if let Some(n) = note {
        root.draw(&Text::new(
            n.clone(),
            (15, 12 + TITLE_PX as i32 + 4),
            (FONT, LABEL_PX)
                .into_font()
                .color(&RGBColor(0xb0, 0x00, 0x20)),
        ))
        .map_err(e)?;
    }
    Ok(())
}

/// Pixels above the plot taken by [`draw_title`] and a legend row.
const HEADER_PX: u32 = 95;

fn text_style(px: u32) -> TextStyle<'static> {
    (FONT, px).into_font().color(&BLACK)
}

/// Draw every chart of a run into `<run_dir>/charts/`. `baseline` names the variant the delta
/// chart compares against (default: `baseline` if present); without such records there is no
/// delta chart, and a stale one is removed, as are parameter charts of keys no longer swept.
pub fn draw_charts(
    run_dir: &Path,
    records: &[Record],
    baseline: Option<&str>,
) -> Result<ChartFiles> {
    register_fonts();
    let dir = run_dir.join("charts");
    std::fs::create_dir_all(&dir).map_err(|x| ReportError::Write {
        path: dir.display().to_string(),
        cause: x,
    })?;
    let mut out = ChartFiles::default();
    if records.is_empty() {
        // Nothing to show: charts of an earlier drawing would show what is no longer there.
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "png" || x == "svg") {
                let _ = std::fs::remove_file(&path);
            }
        }
        return Ok(out);
    }
    let note = caveat(records);
    render(
        &dir.join("overall"),
        &Bars::overall(records, note.clone()),
        &mut out,
    )?;
    for (path, chart) in ParamLines::all(records, note.clone()) {
        let name: String = path
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        render(&dir.join(format!("param_{name}")), &chart, &mut out)?;
    }
    render(
        &dir.join("per_class"),
        &Heatmap::new(records, note.clone()),
        &mut out,
    )?;
    let base = baseline.unwrap_or("baseline");
    match Bars::delta(records, base, note) {
        Some(chart) => render(&dir.join("delta"), &chart, &mut out)?,
        None => {
            // No baseline, no delta chart: a stale one from an earlier drawing would mislead.
            for ext in ["png", "svg"] {
                let _ = std::fs::remove_file(dir.join(format!("delta.{ext}")));
            }
        }
    }
    // Likewise a parameter chart of a key that is no longer swept (an earlier spec run into
    // this run directory).
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_param = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.starts_with("param_") && (n.ends_with(".png") || n.ends_with(".svg"))
        });
        if is_param && !out.paths.contains(&path) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(out)
}

/// Horizontal grouped bars: person IoU and mIoU (or their change) per configuration.
struct Bars {
    title: String,
    note: Option<String>,
    labels: Vec<String>,
    person: Vec<Option<f64>>,
    overall: Vec<Option<f64>>,
    x_desc: String,
}

impl Bars {
    fn overall(records: &[Record], note: Option<String>) -> Bars {
        Bars {
            title: "Person IoU and mIoU per configuration".into(),
            note,
            labels: records.iter().map(Record::label).collect(),
            person: records.iter().map(|r| r.metrics.person_iou_pct).collect(),
            overall: records.iter().map(|r| r.metrics.miou_pct).collect(),
            x_desc: "IoU (%)".into(),
        }
    }

    /// Each non-baseline configuration against the baseline configuration with the same swept
    /// values (grid × variants); `None` if there is no baseline variant.
    fn delta(records: &[Record], baseline: &str, note: Option<String>) -> Option<Bars> {
        let bases: Vec<&Record> = records.iter().filter(|r| r.variant == baseline).collect();
        if bases.is_empty() {
            return None;
        }
        // The baseline row of a configuration: the one whose swept values are all shared by
        // it (a baseline without a plugin has none of that plugin's swept keys).
        let base_of = |r: &Record| -> Option<&Record> {
            bases
                .iter()
                .filter(|b| b.swept.iter().all(|s| r.swept.contains(s)))
                .max_by_key(|b| b.swept.len())
                .copied()
        };
        let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        let mut bars = Bars {
            title: format!("Change against the `{baseline}` variant (percentage points)"),
            note,
            labels: vec![],
            person: vec![],
            overall: vec![],
            x_desc: "Δ IoU (points)".into(),
        };
        for r in records.iter().filter(|r| r.variant != baseline) {
            let Some(b) = base_of(r) else { continue };
            bars.labels.push(r.label());
            bars.person
                .push(diff(r.metrics.person_iou_pct, b.metrics.person_iou_pct));
            bars.overall
                .push(diff(r.metrics.miou_pct, b.metrics.miou_pct));
        }
        (!bars.labels.is_empty()).then_some(bars)
    }

    fn left_margin(&self) -> u32 {
        let longest = self
            .labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(4) as u32;
        (longest * CHAR_PX + 20).clamp(80, 700)
    }
}

impl Chart for Bars {
    fn size(&self) -> (u32, u32) {
        let h = HEADER_PX + 90 + 56 * self.labels.len() as u32;
        (self.left_margin() + 760, h.max(300))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        let n = self.labels.len() as f64;
        let vals = self.person.iter().chain(&self.overall).flatten().copied();
        let (lo, hi) = vals.fold((0f64, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let pad = ((hi - lo) * 0.15).max(1.0);
        let x_range = (if lo < 0.0 { lo - pad } else { 0.0 })..(hi + pad);
        draw_title(root, &self.title, &self.note)?;
        let mut chart = ChartBuilder::on(root)
            .margin(15)
            .margin_top(HEADER_PX)
            .x_label_area_size(45)
            .y_label_area_size(self.left_margin())
            .build_cartesian_2d(x_range, 0f64..n)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(self.x_desc.as_str())
            .axis_desc_style((FONT, LABEL_PX))
            .label_style((FONT, LABEL_PX))
            .draw()
            .map_err(e)?;
        for (i, label) in self.labels.iter().enumerate() {
            // Row i is drawn top-down: y runs from n (top) to 0 (bottom).
            let y = n - i as f64;
            let (px, py) = chart.backend_coord(&(chart.x_range().start, y - 0.5));
            root.draw(&Text::new(
                label.clone(),
                (px - 10, py),
                text_style(LABEL_PX).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(e)?;
            let bars = [
                (self.person[i], y - 0.1, y - 0.45, PERSON),
                (self.overall[i], y - 0.55, y - 0.9, OVERALL),
            ];
            for (v, y0, y1, color) in bars {
                let Some(v) = v else { continue };
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y0), (v, y1)],
                        color.filled(),
                    )))
                    .map_err(e)?;
                let (bx, by) = chart.backend_coord(&(v, (y0 + y1) / 2.0));
                let (anchor, dx) = if v >= 0.0 {
                    (HPos::Left, 4)
                } else {
                    (HPos::Right, -4)
                };
                // A change that rounds to zero is 0.00, not -0.00.
                let shown = format!("{v:.2}");
                let shown = if shown == "-0.00" {
                    "0.00".into()
                } else {
                    shown
                };
                root.draw(&Text::new(
                    shown,
                    (bx + dx, by),
                    text_style(SMALL_PX).pos(Pos::new(anchor, VPos::Center)),
                ))
                .map_err(e)?;
            }
        }
        // Legend, drawn by hand so it never overlaps the bars.
        let (lx, ly) = (self.left_margin() as i32 + 30, HEADER_PX as i32 - 28);
        for (k, (name, color)) in [("person IoU", PERSON), ("mIoU", OVERALL)]
            .iter()
            .enumerate()
        {
            let x = lx + 170 * k as i32;
            root.draw(&Rectangle::new(
                [(x, ly), (x + 14, ly + 14)],
                color.filled(),
            ))
            .map_err(e)?;
            root.draw(&Text::new(*name, (x + 20, ly), text_style(LABEL_PX)))
                .map_err(e)?;
        }
        Ok(())
    }
}

/// One line of a parameter chart: its label and points (x, person IoU, mIoU).
type Series = (String, Vec<(f64, Option<f64>, Option<f64>)>);

/// Person IoU and mIoU against one numeric swept parameter, one line per combination of the
/// other swept values (and variant).
struct ParamLines {
    path: String,
    /// Swept keys that move with `path` (a `[sweep.zip]`): they do not split the series.
    tied: Vec<String>,
    note: Option<String>,
    /// series label → points (x, person, overall)
    series: Vec<Series>,
}

/// The swept keys other than `path` that are set exactly where `path` is and whose values map
/// one-to-one onto `path`'s (keys of one `[sweep.zip]`): splitting the series by them would
/// leave one point per series.
fn tied_keys(records: &[Record], path: &str) -> Vec<String> {
    use std::collections::BTreeMap;
    let value = |r: &Record, p: &str| {
        r.swept
            .iter()
            .find(|s| s.path == p)
            .map(|s| s.value.clone())
    };
    crate::tables::swept_columns(records)
        .into_iter()
        .filter(|q| q != path)
        .filter(|q| {
            let mut fwd: BTreeMap<String, String> = BTreeMap::new();
            let mut back: BTreeMap<String, String> = BTreeMap::new();
            records.iter().all(|r| match (value(r, path), value(r, q)) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    fwd.entry(a.clone()).or_insert_with(|| b.clone()) == &b
                        && back.entry(b).or_insert(a.clone()) == &a
                }
                _ => false,
            })
        })
        .collect()
}

impl ParamLines {
    fn all(records: &[Record], note: Option<String>) -> Vec<(String, ParamLines)> {
        let paths = crate::tables::swept_columns(records);
        let mut out = Vec::new();
        for path in paths {
            let mut distinct: Vec<f64> = records
                .iter()
                .filter_map(|r| r.swept.iter().find(|s| s.path == path)?.number)
                .collect();
            distinct.sort_by(f64::total_cmp);
            distinct.dedup();
            if distinct.len() < 2 {
                continue;
            }
            let tied = tied_keys(records, &path);
            let mut series: Vec<Series> = Vec::new();
            for r in records {
                let Some(x) = r
                    .swept
                    .iter()
                    .find(|s| s.path == path)
                    .and_then(|s| s.number)
                else {
                    continue;
                };
                let mut rest = vec![r.variant.clone()];
                rest.extend(
                    r.swept
                        .iter()
                        .filter(|s| s.path != path && !tied.contains(&s.path))
                        .map(|s| format!("{}={}", s.short_key(&r.swept), s.display())),
                );
                rest.retain(|s| !s.is_empty());
                let name = rest.join(" ");
                let point = (x, r.metrics.person_iou_pct, r.metrics.miou_pct);
                match series.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, pts)) => pts.push(point),
                    None => series.push((name, vec![point])),
                }
            }
            for (_, pts) in &mut series {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            out.push((
                path.clone(),
                ParamLines {
                    path,
                    tied,
                    note: note.clone(),
                    series,
                },
            ));
        }
        out
    }
}

impl Chart for ParamLines {
    fn size(&self) -> (u32, u32) {
        (1000, 560 + 22 * self.series.len() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        let legend_h = 30 + 22 * self.series.len() as u32;
        let (plot, legend) = root.split_vertically(root.dim_in_pixel().1 - legend_h);
        let xs = self.series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
        let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let ys = self
            .series
            .iter()
            .flat_map(|(_, p)| p.iter().flat_map(|q| [q.1, q.2]))
            .flatten();
        let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
        let (y0, y1) = if y0 > y1 { (0.0, 1.0) } else { (y0, y1) };
        let ypad = ((y1 - y0) * 0.1).max(0.5);
        let xpad = (x1 - x0) * 0.05;
        draw_title(root, &format!("IoU against {}", self.path), &self.note)?;
        let mut chart = ChartBuilder::on(&plot)
            .margin(20)
            .margin_top(HEADER_PX - 20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x0 - xpad)..(x1 + xpad),
                (y0 - ypad).max(-100.0)..(y1 + ypad),
            )
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(if self.tied.is_empty() {
                self.path.clone()
            } else {
                format!("{} (with {})", self.path, self.tied.join(", "))
            })
            .y_desc("IoU (%)")
            .axis_desc_style((FONT, LABEL_PX))
            .label_style((FONT, LABEL_PX))
            .draw()
            .map_err(e)?;
        for (i, (_, pts)) in self.series.iter().enumerate() {
            let c = series_color(i);
            let overall: Vec<(f64, f64)> = pts.iter().filter_map(|p| Some((p.0, p.2?))).collect();
            let person: Vec<(f64, f64)> = pts.iter().filter_map(|p| Some((p.0, p.1?))).collect();
            chart
                .draw_series(LineSeries::new(overall.clone(), c.stroke_width(3)))
                .map_err(e)?;
            chart
                .draw_series(overall.iter().map(|p| Circle::new(*p, 5, c.filled())))
                .map_err(e)?;
            chart
                .draw_series(LineSeries::new(person.clone(), c.stroke_width(1)))
                .map_err(e)?;
            chart
                .draw_series(
                    person
                        .iter()
                        .map(|p| TriangleMarker::new(*p, 6, c.filled())),
                )
                .map_err(e)?;
        }
        legend
            .draw(&Text::new(
                "● thick line: mIoU    ▲ thin line: person IoU",
                (20, 5),
                text_style(LABEL_PX),
            ))
            .map_err(e)?;
        for (i, (name, _)) in self.series.iter().enumerate() {
            let c = series_color(i);
            let y = 28 + 22 * i as i32;
            legend
                .draw(&Rectangle::new([(20, y), (34, y + 14)], c.filled()))
                .map_err(e)?;
            legend
                .draw(&Text::new(name.clone(), (42, y), text_style(LABEL_PX)))
                .map_err(e)?;
        }
        Ok(())
    }
}

/// Per-class IoU across configurations: classes as rows, configurations as columns.
struct Heatmap {
    note: Option<String>,
    classes: Vec<String>,
    configs: Vec<String>,
    /// values[config][class]
    values: Vec<Vec<Option<f64>>>,
}

const CELL_W: u32 = 56;
const CELL_H: u32 = 20;

impl Heatmap {
    fn new(records: &[Record], note: Option<String>) -> Heatmap {
        let classes = records
            .iter()
            .max_by_key(|r| r.class_names.len())
            .map(|r| r.class_names.clone())
            .unwrap_or_default();
        Heatmap {
            note,
            classes,
            configs: records.iter().map(Record::label).collect(),
            values: records
                .iter()
                .map(|r| r.metrics.per_class_iou_pct.clone())
                .collect(),
        }
    }

    fn left(&self) -> u32 {
        let longest = self
            .classes
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(4) as u32;
        (longest * CHAR_PX + 30).clamp(100, 400)
    }

    fn key_h(&self) -> u32 {
        30 + 20 * self.configs.len() as u32
    }
}

fn heat_color(v: f64) -> RGBColor {
    // Light yellow (0 %) to dark blue (100 %), perceptually ordered and readable with black or
    // white text.
    let t = (v / 100.0).clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(255.0, 8.0), lerp(247.0, 48.0), lerp(188.0, 107.0))
}

impl Chart for Heatmap {
    fn size(&self) -> (u32, u32) {
        let w = self.left() + CELL_W * self.configs.len() as u32 + 40;
        let h = HEADER_PX + 40 + CELL_H * self.classes.len() as u32 + self.key_h();
        (w.max(900), h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        draw_title(root, "Per-class IoU (%)", &self.note)?;
        let (x0, y0) = (self.left() as i32, HEADER_PX as i32 + 10);
        for (j, _) in self.configs.iter().enumerate() {
            let x = x0 + (CELL_W as i32) * j as i32 + CELL_W as i32 / 2;
            root.draw(&Text::new(
                format!("#{}", j + 1),
                (x, y0 - 8),
                text_style(LABEL_PX).pos(Pos::new(HPos::Center, VPos::Bottom)),
            ))
            .map_err(e)?;
        }
        for (i, class) in self.classes.iter().enumerate() {
            let y = y0 + (CELL_H as i32) * i as i32;
            root.draw(&Text::new(
                class.clone(),
                (x0 - 8, y + CELL_H as i32 / 2),
                text_style(SMALL_PX).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(e)?;
            for (j, vals) in self.values.iter().enumerate() {
                let x = x0 + (CELL_W as i32) * j as i32;
                let v = vals.get(i).copied().flatten();
                let fill = v.map(heat_color).unwrap_or(RGBColor(230, 230, 230));
                root.draw(&Rectangle::new(
                    [(x, y), (x + CELL_W as i32 - 1, y + CELL_H as i32 - 1)],
                    fill.filled(),
                ))
                .map_err(e)?;
                let txt = v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into());
                let color = if v.is_some_and(|v| v > 55.0) {
                    WHITE
                } else {
                    BLACK
                };
                root.draw(&Text::new(
                    txt,
                    (x + CELL_W as i32 / 2, y + CELL_H as i32 / 2),
                    (FONT, SMALL_PX)
                        .into_font()
                        .color(&color)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))
                .map_err(e)?;
            }
        }
        let ky = y0 + (CELL_H * self.classes.len() as u32) as i32 + 20;
        root.draw(&Text::new(
            "Columns (– = class absent from labels and predictions; cell colour: IoU on a fixed 0–100 % scale, pale to dark):",
            (15, ky),
            text_style(LABEL_PX),
        ))
        .map_err(e)?;
        for (j, c) in self.configs.iter().enumerate() {
            root.draw(&Text::new(
                format!("#{} {c}", j + 1),
                (25, ky + 22 + 20 * j as i32),
                text_style(SMALL_PX + 1),
            ))
            .map_err(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_four_series_get_distinct_colours() {
        let colours: std::collections::HashSet<(u8, u8, u8)> = (0..24)
            .map(|i| {
                let RGBColor(r, g, b) = series_color(i);
                (r, g, b)
            })
            .collect();
        assert_eq!(colours.len(), 24);
    }
}
