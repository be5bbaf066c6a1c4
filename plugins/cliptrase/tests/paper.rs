//! `variant = "paper"` against the PyTorch/sklearn/scipy reference on the tiny random CLIP
//! fixture (`tests/fixtures/tiny-clip`; goldens from `tests/reference/cliptrase_cliprc_reference.py`).
//!
//! Tolerances: the qq+kk+vv block output 1e-4 (the clip crate's parity bound), C' 1e-5,
//! features and logits 1e-5. Discrete steps are exact: DBSCAN labels, the cluster-region argmax
//! and the majority winners, both on the golden C' and on the C' computed here.
//! Crop a is the native 224×224 crop (14×14 grid), crop b a non-square 176×256 whole image
//! (11×16 grid, interpolated positions). Random weights: the numbers mean nothing beyond parity.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{fixture, load, max_abs_diff};
use segsweep_clip::ClipModel;
use segsweep_core::{registry, Backbone, FeatureCtx, FeatureMap, Needs};
use segsweep_plugin_cliptrase::dbscan::dbscan;
use segsweep_plugin_cliptrase::image_ops::{median_filter, resize_bilinear};
use segsweep_plugin_cliptrase::paper;

fn model() -> &'static ClipModel {
    static M: OnceLock<ClipModel> = OnceLock::new();
    M.get_or_init(|| {
        let dir = fixture("tiny-clip", "");
        ClipModel::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32).expect("fixture loads")
    })
}

fn goldens() -> &'static HashMap<String, Tensor> {
    static G: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    G.get_or_init(|| load("cliptrase", "paper.safetensors"))
}

fn gold(key: &str) -> &'static Tensor {
    goldens()
        .get(key)
        .unwrap_or_else(|| panic!("golden {key} missing"))
}

/// The integer formula of the reference script's `blocky_crops` (exact in f32).
fn blocky_crops(b: usize, h: usize, w: usize) -> Tensor {
    let mut v = Vec::with_capacity(b * 3 * h * w);
    for bb in 0..b {
        for c in 0..3 {
            for i in 0..h {
                for j in 0..w {
                    let block = (i * 3 / h) * 3 + (j * 3 / w) + bb;
                    let colour = (block * 5 + c * 3) % 8;
                    let texture = (i * 7 + j * 13 + c * 5) % 5;
                    v.push((colour * 8 + texture) as f32 / 16.0 - 2.0);
                }
            }
        }
    }
    Tensor::from_vec(v, (b, 3, h, w), &Device::Cpu).unwrap()
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn dbscan_params(name: &str) -> (f64, usize) {
    let p: Vec<f64> = gold(&format!("{name}.dbscan")).to_vec1().unwrap();
    (p[0], p[1] as usize)
}

struct Crop {
    crops: Tensor,
    prefix: segsweep_core::PrefixOut,
    size: (usize, usize),
}

fn crop(name: &str) -> Crop {
    let size = if name == "a" { (224, 224) } else { (176, 256) };
    let crops = blocky_crops(1, size.0, size.1);
    let needs = Needs {
        qkv: [11].into_iter().collect(),
        ..Needs::default()
    };
    let prefix = model().prefix(&crops, &needs).unwrap();
    Crop {
        crops,
        prefix,
        size,
    }
}

#[test]
fn last_block_and_correlation_match_reference() {
    for name in ["a", "b"] {
        let c = crop(name);
        let x = paper::trase_last_block(model().last_block(), &c.prefix.tokens).unwrap();
        let d = max_abs_diff(&x, gold(&format!("{name}.block12")));
        assert!(d <= 1e-4, "{name}: qq+kk+vv block max |Δ| = {d}");

        let f = model().head(&x, c.prefix.grid).unwrap();
        let f = segsweep_core::tensor::l2_normalise(&f, 1).unwrap();
        let d = max_abs_diff(&f, gold(&format!("{name}.f_hat")));
        assert!(d <= 1e-5, "{name}: normalised features max |Δ| = {d}");

        let (q, k, v) = &c.prefix.qkv[&11];
        let cp = paper::remove_global(&paper::self_correlation(q, k, v).unwrap()).unwrap();
        let d = max_abs_diff(&cp.i(0).unwrap(), gold(&format!("{name}.c_prime")));
        assert!(d <= 1e-5, "{name}: C' max |Δ| = {d}");
    }
}

#[test]
fn dbscan_and_regions_are_exact_on_the_fixture() {
    for name in ["a", "b"] {
        let c = crop(name);
        let (eps, min_samples) = dbscan_params(name);
        let want_labels = ints(gold(&format!("{name}.labels")));
        let want_region = ints(gold(&format!("{name}.region")));
        let k = want_labels.iter().max().map(|m| m + 1).unwrap_or(0);
        assert!(
            k >= 3,
            "{name}: the fixture must exercise several clusters, got {k}"
        );
        assert!(want_labels.contains(&-1), "{name}: and noise points");

        // On the golden C' (same input as sklearn) and on the C' computed here.
        let (q, kk, v) = &c.prefix.qkv[&11];
        let ours = paper::remove_global(&paper::self_correlation(q, kk, v).unwrap()).unwrap();
        for (which, cp) in [
            ("golden", gold(&format!("{name}.c_prime")).clone()),
            ("ours", ours.i(0).unwrap()),
        ] {
            let cl = paper::cluster_regions(&f32s(&cp), c.prefix.grid, c.size, eps, min_samples);
            let labels: Vec<i64> = cl.labels.iter().map(|&l| i64::from(l)).collect();
            assert_eq!(labels, want_labels, "{name} ({which} C'): DBSCAN labels");
            assert_eq!(cl.count as i64, k);
            let region: Vec<i64> = cl.region.iter().map(|&r| i64::from(r)).collect();
            let diff = region
                .iter()
                .zip(&want_region)
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(diff, 0, "{name} ({which} C'): {diff} region pixels differ");
        }
    }
}

fn run_plugin(name: &str, vote: &str) -> (Crop, Tensor, bool) {
    let c = crop(name);
    let (eps, min_samples) = dbscan_params(name);
    let raw: BTreeMap<String, toml::Value> = [
        ("variant", toml::Value::String("paper".into())),
        ("vote", toml::Value::String(vote.into())),
        ("eps", toml::Value::Float(eps)),
        ("min_samples", toml::Value::Integer(min_samples as i64)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let plugin = registry()
        .unwrap()
        .get("cliptrase")
        .unwrap()
        .instantiate(&raw)
        .unwrap();
    assert_eq!(
        plugin.needs().qkv.iter().copied().collect::<Vec<_>>(),
        vec![11]
    );
    let text = gold("text").clone();
    // The incoming features are discarded by this variant: pass the SCLIP head output.
    let feats = model().head(&c.prefix.tokens, c.prefix.grid).unwrap();
    let ctx = FeatureCtx {
        backbone: model(),
        prefix: &c.prefix,
        crops: &c.crops,
        text: &text,
    };
    let out = plugin
        .features(
            FeatureMap {
                feats,
                normalised: false,
            },
            &ctx,
        )
        .unwrap();
    (c, out.feats, out.normalised)
}

#[test]
fn mean_logits_vote_matches_region_means() {
    for name in ["a", "b"] {
        let (c, out, normalised) = run_plugin(name, "mean-logits");
        assert!(normalised, "region means must reach the cosine unchanged");
        let (hc, wc) = c.size;
        assert_eq!(out.dims(), &[1, 16, hc, wc]);
        let region = ints(gold(&format!("{name}.region")));
        let idx = Tensor::from_vec(
            region.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            hc * wc,
            &Device::Cpu,
        )
        .unwrap();
        // Expected features: the reference's region mean of the upsampled f̂, pixel by pixel.
        let want = gold(&format!("{name}.region_feats"))
            .index_select(&idx, 0)
            .unwrap()
            .t()
            .unwrap()
            .reshape((1, 16, hc, wc))
            .unwrap();
        let d = max_abs_diff(&out, &want);
        assert!(d <= 1e-5, "{name}: features max |Δ| = {d}");
        // And the logits: text · out equals the mean of the region's upsampled logits.
        let text = gold("text");
        let logits = text
            .matmul(&out.i(0).unwrap().reshape((16, hc * wc)).unwrap())
            .unwrap();
        let want = gold(&format!("{name}.region_logits"))
            .index_select(&idx, 0)
            .unwrap()
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        let d = max_abs_diff(&logits, &want);
        assert!(d <= 1e-5, "{name}: logits max |Δ| = {d}");
    }
}

#[test]
fn majority_vote_matches_reference_winners() {
    for name in ["a", "b"] {
        let (c, out, normalised) = run_plugin(name, "majority");
        assert!(normalised, "text embeddings are unit vectors");
        let (hc, wc) = c.size;
        let text = gold("text");
        let winners = ints(gold(&format!("{name}.winners")));
        let region = ints(gold(&format!("{name}.region")));
        let logits = text
            .matmul(&out.i(0).unwrap().reshape((16, hc * wc)).unwrap())
            .unwrap();
        let argmax = ints(&logits.argmax(0).unwrap());
        let wrong = argmax
            .iter()
            .zip(&region)
            .filter(|(a, r)| **a != winners[**r as usize])
            .count();
        assert_eq!(
            wrong, 0,
            "{name}: {wrong} pixels disagree with the per-region majority"
        );
        let distinct: std::collections::BTreeSet<_> = winners.iter().collect();
        assert!(
            distinct.len() >= 2,
            "{name}: the vote should pick several queries: {winners:?}"
        );
    }
}

#[test]
fn no_cluster_keeps_upsampled_patch_features() {
    // min_samples above the patch count: DBSCAN finds nothing, output = bilinear(f̂).
    let c = crop("b");
    let raw: BTreeMap<String, toml::Value> = [
        ("variant".to_string(), toml::Value::String("paper".into())),
        ("min_samples".to_string(), toml::Value::Integer(1000)),
    ]
    .into_iter()
    .collect();
    let plugin = registry()
        .unwrap()
        .get("cliptrase")
        .unwrap()
        .instantiate(&raw)
        .unwrap();
    let text = gold("text").clone();
    let ctx = FeatureCtx {
        backbone: model(),
        prefix: &c.prefix,
        crops: &c.crops,
        text: &text,
    };
    let feats = model().head(&c.prefix.tokens, c.prefix.grid).unwrap();
    let out = plugin
        .features(
            FeatureMap {
                feats,
                normalised: false,
            },
            &ctx,
        )
        .unwrap();
    let f_hat = gold("b.f_hat").i(0).unwrap();
    let want = paper::upsample_features(&f_hat, c.size).unwrap();
    let d = max_abs_diff(&out.feats.i(0).unwrap(), &want);
    assert!(d <= 1e-5, "max |Δ| = {d}");
}

#[test]
fn missing_prefix_record_is_a_clear_error() {
    let crops = blocky_crops(1, 224, 224);
    let prefix = model().prefix(&crops, &Needs::default()).unwrap();
    let raw: BTreeMap<String, toml::Value> =
        [("variant".to_string(), toml::Value::String("paper".into()))]
            .into_iter()
            .collect();
    let plugin = registry()
        .unwrap()
        .get("cliptrase")
        .unwrap()
        .instantiate(&raw)
        .unwrap();
    let text = gold("text").clone();
    let ctx = FeatureCtx {
        backbone: model(),
        prefix: &prefix,
        crops: &crops,
        text: &text,
    };
    let feats = model().head(&prefix.tokens, prefix.grid).unwrap();
    let e = plugin
        .features(
            FeatureMap {
                feats,
                normalised: false,
            },
            &ctx,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer 11") && e.contains("needs()"), "{e}");
}

#[test]
fn plane_ops_match_torch_and_scipy_on_a_non_square_grid() {
    let g = load("cliptrase", "ops.safetensors");
    let plane = f32s(&g["plane"]);
    let up = resize_bilinear(&plane, (6, 9), (24, 36));
    let d = max_abs_diff(
        &Tensor::new(up.as_slice(), &Device::Cpu).unwrap(),
        &g["up"].flatten_all().unwrap(),
    );
    assert!(d <= 1e-6, "×4 bilinear max |Δ| = {d}");
    // The median selects elements: on the reference's own input it is exact.
    let med = median_filter(&f32s(&g["up"]), (24, 36), 7);
    assert_eq!(
        med,
        f32s(&g["med"]),
        "median_filter(size=7, mode='reflect')"
    );
    let full = resize_bilinear(&med, (24, 36), (90, 140));
    let d = max_abs_diff(
        &Tensor::new(full.as_slice(), &Device::Cpu).unwrap(),
        &g["full"].flatten_all().unwrap(),
    );
    assert!(d <= 1e-6, "bilinear to crop max |Δ| = {d}");
}

#[test]
fn dbscan_matches_sklearn_with_border_points_and_noise() {
    let g = load("cliptrase", "ops.safetensors");
    let pts = f32s(&g["points"]);
    let n = pts.len() / 5;
    for (eps, ms, key) in [
        (1.0, 4, "labels_1.0_4"),
        (1.3, 6, "labels_1.3_6"),
        (0.8, 3, "labels_0.8_3"),
    ] {
        let want = ints(&g[key]);
        let got: Vec<i64> = dbscan(&pts, n, 5, eps, ms)
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(got, want, "eps {eps}, min_samples {ms}");
        assert!(want.contains(&-1) && want.iter().max() >= Some(&2));
    }
}

/// Hand-made: 1-D points 0, 1, 2 (a chain), 2.5 and 10. eps = 1, min_samples = 3:
/// point 1 has neighbours {0, 1, 2} → core; 2 has {1, 2, 2.5} → core; 0 and 2.5 are border
/// points of cluster 0; 10 is noise. `distance <= eps` is inclusive.
#[test]
fn dbscan_by_hand() {
    let pts = [0.0f32, 1.0, 2.0, 2.5, 10.0];
    assert_eq!(dbscan(&pts, 5, 1, 1.0, 3), vec![0, 0, 0, 0, -1]);
    // Exclusive distance would make everything noise.
    assert_eq!(dbscan(&pts, 5, 1, 0.999, 3), vec![-1, -1, -1, -1, -1]);
    // min_samples counts the point itself: with 1 every point is its own core.
    assert_eq!(dbscan(&pts, 5, 1, 0.1, 1), vec![0, 1, 2, 3, 4]);
    // A border point between two clusters goes to the cluster found first in index order,
    // not to the nearer one: 1.0 is exactly 0.5 from core points 0.5 and 1.5 (eps 0.5,
    // min_samples 4, values exact in binary). The cluster around 1.5..2.0 comes first.
    let pts = [1.5f32, 1.75, 1.875, 2.0, 1.0, 0.0, 0.125, 0.25, 0.5];
    assert_eq!(dbscan(&pts, 9, 1, 0.5, 4), vec![0, 0, 0, 0, 0, 1, 1, 1, 1]);
    // The same points, the other cluster first: the border point follows.
    let pts = [0.0f32, 0.125, 0.25, 0.5, 1.0, 1.5, 1.75, 1.875, 2.0];
    assert_eq!(dbscan(&pts, 9, 1, 0.5, 4), vec![0, 0, 0, 0, 0, 1, 1, 1, 1]);
    // Neighbour counts: 1.0 has {0.5, 1.0, 1.5}, fewer than 4, so it is a border point only.
    let pts = [1.0f32, 0.5, 1.5];
    assert_eq!(dbscan(&pts, 3, 1, 0.5, 4), vec![-1, -1, -1]);
}

#[test]
fn paper_variant_refuses_features_not_on_the_patch_grid() {
    let c = crop("a");
    let raw: BTreeMap<String, toml::Value> =
        [("variant".to_string(), toml::Value::String("paper".into()))]
            .into_iter()
            .collect();
    let plugin = registry()
        .unwrap()
        .get("cliptrase")
        .unwrap()
        .instantiate(&raw)
        .unwrap();
    let text = gold("text").clone();
    let ctx = FeatureCtx {
        backbone: model(),
        prefix: &c.prefix,
        crops: &c.crops,
        text: &text,
    };
    // Per-pixel features, as an upsampler before it would produce.
    let feats = Tensor::zeros((1, 16, 224, 224), DType::F32, &Device::Cpu).unwrap();
    let e = plugin
        .features(
            FeatureMap {
                feats,
                normalised: true,
            },
            &ctx,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("first feature refiner"), "{e}");
}

#[test]
fn dbscan_presets_follow_the_resolution() {
    assert_eq!(paper::dbscan_preset(14 * 14), (0.7, 3));
    assert_eq!(paper::dbscan_preset(21 * 21), (1.1, 7));
    assert_eq!(paper::dbscan_preset(11 * 16), (0.7, 3));
    assert_eq!(paper::dbscan_preset(21 * 28), (1.1, 7));
}

/// contracts review #4 (issue #5 says "majority vote per cluster"): the default vote stays the
/// d2 `mean-logits`, for the reason shown here, and `segsweep plugins cliptrase` says plainly
/// that `majority` is the and the paper's method and how to run it.
#[test]
fn default_vote_is_mean_logits_and_the_docs_name_majority_as_the_papers() {
    let spec = registry().unwrap().get("cliptrase").unwrap();
    let params = spec
        .resolve(&BTreeMap::from([(
            "variant".to_string(),
            toml::Value::String("paper".into()),
        )]))
        .unwrap();
    assert_eq!(params.str("vote").unwrap(), "mean-logits");
    let vote_doc = spec.params.iter().find(|p| p.name == "vote").unwrap().doc;
    for doc in [spec.doc, vote_doc] {
        assert!(
            doc.contains("issue #5") && doc.contains("mode = \"whole\""),
            "{doc}"
        );
    }

    // Why majority cannot be the default under slide inference: a majority window outputs the
    // voted query's text embedding, so a pixel covered by windows that voted a and b gets the
    // mean of the text–text cosine rows of a and b. With unit text embeddings where
    // a·b = 0.5 and a·c = b·c = 0.8, that mean is (0.75, 0.75, 0.8): query c, which no window
    // voted for, wins.
    let (ab, ac) = (0.5f32, 0.8f32);
    let a = [1.0, 0.0, 0.0];
    let b = [ab, (1.0 - ab * ab).sqrt(), 0.0];
    let c1 = (ac - ab * ac) / b[1];
    let c = [ac, c1, (1.0 - ac * ac - c1 * c1).sqrt()];
    let text = Tensor::new(&[a, b, c], &Device::Cpu).unwrap(); // (Q = 3, E = 3)
    let windows = text.i(0..2).unwrap(); // the two windows' outputs: t_a and t_b
    let logits = windows.matmul(&text.t().unwrap()).unwrap(); // (window, query)
    let averaged: Vec<f32> = logits.mean(0).unwrap().to_vec1().unwrap();
    let winner = (0..3)
        .max_by(|&i, &j| averaged[i].total_cmp(&averaged[j]))
        .unwrap();
    assert_eq!(winner, 2, "{averaged:?}");
}
