//! Cost of the `resclip` and `pamr` refiners per image relative to the backbone pass.
//!
//! ```text
//! cargo run --release -p segsweep-plugin-resclip --example refiner_bench -- [MODEL] [REPS]
//! ```
//!
//! MODEL is a `CLIPModel` directory (default `/tmp/clip-b16-random`, the seeded random ViT-B/16
//! written by `tests/reference/make_tiny_clip.py --full`); random weights cost the same as real
//! ones. One synthetic 336×448 image (VOC-like after the short-side-336 resize), 56 queries
//! (VOC21's count), f32 on the CPU. Every step runs once per round, round-robin, and the best
//! of REPS rounds is reported, so that load drifting on a shared machine hits all steps alike.
//! Not a test: the numbers go to the README by hand.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use segsweep_clip::ClipModel;
use segsweep_core::{AttentionCtx, Backbone, Needs, PrefixOut, Result};
use segsweep_plugin_resclip::attention::{resclip_block, SFR_PAMR_DILATIONS, SFR_PAMR_STEPS};
use segsweep_plugin_resclip::ResClipConfig;

const H: usize = 336;
const W: usize = 448;
const QUERIES: usize = 56;

type Step<'a> = (&'static str, Box<dyn FnMut() -> Result<()> + 'a>);

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("/tmp/clip-b16-random");
    let reps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dev = Device::Cpu;
    let model = ClipModel::load(dir, &dev, DType::F32)?;
    let info = model.info().clone();
    println!(
        "model {dir}: {} layers, width {}, best of {reps} round-robin rounds",
        info.layers, info.width
    );
    let image = Tensor::randn(0f32, 1.0, (1, 3, H, W), &dev)?;
    let text = segsweep_core::tensor::l2_normalise(
        &Tensor::randn(0f32, 1.0, (QUERIES, info.embed_dim), &dev)?,
        1,
    )?;
    let slide = slide_crops(&image)?;
    let rcs_needs = Needs {
        attn_probs: [6, 7, 8, 9].into_iter().collect(),
        ..Needs::default()
    };
    let full = ResClipConfig::preset("voc21")?;
    let mut rcs_only = full;
    rcs_only.sfr = None;
    let logits = Tensor::randn(0f32, 0.1, (QUERIES, H, W), &dev)?;
    let rgb = Tensor::rand(0f32, 255.0, (3, H, W), &dev)?;

    for (mode, crops) in [
        ("slide 224/112, 6 crops", &slide),
        ("whole 336×448", &image),
    ] {
        let (b, _, hc, wc) = crops.dims4()?;
        let plain = model.prefix(crops, &Needs::default())?;
        let rec = model.prefix(crops, &rcs_needs)?;
        let coarse = Tensor::randn(0f32, 0.1, (b, QUERIES, hc, wc), &dev)?;
        let mut steps: Vec<Step> = vec![
            (
                "prefix",
                Box::new(|| model.prefix(crops, &Needs::default()).map(drop)),
            ),
            (
                "prefix recording layers 6–9",
                Box::new(|| model.prefix(crops, &rcs_needs).map(drop)),
            ),
            (
                "last block SCLIP",
                Box::new(|| {
                    let c = ctx(&model, &plain, crops, &text);
                    model.builtin_attention("sclip", c.x, c.grid).map(drop)
                }),
            ),
            (
                "last block NACLIP",
                Box::new(|| {
                    let c = ctx(&model, &plain, crops, &text);
                    model.builtin_attention("naclip", c.x, c.grid).map(drop)
                }),
            ),
            (
                "head",
                Box::new(|| model.head(&plain.tokens, plain.grid).map(drop)),
            ),
            (
                "resclip RCS only",
                Box::new(|| resclip_block(&ctx(&model, &rec, crops, &text), &rcs_only).map(drop)),
            ),
            (
                "resclip RCS + SFR",
                Box::new(|| resclip_block(&ctx(&model, &rec, crops, &text), &full).map(drop)),
            ),
            (
                "coarse-pass PAMR",
                Box::new(|| {
                    segsweep_plugin_pamr::pamr(crops, &coarse, SFR_PAMR_STEPS, &SFR_PAMR_DILATIONS)
                        .map(drop)
                }),
            ),
        ];
        if mode.starts_with("slide") {
            steps.push((
                "pamr plugin",
                Box::new(|| segsweep_plugin_pamr::pamr(&rgb, &logits, 10, &[8, 16]).map(drop)),
            ));
        }
        let t = time_round_robin(&mut steps, reps)?;
        let ms = |k: &str| {
            t.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| *v)
                .unwrap_or(f64::NAN)
        };
        let backbone = ms("prefix") + ms("last block SCLIP") + ms("head");
        let pct = |v: f64| 100.0 * v / backbone;
        println!("\n## {mode}\n");
        println!("| step | ms per image | % of backbone pass |");
        println!("|---|---:|---:|");
        let row = |name: &str, v: f64| println!("| {name} | {v:.0} | {:.1} |", pct(v));
        row("backbone pass = prefix + SCLIP last block + head", backbone);
        row("prefix (blocks 1–11)", ms("prefix"));
        row("last block, SCLIP CSA", ms("last block SCLIP"));
        row("last block, NACLIP", ms("last block NACLIP"));
        row(
            "prefix recording layers 6–9",
            ms("prefix recording layers 6–9"),
        );
        row("resclip last block, RCS only", ms("resclip RCS only"));
        row(
            "resclip last block, RCS + SFR (voc21)",
            ms("resclip RCS + SFR"),
        );
        row("… of which the coarse-pass PAMR", ms("coarse-pass PAMR"));
        let resclip = ms("prefix recording layers 6–9") + ms("resclip RCS + SFR") + ms("head");
        row(
            "ResCLIP pass = recording prefix + resclip block + head",
            resclip,
        );
        row(
            "**resclip extra cost = ResCLIP pass − backbone pass**",
            resclip - backbone,
        );
        if mode.starts_with("slide") {
            row(
                "**pamr plugin** on (56, 336, 448) logits, 10 steps, [8, 16]",
                ms("pamr plugin"),
            );
        }
    }
    Ok(())
}

/// Run every step once per round for `reps` rounds; the best time of each step in ms.
fn time_round_robin(steps: &mut [Step], reps: usize) -> Result<Vec<(&'static str, f64)>> {
    let mut best = vec![f64::INFINITY; steps.len()];
    for _ in 0..reps.max(1) {
        for (i, (_, f)) in steps.iter_mut().enumerate() {
            let t = Instant::now();
            f()?;
            best[i] = best[i].min(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(steps.iter().map(|(n, _)| *n).zip(best).collect())
}

fn ctx<'a>(
    model: &'a ClipModel,
    prefix: &'a PrefixOut,
    crops: &'a Tensor,
    text: &'a Tensor,
) -> AttentionCtx<'a> {
    AttentionCtx {
        backbone: model,
        x: &prefix.tokens,
        grid: prefix.grid,
        prefix,
        crops,
        text,
    }
}

/// SCLIP's sliding windows (224, stride 112, last window clamped) of a `(1, 3, H, W)` image.
fn slide_crops(image: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = image.dims4()?;
    let starts = |n: usize| -> Vec<usize> {
        let count = (n + 111).saturating_sub(224) / 112 + 1;
        (0..count)
            .map(|i| (i * 112).min(n.saturating_sub(224)))
            .collect()
    };
    let mut crops = Vec::new();
    for y in starts(h) {
        for x in starts(w) {
            crops.push(image.narrow(2, y, 224)?.narrow(3, x, 224)?);
        }
    }
    Tensor::cat(&crops, 0)
}
