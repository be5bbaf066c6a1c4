//! The metric against goldens from `tests/reference/metric_goldens.py` (mmseg's formula with
//! torch.histc), to 1e-9.

use segsweep_data::IouCounts;
use serde_json::Value;

fn goldens() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/metric/goldens.json"
    );
    let text = std::fs::read_to_string(path)
        .expect("goldens.json (run tests/reference/metric_goldens.py)");
    serde_json::from_str(&text).expect("valid JSON")
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn close(got: Option<f64>, want: &Value, what: &str) {
    match (got, want.as_f64()) {
        (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{what}: {g} vs {w}"),
        (None, None) => {}
        (g, w) => panic!("{what}: {g:?} vs {w:?}"),
    }
}

#[test]
fn metric_matches_mmseg_goldens() {
    let g = goldens();
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let n = case["n_classes"].as_u64().unwrap() as usize;
        let ignore = case["ignore_index"].as_u64().unwrap() as u32;
        let mut counts = IouCounts::new(n);
        for im in case["images"].as_array().unwrap() {
            let (h, w) = (
                im["h"].as_u64().unwrap() as usize,
                im["w"].as_u64().unwrap() as usize,
            );
            let (pred, gt) = (u32s(&im["pred"]), u32s(&im["gt"]));
            assert_eq!(pred.len(), h * w);
            counts.add(&pred, &gt, ignore).unwrap();
        }
        let e = &case["expected"];
        assert_eq!(counts.intersect, u64s(&e["intersect"]), "{name}");
        assert_eq!(counts.union, u64s(&e["union"]), "{name}");
        assert_eq!(counts.pred, u64s(&e["pred"]), "{name}");
        assert_eq!(counts.label, u64s(&e["label"]), "{name}");
        let s = counts.summary(None);
        close(s.miou_pct, &e["miou_pct"], name);
        close(s.aacc_pct, &e["aacc_pct"], name);
        close(s.macc_pct, &e["macc_pct"], name);
        close(s.fwiou_pct, &e["fwiou_pct"], name);
        for c in 0..n {
            close(s.iou_pct[c], &e["iou_pct"][c], &format!("{name} iou[{c}]"));
            close(s.acc_pct[c], &e["acc_pct"][c], &format!("{name} acc[{c}]"));
        }
        // mmseg's float32 result, rounded to 2 decimals, agrees with ours rounded the same way.
        let ours = (s.miou_pct.unwrap() * 100.0).round() / 100.0;
        let theirs = e["mmseg_miou_rounded"].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() < 1e-4,
            "{name}: {ours} vs mmseg {theirs}"
        );
    }
}
