//! ResCLIP's steps on random tensors against the PyTorch reference
//! (`tests/reference/pamr_resclip_reference.py resclip` → `resclip_unit.safetensors`).
//! Labels and modes must agree exactly; floats to 1e-4 relative to the largest magnitude.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use segsweep_clip::attention::{gaussian_prior, head_scale, scores};
use segsweep_plugin_resclip::attention::attention_weights;
use segsweep_plugin_resclip::sfr::{
    injected_term, normalise_with_cls, path_tested, sfr_matrix, smooth_rows,
};
use segsweep_plugin_resclip::{Mix, PathRounding};

mod common;
use common::labels;

fn golden() -> HashMap<String, Tensor> {
    common::golden("resclip_unit.safetensors")
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Max |a − b| relative to max |b|; panics above `tol`.
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    eprintln!("{what}: max abs diff {d:.3e} (relative {:.3e})", d / scale);
    assert!(
        d / scale <= tol,
        "{what}: max abs diff {d} vs scale {scale}"
    );
}

#[test]
fn sfr_steps_match_reference_with_several_labels_and_failing_paths() {
    let g = golden();
    let p = f32s(&g["sfr.params"]);
    let (temp_thd, sigma, patch) = (p[0], p[1] as f64, p[2] as usize);
    let grid = (p[3] as usize, p[4] as usize);
    let lambda = p[5] as f64;
    let (q, h, w) = g["sfr.probs"].dims3().unwrap();
    let probs = f32s(&g["sfr.probs"]);
    for (rounding, tested_key, a_key) in [
        (PathRounding::Eager, "sfr.tested_eager", "sfr.a_eager"),
        (PathRounding::Fused, "sfr.tested_fused", "sfr.a_fused"),
    ] {
        let parts = sfr_matrix(&probs, (q, h, w), patch, grid, temp_thd, sigma, rounding).unwrap();
        assert_eq!(parts.pixels, labels(&g["sfr.pixels"]), "pixel labels");
        assert_eq!(parts.patches, labels(&g["sfr.patches"]), "patch modes");
        // The path test is discrete: the decayed entries must be the same entries.
        let want = f32s(&g[tested_key]);
        let n_decayed = want.iter().filter(|&&v| v > 0.0 && v < 1.0).count();
        assert!(n_decayed > 0, "the fixture must contain failing path pairs");
        for (i, (a, b)) in parts.tested.iter().zip(&want).enumerate() {
            assert_eq!(*a == 1.0, *b == 1.0, "{rounding:?}: pair {i} validity");
            assert!((a - b).abs() <= 1e-6, "{rounding:?}: pair {i}: {a} vs {b}");
        }
        assert_close(a_key, &parts.a_sfr, &f32s(&g[a_key]), 1e-4);
        if rounding == PathRounding::Eager {
            let inj = injected_term(&parts.a_sfr, lambda);
            assert_close("injected", &inj, &f32s(&g["sfr.injected_eager"]), 1e-3);
        }
    }
    let distinct: std::collections::BTreeSet<u32> = labels(&g["sfr.patches"]).into_iter().collect();
    assert!(distinct.len() >= 3, "several patch labels: {distinct:?}");
    assert_ne!(
        f32s(&g["sfr.tested_eager"]),
        f32s(&g["sfr.tested_fused"]),
        "the fixture must tell eager from fused rounding"
    );
}

#[test]
fn smoothing_with_a_short_kernel_matches_reference() {
    let g = golden();
    let tested = f32s(&g["sfr.tested_eager"]);
    let n = (tested.len() as f64).sqrt() as usize;
    let a = normalise_with_cls(&smooth_rows(&tested, n, 1.5), n);
    assert_close("smoothing sigma 1.5", &a, &f32s(&g["sfr.a_sigma1_5"]), 1e-4);
}

#[test]
fn attention_weights_match_reference_for_each_switch() {
    let g = golden();
    let k = &g["attn.k"];
    let s_kk = scores(k, k, head_scale(k).unwrap()).unwrap();
    // The clip crate's closed-form prior equals NACLIP's window construction.
    let omega = gaussian_prior((3, 4), 1.5, &Device::Cpu).unwrap();
    assert_close("omega", &f32s(&omega), &f32s(&g["attn.omega"]), 1e-5);
    // A_sfr from the label grids, through the Rust steps.
    let grids = labels(&g["attn.labels"]);
    let mut terms = Vec::new();
    let mut mats = Vec::new();
    for crop in grids.chunks(12) {
        let m = path_tested(crop, (3, 4), PathRounding::Eager);
        let a = normalise_with_cls(&smooth_rows(&m, 12, 1.5), 12);
        terms.extend(injected_term(&a, 0.6));
        mats.extend(a);
    }
    assert_close("a_sfr", &mats, &f32s(&g["attn.a_sfr"]), 1e-4);
    let term = Tensor::from_vec(terms, (2, 13, 13), &Device::Cpu).unwrap();
    let rcs = Mix {
        tau: 2.0,
        lambda: 0.3,
    };
    let sfr = Mix {
        tau: 2.2,
        lambda: 0.6,
    };
    let a_rcs = &g["attn.a_rcs"];
    for (key, s, r) in [
        ("attn.none", None, None),
        ("attn.rcs", None, Some((a_rcs, rcs))),
        ("attn.sfr", Some((&term, sfr)), None),
        ("attn.both", Some((&term, sfr)), Some((a_rcs, rcs))),
    ] {
        let w = attention_weights(&s_kk, &omega, s, r).unwrap();
        assert_close(key, &f32s(&w), &f32s(&g[key]), 1e-4);
    }
}
