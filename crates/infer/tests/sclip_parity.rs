//! SCLIP parity with PyTorch on the tiny random CLIP fixture, stage by stage.
//!
//! Goldens: `tests/reference/sclip_reference.py` (SCLIP's pipeline in torch on transformers'
//! `CLIPModel`), three cases on two non-square synthetic images: 224/112 slide with the
//! 80-template classifier and prob_thd 0, slide on a portrait image with logit_scale 65,
//! prob_thd 0.45 and an area_thd that removes a class, and whole-image mode (interpolated
//! position embeddings, logits upsampled straight to the original size).
//! Tolerance: max |ours − torch| ≤ 1e-4 · max |torch| per stage (f32); labels equal.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use segsweep_clip::{build_classifier, parse_class_names, ClipModel, IMAGENET_TEMPLATES};
use segsweep_core::{Classifier, InferConfig, Mode, Needs, RgbImage};
use segsweep_infer::{finish_traced, prepare};
use segsweep_kernels::testing::max_rel;

const REL_TOL: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn goldens() -> HashMap<String, Tensor> {
    let path = root().join("tests/fixtures/sclip/goldens.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with tests/reference/sclip_reference.py)",
            path.display()
        )
    })
}

fn meta() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/sclip/goldens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model() -> ClipModel {
    ClipModel::load(
        root().join("tests/fixtures/tiny-clip").to_str().unwrap(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap()
}

/// max |a − b| / max |b|, after checking the shapes agree.
fn rel_err(what: &str, ours: &Tensor, torch: &Tensor) -> f32 {
    assert_eq!(ours.dims(), torch.dims(), "{what}: shape");
    assert!(torch.elem_count() > 0, "{what}: empty");
    let err = max_rel(ours, torch).unwrap();
    eprintln!("{what:28} rel err {err:.2e}");
    assert!(
        err <= REL_TOL,
        "{what}: relative error {err:e} > {REL_TOL:e}"
    );
    err
}

#[test]
fn text_classifier_matches_pytorch_80_templates() {
    let g = goldens();
    let names = parse_class_names(
        &std::fs::read_to_string(root().join("tests/fixtures/sclip/classes.txt")).unwrap(),
    );
    let cls = build_classifier(&model(), &names, &IMAGENET_TEMPLATES, None).unwrap();
    let m = meta();
    let qc: Vec<usize> = m["query_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(cls.query_class, qc);
    rel_err("text classifier (Q, E)", &cls.text, &g["text.templates"]);
}

#[test]
fn sclip_pipeline_matches_pytorch_stage_by_stage() {
    let g = goldens();
    let m = meta();
    let bb = model();
    let qc: Vec<usize> = m["query_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let queries: Vec<String> = m["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let step = |i| m["canvas_step"][i].as_u64().unwrap() as usize;
    for case in m["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let img_t = &g[&format!("image.{}", case["image"].as_str().unwrap())];
        let (h, w, _) = img_t.dims3().unwrap();
        let image =
            RgbImage::new(h, w, img_t.flatten_all().unwrap().to_vec1::<u8>().unwrap()).unwrap();
        let classifier = Classifier {
            text: g[&format!("text.{}", case["text"].as_str().unwrap())].clone(),
            query_class: qc.clone(),
            queries: queries.clone(),
            class_names: vec!["sky".into(), "person".into(), "cat".into(), "car".into()],
        };
        let cfg = InferConfig {
            mode: if case["mode"] == "slide" {
                Mode::Slide
            } else {
                Mode::Whole
            },
            short_side: Some(case["short_side"].as_u64().unwrap() as usize),
            logit_scale: case["logit_scale"].as_f64().unwrap() as f32,
            prob_thd: case["prob_thd"].as_f64().unwrap() as f32,
            area_thd: case["area_thd"].as_f64().map(|v| v as f32),
            attention: "sclip".into(),
            batch_size: 2,
            ..InferConfig::default()
        };
        let prepared = prepare(&bb, &image, &cfg, &Needs::default()).unwrap();
        let (seg, trace) = finish_traced(&bb, &prepared, &classifier, &cfg, &[], Some(0)).unwrap();

        let crops = Tensor::cat(&trace.crop_logits, 0).unwrap();
        rel_err(
            &format!("{name}: crop logits"),
            &crops,
            &g[&format!("{name}.crop_logits")],
        );
        // Slide mode stitches the crops on a canvas; whole mode has none. A slide case without
        // a canvas would otherwise skip this stage silently.
        let slide = case["mode"] == "slide";
        assert_eq!(trace.canvas.is_some(), slide, "{name}: canvas in the trace");
        if let Some(canvas) = &trace.canvas {
            let (q, ch, cw) = canvas.dims3().unwrap();
            let rows: Vec<u32> = (0..ch).step_by(step(0)).map(|v| v as u32).collect();
            let cols: Vec<u32> = (0..cw).step_by(step(1)).map(|v| v as u32).collect();
            let sub = canvas
                .index_select(&Tensor::new(rows.as_slice(), &Device::Cpu).unwrap(), 1)
                .unwrap()
                .index_select(&Tensor::new(cols.as_slice(), &Device::Cpu).unwrap(), 2)
                .unwrap();
            assert_eq!(sub.dim(0).unwrap(), q);
            rel_err(
                &format!("{name}: slide canvas"),
                &sub,
                &g[&format!("{name}.canvas_sub")],
            );
        }
        rel_err(
            &format!("{name}: probabilities"),
            &seg.probs,
            &g[&format!("{name}.probs")],
        );
        let ours: Vec<u32> = seg.labels.flatten_all().unwrap().to_vec1().unwrap();
        let torch: Vec<u8> = g[&format!("{name}.labels")]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ours.len(), torch.len(), "{name}: label count");
        assert!(!ours.is_empty(), "{name}: no labels");
        let differ = ours
            .iter()
            .zip(&torch)
            .filter(|(a, b)| **a != **b as u32)
            .count();
        eprintln!(
            "{name:28} labels differ at {differ} of {} pixels",
            ours.len()
        );
        assert_eq!(differ, 0, "{name}: labels");
    }
}
