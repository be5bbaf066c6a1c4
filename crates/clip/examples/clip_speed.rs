//! Time the CLIP towers on a model directory (not a test; numbers depend on the machine):
//!
//! ```text
//! cargo run --release -p segsweep-clip --example clip_speed -- /tmp/clip-b16-random [batch] [vision]
//! ```
//!
//! Prints ms per 224×224 crop for prefix + SCLIP last block + head, and the time to encode the
//! VOC21-sized text classifier (56 names × 80 templates) cold.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use segsweep_clip::{attention, build_classifier, ClipModel, IMAGENET_TEMPLATES};
use segsweep_core::{Backbone, Needs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: clip_speed MODEL_DIR [BATCH]")?;
    let batch: usize = args.next().map(|b| b.parse()).transpose()?.unwrap_or(8);
    let vision_only = args.next().is_some_and(|a| a == "vision");
    let m = ClipModel::load(&dir, &Device::Cpu, DType::F32)?;
    let x = Tensor::randn(0f32, 1f32, (batch, 3, 224, 224), &Device::Cpu)?;
    let run = || -> Result<Tensor, Box<dyn std::error::Error>> {
        let p = m.prefix(&x, &Needs::default())?;
        let y = attention::sclip(m.last_block(), &p.tokens)?;
        Ok(m.head(&y, p.grid)?)
    };
    run()?; // warm-up (allocations, rayon pool)
    let reps = 3;
    let t = Instant::now();
    for _ in 0..reps {
        run()?;
    }
    let per_crop = t.elapsed().as_secs_f64() * 1e3 / (reps * batch) as f64;
    println!("vision: {per_crop:.1} ms per 224² crop (batch {batch}, prefix + sclip + head)");

    if vision_only {
        return Ok(());
    }
    let names: Vec<Vec<String>> = (0..56).map(|i| vec![format!("class name {i}")]).collect();
    let t = Instant::now();
    let c = build_classifier(&m, &names, &IMAGENET_TEMPLATES, None)?;
    println!(
        "text: {:.2} s for {} queries × 80 templates (cold, each batch run to its longest prompt)",
        t.elapsed().as_secs_f64(),
        c.queries.len()
    );
    // The same prompts for 7 names, shortened vs full 77-token context.
    let prompts: Vec<String> = (0..7)
        .flat_map(|i| {
            IMAGENET_TEMPLATES
                .iter()
                .map(move |t| t.replace("{}", &format!("class name {i}")))
        })
        .collect();
    let t = Instant::now();
    m.encode_text(&prompts)?;
    let short = t.elapsed().as_secs_f64();
    let t = Instant::now();
    m.encode_text_full_context(&prompts)?;
    let full = t.elapsed().as_secs_f64();
    println!(
        "text, {} prompts: {short:.2} s shortened vs {full:.2} s at 77 tokens ({:.1}×)",
        prompts.len(),
        full / short
    );
    Ok(())
}
