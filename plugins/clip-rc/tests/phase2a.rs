//! `variant = "phase2a"` against the PyTorch reference (random features, tolerance 1e-5),
//! through the registry, on square, non-square and non-overlapping layouts.

// The feature-stage test helpers are shared with the cliptrase plugin rather than copied.
#[path = "../../cliptrase/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use common::{empty_prefix, load, max_abs_diff, NoBackbone};
use segsweep_core::{registry, FeatureCtx, FeatureMap};
// Name the crate, or the linker drops it and its registration (inventory issue #50).
use segsweep_plugin_clip_rc as _;

/// Tolerance on f32 features built from means and normalised Gaussian weights.
const TOL: f32 = 1e-5;

fn raw(pairs: &[(&str, toml::Value)]) -> BTreeMap<String, toml::Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn phase2a_matches_pytorch_reference_through_the_registry() {
    let g = load("clip-rc", "phase2a.safetensors");
    let f = toml::Value::Float;
    let i = toml::Value::Integer;
    let cases = [
        ("default_14x14", raw(&[])),
        (
            "nonsquare_6x10",
            raw(&[
                ("num_regions", i(3)),
                ("region_overlap", f(0.4)),
                ("regional_weight", f(0.7)),
                ("residual_weight", f(0.3)),
                ("distance_sigma", f(0.8)),
            ]),
        ),
        (
            "no_overlap_9x5",
            raw(&[
                ("num_regions", i(2)),
                ("region_overlap", f(0.0)),
                ("regional_weight", f(1.0)),
                ("residual_weight", f(0.0)),
            ]),
        ),
    ];
    let spec = registry().unwrap().get("clip-rc").unwrap();
    let backbone = NoBackbone::new();
    let text = Tensor::zeros((3, 16), DType::F32, &Device::Cpu).unwrap();
    for (name, params) in cases {
        let feats = &g[&format!("{name}.feats")];
        let (b, _, h, w) = feats.dims4().unwrap();
        let prefix = empty_prefix((h, w));
        let crops = Tensor::zeros((b, 3, 16 * h, 16 * w), DType::F32, &Device::Cpu).unwrap();
        let ctx = FeatureCtx {
            backbone: &backbone,
            prefix: &prefix,
            crops: &crops,
            text: &text,
        };
        let plugin = spec.instantiate(&params).unwrap();
        let out = plugin
            .features(
                FeatureMap {
                    feats: feats.clone(),
                    normalised: false,
                },
                &ctx,
            )
            .unwrap();
        assert!(!out.normalised);
        let d = max_abs_diff(&out.feats, &g[&format!("{name}.out")]);
        assert!(d <= TOL, "{name}: max |Δ| = {d}");
    }
}

#[test]
fn only_the_design_notes_variant_exists() {
    let spec = registry().unwrap().get("clip-rc").unwrap();
    let e = spec
        .instantiate(&raw(&[("variant", toml::Value::String("paper".into()))]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("phase2a"), "{e}");
    assert!(spec.doc.contains("TRAINED") || spec.doc.contains("trained"));
}
