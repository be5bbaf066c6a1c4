//! ResCLIP's last block end to end on the tiny random CLIP (`tests/fixtures/tiny-clip`) against
//! the PyTorch reference (`tests/reference/pamr_resclip_reference.py resclip` →
//! `resclip_e2e.safetensors`): a batch of two 224×224 crops and one whole-image 168×248 crop
//! (grid 10×15 with an 8-pixel remainder). Random weights: these numbers say nothing about
//! segmentation quality, only that both implementations compute the same thing.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use segsweep_clip::ClipModel;
use segsweep_core::{registry, AttentionCtx, Backbone, Needs, Refiner, Stage};
use segsweep_plugin_resclip::attention::resclip_block_with_parts;
use segsweep_plugin_resclip::{Mix, PathRounding, ResClip, ResClipConfig, SfrConfig};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

mod common;

fn golden() -> HashMap<String, Tensor> {
    common::golden("resclip_e2e.safetensors")
}

fn model() -> ClipModel {
    ClipModel::load(&format!("{FIX}/tiny-clip"), &Device::Cpu, DType::F32).unwrap()
}

/// The crops: 8×8-pixel blocks of the stored normalised base image, as the script builds them.
fn crops(base: &Tensor) -> Tensor {
    let (_, _, h, w) = base.dims4().unwrap();
    base.upsample_nearest2d(h * 8, w * 8).unwrap()
}

fn cfg(rcs: Option<(f64, f64)>, sfr: Option<(f64, f64)>, rounding: PathRounding) -> ResClipConfig {
    ResClipConfig {
        sigma: 5.0,
        rcs: rcs.map(|(tau, lambda)| Mix { tau, lambda }),
        sfr: sfr.map(|(tau, lambda)| SfrConfig {
            mix: Mix { tau, lambda },
            temp_thd: 0.3,
            logit_scale: 40.0,
            rounding,
        }),
    }
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let max = |t: &Tensor| {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    max(&(a - b).unwrap()) / max(b)
}

fn labels(t: &Tensor) -> Vec<Vec<u32>> {
    let (b, _, _) = t.dims3().unwrap();
    (0..b).map(|i| common::labels(&t.get(i).unwrap())).collect()
}

fn needs() -> Needs {
    Needs {
        attn_probs: [6, 7, 8, 9].into_iter().collect(),
        ..Needs::default()
    }
}

/// Run the block for `case` ("slide" or "whole") and compare with `golden[key]`; the coarse
/// patch labels must agree exactly where SFR is on.
fn check(model: &ClipModel, g: &HashMap<String, Tensor>, case: &str, key: &str, c: ResClipConfig) {
    let crops = crops(&g[&format!("{case}.base")]);
    let prefix = model.prefix(&crops, &needs()).unwrap();
    let d = rel_diff(&prefix.tokens, &g[&format!("{case}.x")]);
    eprintln!("{case}: prefix tokens relative diff {d:.2e}");
    assert!(
        d < 1e-4,
        "{case}: the clip prefix differs from the reference ({d})"
    );
    let text = &g[&format!("{case}.text")];
    let ctx = AttentionCtx {
        backbone: model,
        x: &prefix.tokens,
        grid: prefix.grid,
        prefix: &prefix,
        crops: &crops,
        text,
    };
    let (out, parts) = resclip_block_with_parts(&ctx, &c).unwrap();
    let d = rel_diff(&out, &g[key]);
    eprintln!("{key}: last-block output relative diff {d:.2e}");
    assert!(d < 1e-4, "{key}: relative diff {d}");
    // The reference stores coarse labels exactly for the SFR cases; a missing key must fail
    // rather than skip the comparison.
    let want = g.get(&format!("{key}.labels"));
    if c.sfr.is_some() {
        let want = want.unwrap_or_else(|| panic!("{key}: golden lacks `{key}.labels`"));
        let got: Vec<Vec<u32>> = parts.iter().map(|p| p.patches.clone()).collect();
        assert_eq!(got, labels(want), "{key}: coarse patch labels");
    } else {
        assert!(
            want.is_none(),
            "{key}: golden has labels for a case without SFR"
        );
    }
}

#[test]
fn slide_batch_matches_reference_for_each_switch() {
    let (m, g) = (model(), golden());
    let e = PathRounding::Eager;
    check(
        &m,
        &g,
        "slide",
        "slide.both",
        cfg(Some((2.0, 0.3)), Some((2.2, 0.7)), e),
    );
    check(&m, &g, "slide", "slide.rcs", cfg(Some((2.0, 0.3)), None, e));
    check(&m, &g, "slide", "slide.sfr", cfg(None, Some((2.2, 0.7)), e));
}

#[test]
fn whole_non_square_crop_matches_reference_with_both_roundings() {
    let (m, g) = (model(), golden());
    for (key, r) in [
        ("whole.eager", PathRounding::Eager),
        ("whole.fused", PathRounding::Fused),
    ] {
        check(
            &m,
            &g,
            "whole",
            key,
            cfg(Some((2.0, 0.6)), Some((2.1, 0.6)), r),
        );
    }
    // The two roundings must give different outputs here, or the fused test proves nothing.
    assert!(rel_diff(&g["whole.eager"], &g["whole.fused"]) > 1e-4);
}

#[test]
fn registered_plugin_declares_layers_6_to_9_and_runs() {
    let g = golden();
    let m = model();
    let spec = registry().unwrap().get("resclip").unwrap();
    assert_eq!(spec.stage, Stage::Attention);
    let mut raw = BTreeMap::new();
    raw.insert("temp_thd".to_string(), toml::Value::Float(0.3));
    let plugin = spec.instantiate(&raw).unwrap();
    assert_eq!(plugin.needs(), needs());
    raw.insert("rcs".to_string(), toml::Value::Boolean(false));
    assert_eq!(spec.instantiate(&raw).unwrap().needs(), Needs::default());

    // voc21 preset with temp_thd 0.3 is the "slide.both" configuration.
    let crops = crops(&g["slide.base"]);
    let prefix = m.prefix(&crops, &plugin.needs()).unwrap();
    let ctx = AttentionCtx {
        backbone: &m,
        x: &prefix.tokens,
        grid: prefix.grid,
        prefix: &prefix,
        crops: &crops,
        text: &g["slide.text"],
    };
    let out = plugin.attention(&ctx).unwrap();
    assert!(rel_diff(&out, &g["slide.both"]) < 1e-4);

    // Without the recorded layers, RCS fails with a message that says what to do.
    let bare = m.prefix(&crops, &Needs::default()).unwrap();
    let ctx = AttentionCtx {
        prefix: &bare,
        ..ctx
    };
    let e = ResClip::new(ResClipConfig::preset("voc21").unwrap())
        .attention(&ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer 6") && e.contains("rcs = false"), "{e}");
}
