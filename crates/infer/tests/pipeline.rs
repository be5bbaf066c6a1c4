//! Pipeline behaviour on the fake backbone: cached vs uncached, batch sizes, batching across
//! images, plugins at every stage, and the errors a user can provoke.

use candle_core::{Device, Tensor};
use segsweep_core::{
    Backbone, Classifier, CoreError, DenseCtx, DenseMaps, FeatureCtx, FeatureMap, InferConfig,
    LabelCtx, Mode, Needs, Refiner, RgbImage, Stage,
};
use segsweep_infer::{
    dense_logits, dense_logits_many, fake::FakeBackbone, finish, finish_traced, postprocess,
    prepare, prepare_many, segment, InferError, Segmentation, Step,
};

/// A smooth non-square test image with some structure.
fn image(h: usize, w: usize, seed: usize) -> RgbImage {
    let mut data = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            let v = |k: usize| (((x * (3 + k + seed)) ^ (y * (5 + 2 * k))) % 256) as u8;
            data.extend([v(0), v(1), v(2)]);
        }
    }
    RgbImage::new(h, w, data).unwrap()
}

/// Background with two synonyms, then three classes (one with a synonym).
fn classifier(bb: &FakeBackbone) -> Classifier {
    let queries: Vec<String> = ["sky", "wall", "cat", "dog", "puppy", "car"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    Classifier {
        text: bb.encode_text(&queries).unwrap(),
        query_class: vec![0, 0, 1, 2, 2, 3],
        queries,
        class_names: ["background", "cat", "dog", "car"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

fn cfg(short: usize, batch: usize) -> InferConfig {
    InferConfig {
        short_side: Some(short),
        batch_size: batch,
        crop: 64,
        stride: 32,
        ..InferConfig::default()
    }
}

fn vec3(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    vec3(a)
        .iter()
        .zip(vec3(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn labels(s: &Segmentation) -> Vec<u32> {
    s.labels.flatten_all().unwrap().to_vec1().unwrap()
}

/// Scales features: a feature-stage plugin with an observable effect.
struct Sharpen;
impl Refiner for Sharpen {
    fn name(&self) -> &str {
        "sharpen"
    }
    fn features(&self, f: FeatureMap, _ctx: &FeatureCtx<'_>) -> segsweep_core::Result<FeatureMap> {
        let feats = (f.feats.sqr()? * f.feats.sign()?)?;
        Ok(FeatureMap {
            feats,
            normalised: false,
        })
    }
}

/// Blurs logits horizontally by averaging with the right neighbour, and needs layer 6's attention.
struct Blur;
impl Refiner for Blur {
    fn name(&self) -> &str {
        "blur"
    }
    fn needs(&self) -> Needs {
        Needs {
            attn_probs: [6].into(),
            qkv: Default::default(),
        }
    }
    fn dense(&self, maps: DenseMaps, _ctx: &DenseCtx<'_>) -> segsweep_core::Result<DenseMaps> {
        let DenseMaps::Logits(l) = maps else {
            return Err(CoreError::plugin("blur", "wants logits"));
        };
        let w = l.dim(2)?;
        let right = Tensor::cat(&[l.narrow(2, 1, w - 1)?, l.narrow(2, w - 1, 1)?], 2)?;
        Ok(DenseMaps::Logits(((l + right)? * 0.5)?))
    }
}

/// Turns the logits into probabilities itself (uniform): the finish must take them as they are.
struct Uniform;
impl Refiner for Uniform {
    fn name(&self) -> &str {
        "uniform"
    }
    fn dense(&self, maps: DenseMaps, ctx: &DenseCtx<'_>) -> segsweep_core::Result<DenseMaps> {
        let DenseMaps::Logits(l) = maps else {
            unreachable!()
        };
        let (_, h, w) = l.dims3()?;
        Ok(DenseMaps::Probs(
            (Tensor::ones((ctx.n_classes, h, w), candle_core::DType::F32, ctx.device)?
                / ctx.n_classes as f64)?,
        ))
    }
}

/// Sets every label to 3.
struct AllCar;
impl Refiner for AllCar {
    fn name(&self) -> &str {
        "all-car"
    }
    fn labels(&self, l: Tensor, _ctx: &LabelCtx<'_>) -> segsweep_core::Result<Tensor> {
        Ok(l.ones_like()?.affine(3.0, 0.0)?)
    }
}

#[test]
fn issue_7_prepare_once_finish_many_equals_segment_per_configuration() {
    let bb = FakeBackbone::new(1).unwrap();
    let cls = classifier(&bb);
    let img = image(70, 115, 0);
    let (sharpen, blur, car) = (Sharpen, Blur, AllCar);
    let base = cfg(80, 4);
    // Configurations that differ only after the prefix.
    let configs: Vec<(InferConfig, Vec<Step<'_>>)> = vec![
        (base.clone(), vec![]),
        (
            InferConfig {
                attention: "vanilla".into(),
                ..base.clone()
            },
            vec![],
        ),
        (
            InferConfig {
                logit_scale: 65.0,
                prob_thd: 0.3,
                area_thd: Some(0.1),
                ..base.clone()
            },
            vec![],
        ),
        (
            base.clone(),
            vec![(Stage::Features, &sharpen as &dyn Refiner)],
        ),
        (
            base.clone(),
            vec![(Stage::DenseLogits, &blur as &dyn Refiner)],
        ),
        (
            base.clone(),
            vec![
                (Stage::Features, &sharpen as &dyn Refiner),
                (Stage::Labels, &car as &dyn Refiner),
            ],
        ),
    ];
    let needs = configs.iter().fold(Needs::default(), |n, (_, p)| {
        n.union(&segsweep_infer::needs_of(p))
    });
    let prepared = prepare(&bb, &img, &base, &needs).unwrap();
    let mut outputs = vec![];
    for (c, p) in &configs {
        let cached = finish(&bb, &prepared, &cls, c, p, Some(0)).unwrap();
        let alone = segment(&bb, &img, &cls, c, p, Some(0)).unwrap();
        assert_eq!(cached.probs.dims(), &[4, 70, 115]);
        assert_eq!(max_abs_diff(&cached.probs, &alone.probs), 0.0);
        assert_eq!(labels(&cached), labels(&alone));
        outputs.push(cached);
    }
    // The configurations really differ from each other (else this test proves nothing).
    for i in 1..outputs.len() {
        let differ = max_abs_diff(&outputs[0].probs, &outputs[i].probs) > 1e-4
            || labels(&outputs[0]) != labels(&outputs[i]);
        assert!(differ, "configuration {i} equals configuration 0");
    }
    assert!(labels(&outputs[5]).iter().all(|&l| l == 3));
}

#[test]
fn batch_size_one_and_eight_give_the_same_probabilities() {
    let bb = FakeBackbone::new(2).unwrap();
    let cls = classifier(&bb);
    let img = image(90, 150, 1);
    let a = segment(&bb, &img, &cls, &cfg(96, 1), &[], Some(0)).unwrap();
    let b = segment(&bb, &img, &cls, &cfg(96, 8), &[], Some(0)).unwrap();
    let c = segment(&bb, &img, &cls, &cfg(96, 3), &[], Some(0)).unwrap();
    assert!(max_abs_diff(&a.probs, &b.probs) <= 1e-5);
    assert!(max_abs_diff(&a.probs, &c.probs) <= 1e-5);
    assert_eq!(labels(&a), labels(&b));
}

#[test]
fn batching_across_images_equals_one_image_at_a_time() {
    let bb = FakeBackbone::new(3).unwrap();
    let cls = classifier(&bb);
    // Different aspect ratios: the 40×300 image is narrower than the crop vertically.
    let imgs = [image(70, 115, 0), image(40, 300, 2), image(120, 64, 3)];
    let c = cfg(64, 5);
    let many = prepare_many(&bb, &imgs.iter().collect::<Vec<_>>(), &c, &Needs::default()).unwrap();
    for (img, p) in imgs.iter().zip(&many) {
        let alone = segment(&bb, img, &cls, &c, &[], Some(0)).unwrap();
        let batched = finish(&bb, p, &cls, &c, &[], Some(0)).unwrap();
        assert!(max_abs_diff(&alone.probs, &batched.probs) <= 1e-5);
        assert_eq!(labels(&alone), labels(&batched));
    }
}

#[test]
fn dense_logits_of_several_images_at_once_equal_one_image_at_a_time() {
    let bb = FakeBackbone::new(3).unwrap();
    let cls = classifier(&bb);
    let sharpen = Sharpen;
    // Non-square images with different window counts, and one (64 short side, 40×300 → 64×480)
    // whose windows are a row of crops: batches of 4 crops span images and split chunks.
    let imgs = [image(70, 115, 0), image(40, 300, 2), image(120, 64, 3)];
    for (batch, pipeline) in [
        (4, vec![]),
        (64, vec![]),
        // A feature-stage plugin: each image alone (plugins may read its crops).
        (4, vec![(Stage::Features, &sharpen as &dyn Refiner)]),
    ] {
        for mode in [Mode::Slide, Mode::Whole] {
            let c = InferConfig {
                mode,
                ..cfg(64, batch)
            };
            let many =
                prepare_many(&bb, &imgs.iter().collect::<Vec<_>>(), &c, &Needs::default()).unwrap();
            let refs: Vec<_> = many.iter().collect();
            let together = dense_logits_many(&bb, &refs, &cls, &c, &pipeline).unwrap();
            assert_eq!(together.len(), imgs.len());
            for (p, d) in many.iter().zip(&together) {
                let alone = dense_logits(&bb, p, &cls, &c, &pipeline).unwrap();
                let (a, b) = (alone.to_tensor().unwrap(), d.to_tensor().unwrap());
                assert_eq!(a.dims(), b.dims());
                assert_eq!(
                    vec3(&a).iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    vec3(&b).iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "batch {batch}, {mode:?}, {} plugin(s)",
                    pipeline.len()
                );
            }
        }
    }
    // Errors name the image's problem as one image at a time does.
    let c = cfg(64, 4);
    let mut p = prepare(&bb, &imgs[0], &c, &Needs::default()).unwrap();
    p.take_prefix().unwrap();
    let e = dense_logits_many(&bb, &[&p], &cls, &c, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("take_prefix"), "{e}");
}

#[test]
fn dense_logits_many_equal_one_image_at_a_time_on_the_tiny_clip() {
    // The real CLIP towers (random tiny weights) with each built-in attention: the last block's
    // GEMMs then have other row counts than one image's, and still give the same bits.
    use candle_core::DType;
    let m =
        segsweep_clip::ClipModel::load("builtin:tiny-random", &Device::Cpu, DType::F32).unwrap();
    let queries: Vec<String> = ["sky", "cat", "dog"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = m.encode_text(&queries).unwrap();
    let norm = text.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
    let cls = Classifier {
        text: text.broadcast_div(&norm).unwrap(),
        query_class: vec![0, 1, 2],
        queries,
        class_names: ["sky", "cat", "dog"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let imgs = [image(70, 115, 0), image(40, 300, 2), image(120, 64, 3)];
    for attention in m.builtin_attention_names() {
        let c = InferConfig {
            attention: attention.to_string(),
            ..cfg(64, 5)
        };
        let many =
            prepare_many(&m, &imgs.iter().collect::<Vec<_>>(), &c, &Needs::default()).unwrap();
        let refs: Vec<_> = many.iter().collect();
        let together = dense_logits_many(&m, &refs, &cls, &c, &[]).unwrap();
        for (p, d) in many.iter().zip(&together) {
            let alone = dense_logits(&m, p, &cls, &c, &[]).unwrap();
            let (a, b) = (alone.to_tensor().unwrap(), d.to_tensor().unwrap());
            assert_eq!(
                vec3(&a).iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                vec3(&b).iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{attention}"
            );
        }
    }
}

#[test]
fn probabilities_are_at_the_original_size_and_sum_to_at_most_one() {
    let bb = FakeBackbone::new(4).unwrap();
    let cls = classifier(&bb);
    let img = image(53, 97, 5);
    for mode in [Mode::Slide, Mode::Whole] {
        let c = InferConfig { mode, ..cfg(64, 8) };
        let (seg, trace) = finish_traced(
            &bb,
            &prepare(&bb, &img, &c, &Needs::default()).unwrap(),
            &cls,
            &c,
            &[],
            Some(0),
        )
        .unwrap();
        assert_eq!(seg.probs.dims(), &[4, 53, 97]);
        assert_eq!(seg.labels.dims(), &[53, 97]);
        // Synonym max of a softmax: each pixel's class probabilities sum to ≤ 1.
        let p = vec3(&seg.probs);
        let n = 53 * 97;
        for i in 0..n {
            let s: f32 = (0..4).map(|c| p[c * n + i]).sum();
            assert!(s <= 1.0 + 1e-5 && s > 0.0);
        }
        assert_eq!(trace.canvas.is_some(), mode == Mode::Slide);
        assert_eq!(trace.dense_logits.unwrap().dims(), &[6, 53, 97]);
    }
}

#[test]
fn dense_plugin_returning_probabilities_is_taken_as_is() {
    let bb = FakeBackbone::new(5).unwrap();
    let cls = classifier(&bb);
    let u = Uniform;
    let s = segment(
        &bb,
        &image(64, 80, 0),
        &cls,
        &cfg(64, 8),
        &[(Stage::DenseLogits, &u)],
        Some(0),
    )
    .unwrap();
    assert!(vec3(&s.probs).iter().all(|&v| (v - 0.25).abs() < 1e-7));
    // All tied: argmax goes to class 0.
    assert!(labels(&s).iter().all(|&l| l == 0));
}

#[test]
fn user_errors_are_reported_with_the_key() {
    let bb = FakeBackbone::new(6).unwrap();
    let cls = classifier(&bb);
    let img = image(64, 80, 0);
    let c = cfg(64, 8);
    let prepared = prepare(&bb, &img, &c, &Needs::default()).unwrap();
    // A plugin needing attention maps the prefix did not record.
    let blur = Blur;
    let err = finish(
        &bb,
        &prepared,
        &cls,
        &c,
        &[(Stage::DenseLogits, &blur)],
        Some(0),
    )
    .unwrap_err();
    assert!(matches!(err, InferError::MissingNeeds { .. }), "{err}");
    // A configuration that changes the windows cannot reuse the prepared image.
    let err = finish(
        &bb,
        &prepared,
        &cls,
        &InferConfig {
            stride: 16,
            ..c.clone()
        },
        &[],
        Some(0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("stride"), "{err}");
    // Unknown built-in attention lists the known ones.
    let err = finish(
        &bb,
        &prepared,
        &cls,
        &InferConfig {
            attention: "nope".into(),
            ..c.clone()
        },
        &[],
        Some(0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("vanilla, sclip"), "{err}");
    // Plugins out of pipeline order.
    let (sharpen, car) = (Sharpen, AllCar);
    let err = finish(
        &bb,
        &prepared,
        &cls,
        &c,
        &[(Stage::Labels, &car), (Stage::Features, &sharpen)],
        Some(0),
    )
    .unwrap_err();
    assert!(matches!(err, InferError::Pipeline(_)), "{err}");
    let err = prepare(
        &bb,
        &img,
        &InferConfig {
            batch_size: 0,
            ..c.clone()
        },
        &Needs::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
    // A crop smaller than a patch.
    let err = prepare(
        &bb,
        &image(4, 9, 0),
        &InferConfig {
            short_side: None,
            ..c
        },
        &Needs::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("patch"), "{err}");
    let _ = Device::Cpu;
}

#[test]
fn issue_7_shared_dense_logits_then_postprocess_equals_finish() {
    let bb = FakeBackbone::new(7).unwrap();
    let cls = classifier(&bb);
    let img = image(66, 101, 4);
    let base = cfg(72, 8);
    let blur = Blur;
    let prepared = prepare(
        &bb,
        &img,
        &base,
        &segsweep_infer::needs_of(&[(Stage::DenseLogits, &blur)]),
    )
    .unwrap();
    let dense = dense_logits(&bb, &prepared, &cls, &base, &[]).unwrap();
    assert_eq!(dense.to_tensor().unwrap().dims(), &[6, 66, 101]);
    let tails: Vec<(InferConfig, Vec<Step<'_>>)> = vec![
        (base.clone(), vec![]),
        (
            InferConfig {
                logit_scale: 65.0,
                prob_thd: 0.4,
                area_thd: Some(0.2),
                ..base.clone()
            },
            vec![],
        ),
        (
            base.clone(),
            vec![(Stage::DenseLogits, &blur as &dyn Refiner)],
        ),
    ];
    let mut labels_seen = vec![];
    for (c, p) in &tails {
        let shared = postprocess(&bb, &prepared, &dense, &cls, c, p, Some(0)).unwrap();
        let alone = finish(&bb, &prepared, &cls, c, p, Some(0)).unwrap();
        assert_eq!(max_abs_diff(&shared.probs, &alone.probs), 0.0);
        assert_eq!(labels(&shared), labels(&alone));
        labels_seen.push(labels(&shared));
    }
    assert!(labels_seen[0] != labels_seen[1] && labels_seen[0] != labels_seen[2]);
    // Logits of another classifier (different Q) are refused.
    let mut small = cls.clone();
    small.text = small.text.narrow(0, 0, 4).unwrap();
    small.query_class.truncate(4);
    small.queries.truncate(4);
    small.class_names.truncate(3);
    assert!(postprocess(&bb, &prepared, &dense, &small, &base, &[], Some(0)).is_err());
}

/// Records attention probabilities and q/k/v, so a round trip covers every prefix tensor kind.
struct NeedsAll;
impl Refiner for NeedsAll {
    fn name(&self) -> &str {
        "needs-all"
    }
    fn needs(&self) -> Needs {
        Needs {
            attn_probs: [0].into(),
            qkv: [0].into(),
        }
    }
}

#[test]
fn issue_7_taken_and_restored_prefix_gives_identical_dense_logits() {
    let bb = FakeBackbone::new(3).unwrap();
    let cls = classifier(&bb);
    let img = image(70, 97, 2);
    // Batch 3 over 6+ windows: several chunks, the last one short.
    let c = cfg(72, 3);
    let needs = segsweep_infer::needs_of(&[(Stage::Features, &NeedsAll as &dyn Refiner)]);
    let mut prepared = prepare(&bb, &img, &c, &needs).unwrap();
    let before = dense_logits(&bb, &prepared, &cls, &c, &[]).unwrap();
    let bytes = prepared.prefix_bytes();
    let named = prepared.take_prefix().unwrap();
    assert!(named.iter().any(|(n, _)| n.ends_with(".attn.0")));
    assert!(named.iter().any(|(n, _)| n.ends_with(".v.0")));
    assert!(!prepared.has_prefix() && prepared.prefix_bytes() == 0);
    // Without its prefix the image still post-processes but refuses dense logits.
    assert!(postprocess(&bb, &prepared, &before, &cls, &c, &[], None).is_ok());
    let err = dense_logits(&bb, &prepared, &cls, &c, &[]).unwrap_err();
    assert!(err.to_string().contains("restore"), "{err}");
    // A set with a tensor missing is refused and leaves the image without a prefix.
    let mut partial: std::collections::HashMap<String, Tensor> = named.iter().cloned().collect();
    let victim = named
        .iter()
        .find(|(n, _)| n.ends_with(".k.0"))
        .unwrap()
        .0
        .clone();
    partial.remove(&victim);
    assert!(prepared.restore_prefix(partial, &Device::Cpu).is_err());
    assert!(!prepared.has_prefix());
    // f32 round trip: identical; f16 round trip: close.
    let f16: std::collections::HashMap<String, Tensor> = named
        .iter()
        .map(|(n, t)| {
            let t = if t.dtype().is_float() {
                t.to_dtype(candle_core::DType::F16).unwrap()
            } else {
                t.clone()
            };
            (n.clone(), t)
        })
        .collect();
    prepared
        .restore_prefix(named.into_iter().collect(), &Device::Cpu)
        .unwrap();
    assert_eq!(prepared.prefix_bytes(), bytes);
    assert!(
        !prepared.prefix_restored_lossy(),
        "an f32 round trip is exact"
    );
    let after = dense_logits(&bb, &prepared, &cls, &c, &[]).unwrap();
    let (a, b) = (before.to_tensor().unwrap(), after.to_tensor().unwrap());
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let kept = prepared.take_prefix().unwrap();
    prepared.restore_prefix(f16, &Device::Cpu).unwrap();
    assert!(
        prepared.prefix_restored_lossy(),
        "f16 for an f32 model rounds"
    );
    assert_eq!(
        prepared.prefix_bytes(),
        bytes,
        "restored in the backbone dtype"
    );
    let half = dense_logits(&bb, &prepared, &cls, &c, &[]).unwrap();
    let d = max_abs_diff(&a, &half.to_tensor().unwrap());
    assert!(d > 0.0 && d < 1e-2, "f16 round trip moved logits by {d}");
    let exact = postprocess(&bb, &prepared, &before, &cls, &c, &[], None).unwrap();
    let close = postprocess(&bb, &prepared, &half, &cls, &c, &[], None).unwrap();
    let (la, lb) = (labels(&exact), labels(&close));
    let same = la.iter().zip(&lb).filter(|(a, b)| a == b).count();
    assert!(
        same * 100 >= la.len() * 99,
        "{same} of {} labels agree",
        la.len()
    );
    // Put back exactly again: no longer rounded.
    prepared.take_prefix().unwrap();
    prepared
        .restore_prefix(kept.into_iter().collect(), &Device::Cpu)
        .unwrap();
    assert!(!prepared.prefix_restored_lossy());
}

#[test]
fn issue_7_staged_image_filled_from_prefix_tensors_equals_prepare() {
    let bb = FakeBackbone::new(3).unwrap();
    let cls = classifier(&bb);
    let img = image(70, 97, 4);
    let c = cfg(72, 3);
    let needs = segsweep_infer::needs_of(&[(Stage::Features, &NeedsAll as &dyn Refiner)]);
    let prepared = prepare(&bb, &img, &c, &needs).unwrap();
    let want = dense_logits(&bb, &prepared, &cls, &c, &[]).unwrap();
    // prefix_tensors keeps the prefix (take_prefix removes it).
    let named = prepared.prefix_tensors().unwrap();
    assert!(prepared.has_prefix());
    let mut staged = segsweep_infer::stage(&bb, &img, &c, &needs).unwrap();
    assert!(!staged.has_prefix());
    assert_eq!(staged.prefix_identity(), prepared.prefix_identity());
    staged
        .restore_prefix(named.into_iter().collect(), &Device::Cpu)
        .unwrap();
    let got = dense_logits(&bb, &staged, &cls, &c, &[]).unwrap();
    let (a, b) = (want.to_tensor().unwrap(), got.to_tensor().unwrap());
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // The identity changes with what decides the prefix, not with later settings.
    let other = segsweep_infer::stage(&bb, &img, &cfg(64, 3), &needs).unwrap();
    assert_ne!(other.prefix_identity(), prepared.prefix_identity());
    let fewer = segsweep_infer::stage(&bb, &img, &c, &Needs::default()).unwrap();
    assert_ne!(fewer.prefix_identity(), prepared.prefix_identity());
    let mut later = c.clone();
    later.prob_thd = 0.5;
    let same = segsweep_infer::stage(&bb, &img, &later, &needs).unwrap();
    assert_eq!(same.prefix_identity(), prepared.prefix_identity());
    // prepare_staged fills staged images as prepare does, and refuses other window settings.
    let filled = segsweep_infer::prepare_staged(&bb, vec![same], &c).unwrap();
    let again = dense_logits(&bb, &filled[0], &cls, &c, &[]).unwrap();
    assert_eq!(max_abs_diff(&a, &again.to_tensor().unwrap()), 0.0);
    let err = segsweep_infer::prepare_staged(&bb, vec![other], &c).unwrap_err();
    assert!(err.to_string().contains("prepare_staged"), "{err}");
}

/// A feature plugin that returns other than floats `(B, E, h, w)` with its input's `B` and `E`.
struct BadFeatures(&'static str);
impl Refiner for BadFeatures {
    fn name(&self) -> &str {
        self.0
    }
    fn features(&self, f: FeatureMap, _ctx: &FeatureCtx<'_>) -> segsweep_core::Result<FeatureMap> {
        let feats = match self.0 {
            "bytes" => f.feats.to_dtype(candle_core::DType::U8)?,
            _ => f.feats.narrow(1, 1, f.feats.dim(1)? - 1)?,
        };
        Ok(FeatureMap {
            feats,
            normalised: false,
        })
    }
}

/// A label plugin that returns floats.
struct FloatLabels;
impl Refiner for FloatLabels {
    fn name(&self) -> &str {
        "float-labels"
    }
    fn labels(&self, l: Tensor, _ctx: &LabelCtx<'_>) -> segsweep_core::Result<Tensor> {
        Ok(l.to_dtype(candle_core::DType::F32)?)
    }
}

/// What a plugin returns is checked where it comes back: a feature plugin's bytes or missing
/// channels, a label plugin's floats are errors naming the plugin (they were cast quietly, or
/// blamed on the text classifier).
#[test]
fn a_plugin_returning_the_wrong_kind_of_tensor_is_named() {
    let bb = FakeBackbone::new(1).unwrap();
    let cls = classifier(&bb);
    let img = image(40, 57, 0);
    let c = cfg(48, 4);
    let (bytes, narrow, floats) = (BadFeatures("bytes"), BadFeatures("narrow"), FloatLabels);
    let cases: [(Stage, &dyn Refiner, &str); 3] = [
        (
            Stage::Features,
            &bytes,
            "plugin `bytes` (stage features) returned a U8",
        ),
        (Stage::Features, &narrow, "plugin `narrow` (stage features)"),
        (
            Stage::Labels,
            &floats,
            "plugin `float-labels` (stage labels) returned a F32",
        ),
    ];
    for (stage, r, want) in cases {
        let err = segment(&bb, &img, &cls, &c, &[(stage, r)], Some(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}
