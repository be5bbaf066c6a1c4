//! Tables and charts from hand-made records.

use segsweep_report::*;

/// A record whose metrics are derived from its counts, as the runner writes them; the person
/// class (1) has `person_hits` of its 8 labelled pixels right, so its IoU is `10 × person_hits`.
fn record(variant: &str, t: f64, person_hits: u64) -> Record {
    let classes = vec!["background".to_string(), "person".into(), "car".into()];
    let counts = segsweep_data::IouCounts {
        intersect: vec![10, person_hits, 0],
        union: vec![20, 10, 3],
        pred: vec![15, person_hits + 2, 3],
        label: vec![15, 8, 0],
        images: 4,
    };
    let m = counts.summary(Some(1));
    Record {
        run_id: "run1".into(),
        config_hash: format!("{variant}-{t}"),
        variant: variant.into(),
        swept: vec![SweptValue {
            path: "cliptrase.correlation_temperature".into(),
            value: format!("{t}"),
            number: Some(t),
        }],
        dataset: "synthetic".into(),
        data_kind: "synthetic".into(),
        images: 4,
        skipped: 0,
        sample_ids: vec!["a".into(), "b".into()],
        class_names: classes,
        person_class: Some(1),
        counts: Counts {
            intersect: counts.intersect.clone(),
            union: counts.union.clone(),
            pred: counts.pred.clone(),
            label: counts.label.clone(),
        },
        metrics: Metrics {
            miou_pct: m.miou_pct,
            person_iou_pct: m.person_iou_pct,
            aacc_pct: m.aacc_pct,
            macc_pct: m.macc_pct,
            fwiou_pct: m.fwiou_pct,
            per_class_iou_pct: m.iou_pct,
            per_class_acc_pct: m.acc_pct,
        },
        seconds: 1.5,
        ms_per_image: 375.0,
        model_id: "builtin:tiny-random".into(),
        model_file_hash: "abc".into(),
        device: "cpu".into(),
        dtype: "f32".into(),
        segsweep_version: "0.1.0".into(),
        git_rev: "deadbeef".into(),
        weights: "synthetic".into(),
        kernels: "cpu".into(),
        f16_prefix_images: 0,
    }
}

fn records() -> Vec<Record> {
    vec![
        record("baseline", 0.01, 4),
        record("baseline", 0.1, 4),
        record("+cliptrase", 0.01, 5),
        record("+cliptrase", 0.1, 3),
    ]
}

#[test]
fn summary_has_contract_columns_and_one_row_per_config() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path(), &records()).unwrap();
    let mut rdr = csv::Reader::from_path(dir.path().join(SUMMARY_CSV)).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    for col in [
        "run_id",
        "config_hash",
        "variant",
        "cliptrase.correlation_temperature",
        "dataset",
        "images",
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
        "kernels",
        "f16_prefix_images",
    ] {
        assert!(
            header.iter().any(|h| h == col),
            "missing column {col}: {header:?}"
        );
    }
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 4);
    let miou = header.iter().position(|h| h == "miou_pct").unwrap();
    // (50 + 50 + 0) / 3: background 10/20, person 5/10, car 0/3.
    assert_eq!(&rows[2][miou], "33.3333");

    let per_class = std::fs::read_to_string(dir.path().join(PER_CLASS_CSV)).unwrap();
    assert_eq!(per_class.lines().count(), 1 + 4 * 3);
    assert!(per_class.lines().next().unwrap().contains("iou_pct"));
}

#[test]
fn every_chart_is_a_valid_nonempty_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let files = draw_charts(dir.path(), &records(), None).unwrap();
    if let Ok(keep) = std::env::var("SEGSWEEP_KEEP_CHARTS") {
        for p in &files.paths {
            std::fs::copy(p, std::path::Path::new(&keep).join(p.file_name().unwrap())).unwrap();
        }
    }
    let names: Vec<String> = files
        .paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for stem in [
        "overall",
        "per_class",
        "delta",
        "param_cliptrase_correlation_temperature",
    ] {
        assert!(names.contains(&format!("{stem}.png")), "{names:?}");
        assert!(names.contains(&format!("{stem}.svg")), "{names:?}");
    }
    for p in &files.paths {
        let bytes = std::fs::read(p).unwrap();
        if p.extension().unwrap() == "png" {
            let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
            // Non-empty: a real chart has many non-white pixels (bars, text).
            let ink = img.pixels().filter(|px| px.0 != [255, 255, 255]).count();
            assert!(ink > 2000, "{} looks empty ({ink} ink pixels)", p.display());
        } else {
            let s = String::from_utf8(bytes).unwrap();
            assert!(
                s.starts_with("<svg") && s.contains("<text"),
                "{}",
                p.display()
            );
            assert!(
                s.contains("NOT a benchmark result"),
                "synthetic caveat missing"
            );
        }
    }
}

#[test]
fn records_round_trip_through_json_and_load_in_run_order() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records();
    for r in &recs {
        let path = dir
            .path()
            .join("counts")
            .join(format!("{}.json", r.config_hash));
        write_atomic(&path, serde_json::to_string(r).unwrap().as_bytes()).unwrap();
    }
    let order: Vec<&str> = recs.iter().map(|r| r.config_hash.as_str()).collect();
    std::fs::write(dir.path().join("order.txt"), order.join("\n")).unwrap();
    let loaded = load_records(dir.path()).unwrap();
    assert_eq!(loaded, recs);
}

#[test]
fn corrupt_record_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("counts")).unwrap();
    std::fs::write(dir.path().join("counts/bad.json"), "{not json").unwrap();
    let msg = load_records(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("bad.json") && msg.contains("hint"), "{msg}");
}

/// Results are read by other users and tools: `write_atomic` must give a file the mode a plain
/// `File::create` gives (0666 less the umask), not a temp file's private 0600.
#[cfg(unix)]
#[test]
fn atomic_writes_get_the_mode_of_a_plain_create() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.csv");
    std::fs::File::create(&plain).unwrap();
    let atomic = dir.path().join("summary.csv");
    write_atomic(&atomic, b"a,b\n").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&atomic),
        mode(&plain),
        "{:o} vs {:o}",
        mode(&atomic),
        mode(&plain)
    );
    assert_eq!(std::fs::read(&atomic).unwrap(), b"a,b\n");
}

fn write_records(dir: &std::path::Path, recs: &[Record]) {
    for r in recs {
        let path = dir.join("counts").join(format!("{}.json", r.config_hash));
        write_atomic(&path, serde_json::to_string(r).unwrap().as_bytes()).unwrap();
    }
}

/// `plot` redraws from records alone, so a record whose counts contradict themselves, its class
/// list or its metrics, or a record under another configuration's file name, is an error naming
/// the file.
#[test]
fn inconsistent_records_are_rejected_by_name() {
    type Damage = fn(&mut Record);
    let cases: [(&str, Damage); 8] = [
        ("metrics.miou_pct is 99 but", |r| {
            r.metrics.miou_pct = Some(99.0)
        }),
        ("metrics.per_class_iou_pct[1]", |r| {
            r.metrics.per_class_iou_pct[1] = Some(16.44)
        }),
        ("person_class 7", |r| r.person_class = Some(7)),
        ("counts.union has 2 entries", |r| r.counts.union.truncate(2)),
        ("inconsistent", |r| r.counts.intersect[1] = 9),
        ("inconsistent", |r| r.counts.union[0] += 1),
        ("counts.intersect has 3 entries for 2", |r| {
            r.class_names.pop();
        }),
        ("f16_prefix_images 5 is more than its 4 images", |r| {
            r.f16_prefix_images = 5
        }),
    ];
    for (want, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut recs = records();
        damage(&mut recs[2]);
        write_records(dir.path(), &recs);
        let msg = load_records(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("+cliptrase-0.01.json") && msg.contains(want),
            "{want}: {msg}"
        );
    }
    // A record copied under another configuration's name.
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), &records());
    let copy = dir.path().join("counts/+cliptrase-0.1.json");
    std::fs::copy(dir.path().join("counts/baseline-0.01.json"), &copy).unwrap();
    let msg = load_records(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("+cliptrase-0.1.json") && msg.contains("holds configuration baseline-0.01"),
        "{msg}"
    );
}

#[test]
fn per_class_rows_carry_the_weights_and_data_labels() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path(), &records()).unwrap();
    let mut rd = csv::Reader::from_path(dir.path().join(PER_CLASS_CSV)).unwrap();
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    // `weights` and `data_kind` follow the counts; the swept parameters come last.
    assert_eq!(
        &header[11..],
        ["weights", "data_kind", "cliptrase.correlation_temperature"]
    );
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4 * 3);
    assert!(rows
        .iter()
        .all(|r| &r[11] == "synthetic" && &r[12] == "synthetic" && !r[13].is_empty()));
}

#[test]
fn a_stale_delta_chart_is_removed_when_there_is_no_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let files = draw_charts(dir.path(), &records(), None).unwrap();
    let delta = dir.path().join("charts/delta.png");
    assert!(files.paths.contains(&delta) && delta.exists());
    let no_base: Vec<Record> = records()
        .into_iter()
        .filter(|r| r.variant != "baseline")
        .collect();
    let files = draw_charts(dir.path(), &no_base, None).unwrap();
    assert!(!files.paths.contains(&delta));
    assert!(!delta.exists() && !dir.path().join("charts/delta.svg").exists());
}

/// A configuration with no variant and nothing swept is `default` everywhere (as `validate`
/// and the log call it), not its hash.
#[test]
fn a_record_without_variant_or_swept_values_is_labelled_default() {
    let mut r = record("", 0.5, 4);
    assert_eq!(r.label(), "correlation_temperature=0.5");
    r.swept.clear();
    assert_eq!(r.label(), "default");
    r.variant = "baseline".into();
    assert_eq!(r.label(), "baseline");
}

/// String values appear without their TOML quotes (`slide`, not `"slide"`) in labels and
/// summary.csv; two swept parameters with one last name keep their paths apart.
#[test]
fn swept_strings_lose_their_quotes_and_same_named_parameters_keep_their_paths() {
    let sv = |path: &str, value: &str| SweptValue {
        path: path.into(),
        value: value.into(),
        number: value.parse().ok(),
    };
    assert_eq!(sv("inference.mode", "\"slide\"").display(), "slide");
    assert_eq!(sv("x.s", r#""a \"q\"""#).display(), "a \"q\"");
    assert_eq!(sv("x.v", "[8, 16]").display(), "[8, 16]");
    assert_eq!(sv("x.t", "0.05").display(), "0.05");
    let mut r = record("v", 0.5, 4);
    r.swept = vec![
        sv("a.alpha", "0.1"),
        sv("b.alpha", "0.2"),
        sv("inference.mode", "\"whole\""),
    ];
    assert_eq!(r.label(), "v a.alpha=0.1 b.alpha=0.2 mode=whole");
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path(), &[r]).unwrap();
    let mut rd = csv::Reader::from_path(dir.path().join("summary.csv")).unwrap();
    let h = rd.headers().unwrap().clone();
    let row = rd.records().next().unwrap().unwrap();
    let col = h.iter().position(|c| c == "inference.mode").unwrap();
    assert_eq!(&row[col], "whole");
    // per_class.csv carries the swept values too, after its own columns.
    let mut rd = csv::Reader::from_path(dir.path().join("per_class.csv")).unwrap();
    let h = rd.headers().unwrap().clone();
    assert_eq!(
        h.iter().collect::<Vec<_>>()[11..],
        [
            "weights",
            "data_kind",
            "a.alpha",
            "b.alpha",
            "inference.mode"
        ]
    );
    for row in rd.records() {
        let row = row.unwrap();
        assert_eq!((&row[13], &row[15]), ("0.1", "whole"));
    }
}

/// Keys of one zip move together: a parameter chart does not split its series by its zip
/// partner (which left one point per series), and its axis names the partner.
#[test]
fn a_parameter_chart_keeps_zip_partners_in_one_series() {
    let sv = |path: &str, v: f64| SweptValue {
        path: path.into(),
        value: format!("{v:?}"),
        number: Some(v),
    };
    let records: Vec<Record> = ["baseline", "+x"]
        .iter()
        .flat_map(|variant| {
            [(40.0, 0.0), (50.0, 0.1), (60.0, 0.2)].map(|(scale, thd)| {
                let mut r = record(variant, 0.5, 4);
                r.config_hash = format!("{variant}-{scale}");
                r.swept = vec![
                    sv("inference.logit_scale", scale),
                    sv("inference.prob_thd", thd),
                ];
                r
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let files = draw_charts(dir.path(), &records, None).unwrap();
    let path = files
        .paths
        .iter()
        .find(|p| p.ends_with("param_inference_logit_scale.svg"))
        .unwrap();
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(
        svg.contains("inference.logit_scale (with inference.prob_thd)"),
        "axis"
    );
    assert!(
        !svg.contains("prob_thd=0"),
        "the zip partner split the series"
    );
    // One series per variant: two legend entries.
    assert_eq!(
        (svg.matches("baseline").count(), svg.matches("+x").count()),
        (1, 1),
        "legend: {svg}"
    );
}

/// Redrawing after a spec change removes the parameter charts of keys no longer swept.
#[test]
fn a_redraw_removes_parameter_charts_of_keys_no_longer_swept() {
    let dir = tempfile::tempdir().unwrap();
    let before = draw_charts(dir.path(), &records(), None).unwrap();
    let param = before
        .paths
        .iter()
        .find(|p| {
            p.to_string_lossy()
                .contains("param_cliptrase_correlation_temperature")
        })
        .unwrap()
        .clone();
    assert!(param.is_file());
    let mut unswept = records();
    for r in &mut unswept {
        r.swept.clear();
    }
    unswept.truncate(1);
    draw_charts(dir.path(), &unswept, None).unwrap();
    assert!(!param.exists(), "a stale parameter chart survived");
    assert!(dir.path().join("charts/overall.png").is_file());
}

/// Drawing no records leaves no chart of an earlier drawing behind.
#[test]
fn drawing_no_records_removes_earlier_charts() {
    let dir = tempfile::tempdir().unwrap();
    let before = draw_charts(dir.path(), &records(), None).unwrap();
    assert!(!before.paths.is_empty());
    let after = draw_charts(dir.path(), &[], None).unwrap();
    assert!(after.paths.is_empty());
    assert!(before.paths.iter().all(|p| !p.exists()));
}
