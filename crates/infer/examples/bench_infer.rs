//! Benchmark of segsweep's dense inference (not a test; `bench/infer_speed.sh` runs it next to
//! the PyTorch reference).
//!
//! ```text
//! cargo run --release -p segsweep-infer --example bench_infer -- \
//!     --model DIR --classes FILE [--out DIR] [--reps N] [--device cpu|cuda:N]
//!     [--dtype f32|f16|bf16] [--across-batch N] IMAGE.ppm...
//! ```
//!
//! Loads the model (f32 on the CPU unless `--device`/`--dtype` say otherwise; a GPU build needs
//! `scripts/build-cuda.sh --bench`), times the text classifier (all names × 80 templates) cold
//! and cached, then images/s with SCLIP's VOC21 settings (short side 336, slide 224/112,
//! logit_scale 65, prob_thd 0.1, area_thd 0.1) at batch 1 and 8, batching across images (the
//! runner's way: prefix and last block across images; and with one finish per image; and in
//! chunks of `--across-batch` crops, one after the other and pipelined on two threads),
//! 16-configuration sweeps on one prepared image, and a 2048×1024 image with the process's peak
//! resident memory. With `--out`, writes each image's probabilities as `<stem>.probs.npy`
//! (f32, C × H × W) and labels as `<stem>.labels.npy` for the parity check. Prints one JSON
//! object.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use segsweep_clip::{build_classifier, parse_class_names, ClipModel, IMAGENET_TEMPLATES};
use segsweep_core::{Backbone, InferConfig, Needs, RgbImage};
use segsweep_infer::{
    class_probabilities, dense_logits, dense_logits_many, finish, labels_from_probs, postprocess,
    prepare, prepare_many, prepare_staged, segment, stage,
};

/// A binary PPM (P6, maxval 255) as written by the bench script.
fn read_ppm(path: &Path) -> Result<RgbImage, Box<dyn Error>> {
    let bytes = std::fs::read(path)?;
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8(bytes[start..i].to_vec())?);
    }
    if fields[0] != "P6" || fields[3] != "255" {
        return Err(format!("{}: not a P6 PPM with maxval 255", path.display()).into());
    }
    let (w, h): (usize, usize) = (fields[1].parse()?, fields[2].parse()?);
    Ok(RgbImage::new(
        h,
        w,
        bytes[i + 1..i + 1 + h * w * 3].to_vec(),
    )?)
}

struct Args {
    model: String,
    classes: PathBuf,
    out: Option<PathBuf>,
    reps: usize,
    device: String,
    dtype: String,
    across_batch: usize,
    images: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut it = std::env::args().skip(1);
    let (mut model, mut classes, mut out, mut reps, mut images) = (None, None, None, 1, vec![]);
    let (mut device, mut dtype, mut across_batch) = ("cpu".to_string(), "f32".to_string(), 8);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(val()?),
            "--classes" => classes = Some(PathBuf::from(val()?)),
            "--out" => out = Some(PathBuf::from(val()?)),
            "--reps" => reps = val()?.parse()?,
            "--device" => device = val()?,
            "--dtype" => dtype = val()?,
            "--across-batch" => across_batch = val()?.parse()?,
            _ => images.push(PathBuf::from(a)),
        }
    }
    Ok(Args {
        model: model.ok_or("--model DIR is required")?,
        classes: classes.ok_or("--classes FILE is required")?,
        out,
        reps,
        device,
        dtype,
        across_batch,
        images,
    })
}

fn secs<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    if args.images.is_empty() {
        return Err("give at least one IMAGE.ppm".into());
    }
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        d => segsweep_kernels::cuda_device(d.trim_start_matches("cuda:").parse()?)?,
    };
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        d => return Err(format!("--dtype {d}: expected f32, f16 or bf16").into()),
    };
    let (model, load_s) = secs(|| ClipModel::load(&args.model, &device, dtype));
    let model = model?;
    // GPU work is asynchronous: every timed section ends with a synchronisation (the results
    // are read back to the CPU anyway; this makes the boundary explicit).
    let sync = || device.synchronize();
    let names = parse_class_names(&std::fs::read_to_string(&args.classes)?);
    let n_queries: usize = names.iter().map(Vec::len).sum();
    let (cls, text_cold_s) = secs(|| build_classifier(&model, &names, &IMAGENET_TEMPLATES, None));
    let cls = cls?;
    let cache = std::env::temp_dir().join(format!("segsweep-bench-text-{}", std::process::id()));
    std::fs::create_dir_all(&cache)?;
    build_classifier(&model, &names, &IMAGENET_TEMPLATES, Some(&cache))?;
    let (cached, text_cached_s) =
        secs(|| build_classifier(&model, &names, &IMAGENET_TEMPLATES, Some(&cache)));
    let cached = cached?;
    let cache_diff = (cached.text - &cls.text)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    std::fs::remove_dir_all(&cache)?;

    let images: Vec<RgbImage> = args
        .images
        .iter()
        .map(|p| read_ppm(p))
        .collect::<Result<_, _>>()?;
    let cfg = |batch_size| InferConfig {
        logit_scale: 65.0,
        prob_thd: 0.1,
        area_thd: Some(0.1),
        batch_size,
        ..InferConfig::default()
    };
    // Windows per image with these settings (the library's own count).
    let windows: Vec<usize> = images
        .iter()
        .map(|im| segsweep_infer::window_count(im, &cfg(8)))
        .collect::<Result<_, _>>()?;
    let crops: usize = windows.iter().sum();
    // Warm-up (allocator, rayon pool, page cache).
    segment(&model, &images[0], &cls, &cfg(8), &[], Some(0))?;

    let per_image = |bs: usize| -> Result<f64, Box<dyn Error>> {
        let mut best = f64::INFINITY;
        for _ in 0..args.reps {
            let t = Instant::now();
            for im in &images {
                segment(&model, im, &cls, &cfg(bs), &[], Some(0))?;
            }
            sync()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(best / images.len() as f64)
    };
    let s_bs1 = per_image(1)?;
    let s_bs8 = per_image(8)?;

    // Across images, as the runner does: one prepare_many (batches of `--across-batch` crops
    // filled across images), the dense logits of all images at once (dense_logits_many: the
    // last block on the crops of all images), then each image's post-processing. And the same
    // with one finish per image (the last block image by image), as before dense_logits_many.
    let refs: Vec<&RgbImage> = images.iter().collect();
    let ab = args.across_batch;
    let (mut across_s, mut across_prepare_s) = (f64::INFINITY, f64::INFINITY);
    let mut across_finish_each_s = f64::INFINITY;
    for _ in 0..args.reps {
        let t = Instant::now();
        let prepared = prepare_many(&model, &refs, &cfg(ab), &Needs::default())?;
        sync()?;
        across_prepare_s = across_prepare_s.min(t.elapsed().as_secs_f64());
        let many: Vec<_> = prepared.iter().collect();
        let dense = dense_logits_many(&model, &many, &cls, &cfg(ab), &[])?;
        for (p, d) in prepared.iter().zip(&dense) {
            postprocess(&model, p, d, &cls, &cfg(ab), &[], Some(0))?;
        }
        sync()?;
        across_s = across_s.min(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let prepared = prepare_many(&model, &refs, &cfg(ab), &Needs::default())?;
        for p in &prepared {
            finish(&model, p, &cls, &cfg(ab), &[], Some(0))?;
        }
        sync()?;
        across_finish_each_s = across_finish_each_s.min(t.elapsed().as_secs_f64());
    }

    // Chunked as the runner takes them (consecutive images until their windows fill
    // `--across-batch` crops), each chunk prepared, its dense logits computed across its images
    // and its images post-processed: one chunk after the other on one thread, then pipelined
    // (a second thread prepares the next chunk while this one's images are post-processed; on
    // a GPU each thread launches on its own stream, so the next prefix runs on the device while
    // the host works through post-processing). The labels of both ways must be equal.
    let mut chunks: Vec<Vec<&RgbImage>> = vec![Vec::new()];
    let mut filled = 0;
    for (im, n) in images.iter().zip(&windows) {
        if filled >= ab {
            chunks.push(Vec::new());
            filled = 0;
        }
        chunks.last_mut().ok_or("no chunk")?.push(im);
        filled += n;
    }
    let post_chunk =
        |prepared: &[segsweep_infer::Prepared]| -> Result<Vec<Vec<u32>>, Box<dyn Error>> {
            let many: Vec<_> = prepared.iter().collect();
            let dense = dense_logits_many(&model, &many, &cls, &cfg(ab), &[])?;
            let mut labels = Vec::new();
            for (p, d) in prepared.iter().zip(&dense) {
                let seg = postprocess(&model, p, d, &cls, &cfg(ab), &[], Some(0))?;
                labels.push(seg.labels.flatten_all()?.to_vec1::<u32>()?);
            }
            Ok(labels)
        };
    let (mut chunked_s, mut pipelined_s) = (f64::INFINITY, f64::INFINITY);
    let (mut chunked_labels, mut pipelined_labels) = (Vec::new(), Vec::new());
    for _ in 0..args.reps {
        let t = Instant::now();
        chunked_labels.clear();
        for chunk in &chunks {
            let prepared = prepare_many(&model, chunk, &cfg(ab), &Needs::default())?;
            chunked_labels.extend(post_chunk(&prepared)?);
        }
        sync()?;
        chunked_s = chunked_s.min(t.elapsed().as_secs_f64());

        let t = Instant::now();
        pipelined_labels = std::thread::scope(|scope| -> Result<_, Box<dyn Error>> {
            let (tx, rx) = std::sync::mpsc::sync_channel(0);
            let (model, chunks, device) = (&model, &chunks, &device);
            let producer = scope.spawn(move || -> Result<(), String> {
                for chunk in chunks {
                    let prepared = prepare_many(model, chunk, &cfg(ab), &Needs::default())
                        .map_err(|e| e.to_string())?;
                    // This thread's stream: its prefix is done before the other thread reads it.
                    device.synchronize().map_err(|e| e.to_string())?;
                    if tx.send(prepared).is_err() {
                        break;
                    }
                }
                Ok(())
            });
            let mut labels = Vec::new();
            for prepared in rx.iter() {
                labels.extend(post_chunk(&prepared)?);
            }
            producer
                .join()
                .map_err(|_| "the preparing thread panicked")??;
            Ok(labels)
        })?;
        sync()?;
        pipelined_s = pipelined_s.min(t.elapsed().as_secs_f64());
    }
    let pipelined_identical = pipelined_labels == chunked_labels;

    // Untimed: the labels of the dense logits across images (dense_logits_many) against one
    // image at a time (finish) on the same prefixes. The runner picks between the two by the
    // memory budget, which is not in the configuration hash; on the CPU they are bit-identical
    // (tested), on a GPU the GEMMs differ in shape, so cuBLAS may round differently.
    let (many_vs_each_equal, many_vs_each_pixels) = {
        let prepared = prepare_many(&model, &refs, &cfg(ab), &Needs::default())?;
        let many: Vec<_> = prepared.iter().collect();
        let dense = dense_logits_many(&model, &many, &cls, &cfg(ab), &[])?;
        let (mut equal, mut total) = (0usize, 0usize);
        for (p, d) in prepared.iter().zip(&dense) {
            let a = postprocess(&model, p, d, &cls, &cfg(ab), &[], Some(0))?;
            let b = finish(&model, p, &cls, &cfg(ab), &[], Some(0))?;
            let a = a.labels.flatten_all()?.to_vec1::<u32>()?;
            let b = b.labels.flatten_all()?.to_vec1::<u32>()?;
            equal += a.iter().zip(&b).filter(|(x, y)| x == y).count();
            total += a.len().max(b.len());
        }
        (equal, total)
    };

    // Where one image's time goes at batch 8 (best of --reps, per image, each part synchronised):
    // stage (CPU resize + normalise + upload), the prefix (blocks 1..L−1), the dense logits
    // (last block, head, crop logits, stitch, resize) and the post-processing (softmax over
    // classes, thresholds, labels, read back to the CPU).
    let [mut stage_s, mut prefix_s, mut dense_s, mut post_s] = [f64::INFINITY; 4];
    // The stage's CPU part alone: the resize (mmcv's imrescale; cv2 bilinear on u8).
    let mut resize_s = f64::INFINITY;
    for _ in 0..args.reps {
        let t = Instant::now();
        for im in &images {
            let r = segsweep_infer::resize_short_side(im, 336, segsweep_infer::LONG_SIDE_CAP)?;
            std::hint::black_box(r);
        }
        resize_s = resize_s.min(t.elapsed().as_secs_f64() / images.len() as f64);
    }
    for _ in 0..args.reps {
        let mut t = [0.0f64; 4];
        for im in &images {
            let c = cfg(8);
            let (staged, s) = secs(|| -> Result<_, Box<dyn Error>> {
                let p = stage(&model, im, &c, &Needs::default())?;
                sync()?;
                Ok(p)
            });
            let (p, s2) = secs(|| -> Result<_, Box<dyn Error>> {
                let mut p = prepare_staged(&model, vec![staged?], &c)?;
                sync()?;
                Ok(p.pop().ok_or("prepare_staged returned no image")?)
            });
            let p = p?;
            let (d, s3) = secs(|| -> Result<_, Box<dyn Error>> {
                let d = dense_logits(&model, &p, &cls, &c, &[])?;
                sync()?;
                Ok(d)
            });
            let d = d?;
            let (r, s4) = secs(|| postprocess(&model, &p, &d, &cls, &c, &[], Some(0)));
            r?;
            for (a, b) in t.iter_mut().zip([s, s2, s3, s4]) {
                *a += b;
            }
        }
        let n = images.len() as f64;
        stage_s = stage_s.min(t[0] / n);
        prefix_s = prefix_s.min(t[1] / n);
        dense_s = dense_s.min(t[2] / n);
        post_s = post_s.min(t[3] / n);
    }

    // The prefix alone on crops already on the device (random, 224×224): per 8 crops (one
    // VOC-sized image), in batches of 8 and of 64.
    let mut prefix_crops = Vec::new();
    for b in [8usize, 64] {
        let crops = Tensor::randn(0f32, 1.0, (b, 3, 224, 224), &device)?.to_dtype(dtype)?;
        model.prefix(&crops, &Needs::default())?;
        sync()?;
        let mut best = f64::INFINITY;
        for _ in 0..args.reps {
            let t = Instant::now();
            drop(model.prefix(&crops, &Needs::default())?);
            sync()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        prefix_crops.push(best * 8.0 / b as f64);
    }

    // Split of one image's time.
    let (prepared, prepare_s) = secs(|| -> Result<_, Box<dyn Error>> {
        let p = prepare(&model, &images[0], &cfg(8), &Needs::default())?;
        sync()?;
        Ok(p)
    });
    let prepared = prepared?;
    let (_, finish_s) = secs(|| finish(&model, &prepared, &cls, &cfg(8), &[], Some(0)));
    // 16 configurations sharing one prepare: 4 last-block attentions × 4 post-processing
    // settings (logit_scale, prob_thd, area_thd). (a) every configuration runs its own finish;
    // (b) each attention's dense logits are computed once and shared by its 4 postprocesses;
    // (c) 16 post-processing settings on one attention's dense logits.
    let attn = ["sclip", "vanilla", "naclip", "maskclip"];
    let tail = |i: usize, a: &str| InferConfig {
        attention: a.to_string(),
        logit_scale: [40.0, 50.0, 65.0, 80.0][i % 4],
        prob_thd: [0.0, 0.1, 0.2, 0.3][(i / 4) % 4],
        area_thd: [None, Some(0.1)][i % 2],
        ..cfg(8)
    };
    let (_, sweep_finish_s) = secs(|| -> Result<(), Box<dyn Error>> {
        let p = prepare(&model, &images[0], &cfg(8), &Needs::default())?;
        for (j, a) in attn.iter().enumerate() {
            for i in 0..4 {
                finish(&model, &p, &cls, &tail(4 * j + i, a), &[], Some(0))?;
            }
        }
        Ok(())
    });
    let (_, sweep_shared_s) = secs(|| -> Result<(), Box<dyn Error>> {
        let p = prepare(&model, &images[0], &cfg(8), &Needs::default())?;
        for (j, a) in attn.iter().enumerate() {
            let d = dense_logits(&model, &p, &cls, &tail(4 * j, a), &[])?;
            for i in 0..4 {
                postprocess(&model, &p, &d, &cls, &tail(4 * j + i, a), &[], Some(0))?;
            }
        }
        Ok(())
    });
    // (d) as the runner does it: (c) with each logit scale's class probabilities computed once
    // and shared by its 4 threshold settings.
    let (_, sweep_probs_s) = secs(|| -> Result<(), Box<dyn Error>> {
        let p = prepare(&model, &images[0], &cfg(8), &Needs::default())?;
        let d = dense_logits(&model, &p, &cls, &cfg(8), &[])?;
        for scale in 0..4 {
            let probs = class_probabilities(&model, &p, &d, &cls, &tail(scale, "sclip"), &[])?;
            for t in 0..4 {
                let c = tail(scale + 4 * t, "sclip");
                labels_from_probs(&model, &p, &probs, &cls, &c, &[], Some(0))?;
            }
        }
        Ok(())
    });
    let (_, sweep_post_s) = secs(|| -> Result<(), Box<dyn Error>> {
        let p = prepare(&model, &images[0], &cfg(8), &Needs::default())?;
        let d = dense_logits(&model, &p, &cls, &cfg(8), &[])?;
        for i in 0..16 {
            postprocess(&model, &p, &d, &cls, &tail(i, "sclip"), &[], Some(0))?;
        }
        Ok(())
    });

    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        for (im, path) in images.iter().zip(&args.images) {
            let seg = segment(&model, im, &cls, &cfg(8), &[], Some(0))?;
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
            seg.probs.write_npy(out.join(format!("{stem}.probs.npy")))?;
            let labels: Tensor = seg.labels.to_dtype(DType::I64)?;
            labels.write_npy(out.join(format!("{stem}.labels.npy")))?;
        }
    }

    // A 2048×1024 image (short side 336 → 336×672, 10 crops): time and peak resident memory
    // (VmHWM, which includes the model's weights).
    let big = RgbImage::new(
        1024,
        2048,
        (0..1024 * 2048 * 3).map(|i| (i % 251) as u8).collect(),
    )?;
    let (seg, big_s) = secs(|| segment(&model, &big, &cls, &cfg(8), &[], Some(0)));
    drop(seg?);
    let peak_rss_mb = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0);

    let json = serde_json::json!({
        "threads": rayon::current_num_threads(),
        "device": args.device,
        "dtype": args.dtype,
        "across_batch": ab,
        "images": images.len(),
        "crops_per_image": crops as f64 / images.len() as f64,
        "load_s": load_s,
        "queries": n_queries,
        "text_cold_s": text_cold_s,
        "text_cached_s": text_cached_s,
        "text_cache_max_abs_diff": cache_diff,
        "s_per_image_bs1": s_bs1,
        "s_per_image_bs8": s_bs8,
        "s_per_image_across_images": across_s / images.len() as f64,
        "prepare_s_per_image_across_images": across_prepare_s / images.len() as f64,
        "s_per_image_across_images_finish_each": across_finish_each_s / images.len() as f64,
        "across_chunks": chunks.len(),
        "s_per_image_across_chunked": chunked_s / images.len() as f64,
        "s_per_image_across_pipelined": pipelined_s / images.len() as f64,
        "across_pipelined_labels_identical": pipelined_identical,
        "across_many_vs_each_labels_equal": many_vs_each_equal,
        "across_many_vs_each_labels_total": many_vs_each_pixels,
        "prepare_s": prepare_s,
        "split_bs8_stage_s": stage_s,
        "split_bs8_stage_resize_s": resize_s,
        "split_bs8_prefix_s": prefix_s,
        "split_bs8_dense_s": dense_s,
        "split_bs8_post_s": post_s,
        "prefix_on_device_crops_bs8_s": prefix_crops[0],
        "prefix_on_device_crops_bs64_s_per_8": prefix_crops[1],
        "finish_s": finish_s,
        "sweep16_finish_each_s": sweep_finish_s,
        "sweep16_shared_dense_s": sweep_shared_s,
        "sweep16_post_only_s": sweep_post_s,
        "sweep16_shared_probs_s": sweep_probs_s,
        "single_config_s": prepare_s + finish_s,
        "big_2048x1024_s": big_s,
        "peak_rss_mb": peak_rss_mb,
    });
    println!("{json}");
    Ok(())
}
