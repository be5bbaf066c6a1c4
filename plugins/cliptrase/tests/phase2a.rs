//! `variant = "phase2a"` against the PyTorch reference (random features, float tolerance 1e-5).

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use common::{empty_prefix, load, max_abs_diff, NoBackbone};
use segsweep_core::{registry, FeatureCtx, FeatureMap};
// Name the crate, or the linker drops it and its registration (inventory issue #50).
use segsweep_plugin_cliptrase as _;
use segsweep_plugin_cliptrase::phase2a::recalibrate;

/// Tolerance on f32 features: softmax of cosines / 0.05 over 35 positions.
const TOL: f32 = 1e-5;

#[test]
fn phase2a_matches_pytorch_reference() {
    let g = load("cliptrase", "phase2a.safetensors");
    let feats = &g["feats"];
    assert_eq!(
        feats.dims(),
        &[2, 16, 5, 7],
        "non-square 5×7 grid, batch of 2"
    );
    for (key, t, s) in [("out_default", 0.05, 0.5), ("out_t0p2_s0p8", 0.2, 0.8)] {
        let out = recalibrate(feats, t, s).unwrap();
        let d = max_abs_diff(&out, &g[key]);
        assert!(d <= TOL, "{key}: max |Δ| = {d}");
    }
}

#[test]
fn registered_plugin_runs_phase2a_with_overrides() {
    let g = load("cliptrase", "phase2a.safetensors");
    let spec = registry().unwrap().get("cliptrase").unwrap();
    let raw: BTreeMap<String, toml::Value> = [
        (
            "correlation_temperature".to_string(),
            toml::Value::Float(0.2),
        ),
        (
            "recalibration_strength".to_string(),
            toml::Value::Float(0.8),
        ),
    ]
    .into_iter()
    .collect();
    let plugin = spec.instantiate(&raw).unwrap();
    let backbone = NoBackbone::new();
    let prefix = empty_prefix((5, 7));
    let crops = Tensor::zeros((2, 3, 80, 112), DType::F32, &Device::Cpu).unwrap();
    let text = Tensor::zeros((3, 16), DType::F32, &Device::Cpu).unwrap();
    let ctx = FeatureCtx {
        backbone: &backbone,
        prefix: &prefix,
        crops: &crops,
        text: &text,
    };
    let out = plugin
        .features(
            FeatureMap {
                feats: g["feats"].clone(),
                normalised: false,
            },
            &ctx,
        )
        .unwrap();
    assert!(
        !out.normalised,
        "the blend of unit vectors is not unit; the head must normalise"
    );
    let d = max_abs_diff(&out.feats, &g["out_t0p2_s0p8"]);
    assert!(d <= TOL, "max |Δ| = {d}");
}

#[test]
fn unknown_keys_and_ranges_are_rejected_before_building() {
    let spec = registry().unwrap().get("cliptrase").unwrap();
    let bad = |k: &str, v: toml::Value| {
        let raw: BTreeMap<String, toml::Value> = [(k.to_string(), v)].into_iter().collect();
        spec.instantiate(&raw)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(bad("recalibration_strength", toml::Value::Float(1.5)).contains("out of range"));
    assert!(bad("temperature", toml::Value::Float(0.1)).contains("correlation_temperature"));
    assert!(bad("variant", toml::Value::String("cliptrase".into())).contains("phase2a"));
}

#[test]
fn keys_of_the_other_variant_are_rejected() {
    let spec = registry().unwrap().get("cliptrase").unwrap();
    let build = |pairs: &[(&str, toml::Value)]| {
        let raw: BTreeMap<String, toml::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        spec.instantiate(&raw).err().map(|e| e.to_string())
    };
    let paper = toml::Value::String("paper".into());
    let e = build(&[
        ("variant", paper.clone()),
        ("correlation_temperature", toml::Value::Float(0.1)),
    ]);
    assert!(e.unwrap_or_default().contains("phase2a"));
    let e = build(&[("eps", toml::Value::Float(0.7))]);
    assert!(e
        .unwrap_or_default()
        .contains("only used by variant = \"paper\""));
    let e = build(&[("vote", toml::Value::String("majority".into()))]);
    assert!(e.unwrap_or_default().contains("paper"));
    assert_eq!(
        build(&[("variant", paper), ("eps", toml::Value::Float(0.7))]),
        None
    );
}
