//! Cost of the `cliptrase` and `clip-rc` refiners per image, relative to the backbone pass, on
//! this machine's CPU (a benchmark, not a test).
//!
//! `cargo run --release -p segsweep-plugin-cliptrase --example refiner_cost [-- <model dir>]`
//!
//! Without a model directory it writes a ViT-B/16-shaped CLIP with seeded RANDOM weights to the
//! temp dir (about 600 MB) and times that: the cost of every tensor operation depends on shapes
//! only, except the paper variant's clustering, whose cost depends on how many clusters DBSCAN
//! finds (printed). One "image" is a 336×448 resized image in slide mode, 224/112: 2×3 = 6 crops,
//! one batch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};
use segsweep_clip::{ClipConfig, ClipModel};
use segsweep_core::{registry, Backbone, FeatureCtx, FeatureMap, Needs, Refiner};
use segsweep_plugin_cliptrase::paper;
// Name the crate so that its registration is linked (inventory issue #50).
use segsweep_plugin_clip_rc as _;

const RUNS: usize = 5;

/// A named job to time.
type Job<'a> = (&'a str, Box<dyn FnMut() + 'a>);

fn random_vit_b16() -> PathBuf {
    let dir = std::env::temp_dir().join("segsweep-bench-vit-b16-random");
    if dir.join("model.safetensors").exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = ClipConfig::vit_b16();
    let tensors =
        segsweep_clip::synthetic::synthetic_tensors(&cfg, 0, &Device::Cpu).expect("random weights");
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).expect("save");
    std::fs::write(
        dir.join("config.json"),
        r#"{"vision_config": {"patch_size": 16}, "projection_dim": 512}"#,
    )
    .expect("config");
    std::fs::write(
        dir.join("segsweep-fixture.json"),
        r#"{"weights": "random-fixture"}"#,
    )
    .expect("marker");
    dir
}

/// Six 224² crops of a blocky synthetic image, normalised-looking values.
fn crops() -> Tensor {
    let (b, h, w) = (6, 224, 224);
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
    Tensor::from_vec(v, (b, 3, h, w), &Device::Cpu).expect("crops")
}

/// Median wall time in ms of each job over `RUNS` rounds after one warm-up round. The jobs
/// run interleaved in every round, so that a change of machine load hits all of them alike.
fn time_rounds(jobs: &mut [Job<'_>]) -> Vec<f64> {
    for (_, job) in jobs.iter_mut() {
        job();
    }
    let mut samples = vec![Vec::with_capacity(RUNS); jobs.len()];
    for _ in 0..RUNS {
        for (i, (_, job)) in jobs.iter_mut().enumerate() {
            let t = Instant::now();
            job();
            samples[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    samples
        .into_iter()
        .map(|mut ms| {
            ms.sort_by(f64::total_cmp);
            ms[RUNS / 2]
        })
        .collect()
}

fn plugin(name: &str, pairs: &[(&str, &str)]) -> Box<dyn Refiner> {
    let raw: BTreeMap<String, toml::Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), toml::Value::String(v.to_string())))
        .collect();
    registry()
        .expect("registry")
        .get(name)
        .expect("plugin")
        .instantiate(&raw)
        .expect("params")
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(random_vit_b16);
    let model = ClipModel::load(dir.to_str().expect("utf-8 path"), &Device::Cpu, DType::F32)
        .expect("model loads");
    let crops = crops();
    let text = segsweep_core::tensor::l2_normalise(
        &Tensor::randn(0f32, 1.0, (21, 512), &Device::Cpu).expect("text"),
        1,
    )
    .expect("norm");
    println!(
        "model {} ({}), {} crops of 224², threads: {}",
        model.info().model_id,
        model.info().weights,
        crops.dim(0).unwrap(),
        candle_core::utils::get_num_threads()
    );

    let needs = Needs {
        qkv: [11].into_iter().collect(),
        ..Needs::default()
    };
    let prefix = model.prefix(&crops, &needs).unwrap();
    let feats = {
        let ctx = segsweep_core::AttentionCtx {
            backbone: &model,
            x: &prefix.tokens,
            grid: prefix.grid,
            prefix: &prefix,
            crops: &crops,
            text: &text,
        };
        model
            .head(
                &model.builtin_attention("sclip", ctx.x, ctx.grid).unwrap(),
                prefix.grid,
            )
            .unwrap()
    };
    let fctx = FeatureCtx {
        backbone: &model,
        prefix: &prefix,
        crops: &crops,
        text: &text,
    };
    // Clusters the paper variant finds on these weights (its cost grows with them).
    let (q, k, v) = &prefix.qkv[&11];
    let cp = paper::remove_global(&paper::self_correlation(q, k, v).unwrap()).unwrap();
    let clusters: Vec<usize> = (0..crops.dim(0).unwrap())
        .map(|b| {
            let c: Vec<f32> = cp.i(b).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            paper::cluster_regions(&c, prefix.grid, (224, 224), 0.7, 3).count
        })
        .collect();

    let refiners: Vec<(&str, Box<dyn Refiner>)> = vec![
        ("cliptrase phase2a", plugin("cliptrase", &[])),
        ("clip-rc phase2a", plugin("clip-rc", &[])),
        (
            "cliptrase paper (mean-logits)",
            plugin("cliptrase", &[("variant", "paper")]),
        ),
        (
            "cliptrase paper (majority)",
            plugin("cliptrase", &[("variant", "paper"), ("vote", "majority")]),
        ),
    ];
    let mut jobs: Vec<Job<'_>> = vec![(
        "backbone",
        Box::new(|| {
            let p = model.prefix(&crops, &Needs::default()).unwrap();
            let ctx = segsweep_core::AttentionCtx {
                backbone: &model,
                x: &p.tokens,
                grid: p.grid,
                prefix: &p,
                crops: &crops,
                text: &text,
            };
            let out = model.builtin_attention("sclip", ctx.x, ctx.grid).unwrap();
            std::hint::black_box(model.head(&out, p.grid).unwrap());
        }),
    )];
    for (name, r) in &refiners {
        let (feats, fctx) = (&feats, &fctx);
        jobs.push((
            name,
            Box::new(move || {
                let fm = FeatureMap {
                    feats: feats.clone(),
                    normalised: false,
                };
                std::hint::black_box(r.features(fm, fctx).unwrap());
            }),
        ));
    }
    let ms = time_rounds(&mut jobs);
    let backbone = ms[0];
    let rows: Vec<(&str, f64)> = refiners
        .iter()
        .map(|(n, _)| *n)
        .zip(ms[1..].iter().copied())
        .collect();
    println!("backbone pass (prefix + SCLIP last block + head): {backbone:.1} ms per image");
    println!("paper variant: DBSCAN clusters per crop (eps 0.7, min_samples 3): {clusters:?}");
    println!("| refiner | ms per image | % of backbone |");
    println!("|---|---|---|");
    for (name, ms) in rows {
        println!("| {name} | {ms:.1} | {:.1} % |", 100.0 * ms / backbone);
    }
}
