//! The `loftup` plugin through the registry, on a fake backbone: guidance re-normalisation,
//! per-crop processing, output stride, MaskCLIP feature sources and build-time errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use segsweep_core::{
    Backbone, BackboneInfo, CoreError, FeatureCtx, FeatureMap, LastBlock, Needs, PrefixOut,
    Refiner, RgbImage, WeightsKind,
};
use segsweep_plugin_loftup::{
    area_resize, maskclip_features, renormalise, LoftUp, CLIP_MEAN, CLIP_STD, IMAGENET_MEAN,
    IMAGENET_STD,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/loftup")
}

fn npy(name: &str) -> Tensor {
    Tensor::read_npy(fixtures().join(name)).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    d / b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Width D = E = 16 (the tiny LoftUp's dim), 2 heads, patch 8. Its last block is affine so that
/// MaskCLIP's `out_proj(v(ln_1 x))` is hand-computable: ln_1 = 2x, v = x + 1, out_proj = x/2 − 1,
/// so the MaskCLIP feature of token x is x − 0.5; the head drops CLS and reshapes.
struct Fake {
    info: BackboneInfo,
    /// The crops the last `prefix` call saw.
    seen: Mutex<Option<Tensor>>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            info: BackboneInfo {
                model_id: "fake".into(),
                file_hash: "0".into(),
                weights: WeightsKind::Synthetic,
                patch_size: 8,
                image_size: 32,
                width: 16,
                embed_dim: 16,
                layers: 1,
                heads: 2,
                mean: CLIP_MEAN,
                std: CLIP_STD,
                dtype: "f32".into(),
                device: "cpu".into(),
            },
            seen: Mutex::new(None),
        }
    }
}

impl LastBlock for Fake {
    fn heads(&self) -> usize {
        2
    }
    fn ln_1(&self, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(x.affine(2.0, 0.0)?)
    }
    fn qkv(&self, x: &Tensor) -> segsweep_core::Result<(Tensor, Tensor, Tensor)> {
        let (b, t, d) = x.dims3()?;
        let split = |y: Tensor| y.reshape((b, t, 2, d / 2))?.transpose(1, 2)?.contiguous();
        Ok((
            split(x.zeros_like()?)?,
            split(x.zeros_like()?)?,
            split(x.affine(0.5, 1.0)?)?,
        ))
    }
    fn out_proj(&self, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(x.affine(0.5, -1.0)?)
    }
    fn ln_2(&self, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(x.clone())
    }
    fn mlp(&self, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(x.clone())
    }
}

impl Backbone for Fake {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }
    fn device(&self) -> &Device {
        &Device::Cpu
    }
    /// Tokens sin(0.37·index) + mean of the crops, so a re-run on other crops changes them.
    fn prefix(&self, crops: &Tensor, _needs: &Needs) -> segsweep_core::Result<PrefixOut> {
        let (b, _, h, w) = crops.dims4()?;
        let grid = (h / 8, w / 8);
        let t = 1 + grid.0 * grid.1;
        let base = Tensor::arange(0f32, (b * t * 16) as f32, &Device::Cpu)?.reshape((b, t, 16))?;
        let tokens = base
            .affine(0.37, 0.0)?
            .sin()?
            .broadcast_add(&crops.mean_all()?)?;
        *self.seen.lock().unwrap() = Some(crops.clone());
        Ok(PrefixOut {
            tokens,
            grid,
            attn_probs: BTreeMap::new(),
            qkv: BTreeMap::new(),
        })
    }
    fn last_block(&self) -> &dyn LastBlock {
        self
    }
    fn builtin_attention(
        &self,
        name: &str,
        _x: &Tensor,
        _grid: (usize, usize),
    ) -> segsweep_core::Result<Tensor> {
        Err(CoreError::Msg(format!(
            "fake backbone has no attention `{name}`"
        )))
    }
    fn builtin_attention_names(&self) -> &'static [&'static str] {
        &[]
    }
    fn head(&self, tokens: &Tensor, grid: (usize, usize)) -> segsweep_core::Result<Tensor> {
        let (b, t, d) = tokens.dims3()?;
        let p = tokens.narrow(1, 1, t - 1)?.transpose(1, 2)?;
        Ok(p.reshape((b, d, grid.0, grid.1))?)
    }
    fn encode_text(&self, _prompts: &[String]) -> segsweep_core::Result<Tensor> {
        Err(CoreError::Msg("fake backbone has no text tower".into()))
    }
}

fn build(extra: &str) -> segsweep_core::Result<Box<dyn Refiner>> {
    let ckpt = fixtures().join("tiny_loftup.bin");
    let src = format!("checkpoint = {:?}\n{extra}", ckpt.to_str().unwrap());
    let raw: BTreeMap<String, toml::Value> =
        src.parse::<toml::Table>().unwrap().into_iter().collect();
    segsweep_core::registry()?.get("loftup")?.instantiate(&raw)
}

/// The fixture's u8 images as CLIP-normalised crops `(B, 3, 32, 44)`, as the pipeline makes them.
fn clip_crops() -> Tensor {
    let u8s = npy("image_u8.npy");
    let (b, h, w, _) = u8s.dims4().unwrap();
    let data: Vec<u8> = u8s.flatten_all().unwrap().to_vec1().unwrap();
    let imgs: Vec<Tensor> = (0..b)
        .map(|i| {
            let img =
                RgbImage::new(h, w, data[i * h * w * 3..(i + 1) * h * w * 3].to_vec()).unwrap();
            img.to_tensor(&Device::Cpu)
                .unwrap()
                .affine(1.0 / 255.0, 0.0)
                .unwrap()
        })
        .collect();
    let x = Tensor::stack(&imgs, 0).unwrap();
    let col = |v: [f32; 3]| Tensor::from_vec(v.to_vec(), (1, 3, 1, 1), &Device::Cpu).unwrap();
    x.broadcast_sub(&col(CLIP_MEAN))
        .unwrap()
        .broadcast_div(&col(CLIP_STD))
        .unwrap()
}

fn run(
    r: &dyn Refiner,
    fake: &Fake,
    feats: Tensor,
    crops: &Tensor,
) -> segsweep_core::Result<Tensor> {
    let prefix = fake.prefix(crops, &Needs::default())?;
    let text = Tensor::zeros((3, 16), DType::F32, &Device::Cpu)?;
    let ctx = FeatureCtx {
        backbone: fake,
        prefix: &prefix,
        crops,
        text: &text,
    };
    let out = r.features(
        FeatureMap {
            feats,
            normalised: true,
        },
        &ctx,
    )?;
    assert!(!out.normalised);
    Ok(out.feats)
}

#[test]
fn loftup_is_registered_at_the_feature_stage() {
    let reg = segsweep_core::registry().unwrap();
    let spec = reg.get("loftup").unwrap();
    assert_eq!(spec.stage, segsweep_core::Stage::Features);
    assert!(reg.names().contains(&"loftup"));
}

#[test]
fn plugin_output_matches_pytorch_from_clip_normalised_crops() {
    // The reference fed ImageNet-normalised guidance; the plugin gets CLIP-normalised crops and
    // must de-normalise and re-normalise. Rounding of that round trip is amplified by the top
    // Fourier frequency (≈2.2e4), hence the looser bound than the model's 1e-4 (measured below).
    let r = build("tile_rows = 5\nfeature_source = \"pipeline\"").unwrap();
    let fake = Fake::new();
    let crops = clip_crops().narrow(0, 0, 1).unwrap();
    let out = run(
        r.as_ref(),
        &fake,
        npy("lr_feats.npy").narrow(0, 0, 1).unwrap(),
        &crops,
    )
    .unwrap();
    let e = rel_err(&out, &npy("out_single0.npy"));
    eprintln!("plugin (CLIP crops → ImageNet guidance): max |diff| / max |torch| = {e:.2e}");
    assert!(e <= 1e-3, "relative error {e:.2e}");
}

#[test]
fn crops_of_a_batch_are_upsampled_independently() {
    let r = build("feature_source = \"pipeline\"").unwrap();
    let fake = Fake::new();
    let crops = clip_crops();
    let lr = npy("lr_feats.npy");
    let both = run(r.as_ref(), &fake, lr.clone(), &crops).unwrap();
    let second = run(
        r.as_ref(),
        &fake,
        lr.narrow(0, 1, 1).unwrap(),
        &crops.narrow(0, 1, 1).unwrap(),
    )
    .unwrap();
    let e = rel_err(&both.narrow(0, 1, 1).unwrap(), &second);
    assert!(e <= 1e-6, "{e:.2e}");
}

#[test]
fn output_stride_upsamples_to_an_area_averaged_guidance() {
    let r = build("output_stride = 3\nfeature_source = \"pipeline\"").unwrap();
    let fake = Fake::new();
    let crops = clip_crops().narrow(0, 0, 1).unwrap();
    let lr = npy("lr_feats.npy").narrow(0, 0, 1).unwrap();
    let out = run(r.as_ref(), &fake, lr.clone(), &crops).unwrap();
    assert_eq!(out.dims(), &[1, 16, 11, 15]); // ⌈32/3⌉ × ⌈44/3⌉
    let g = renormalise(&crops, (CLIP_MEAN, CLIP_STD), (IMAGENET_MEAN, IMAGENET_STD)).unwrap();
    let model = LoftUp::load(&fixtures().join("tiny_loftup.bin"), 4, &Device::Cpu).unwrap();
    let want = model
        .forward(&lr, &area_resize(&g, 11, 15).unwrap())
        .unwrap();
    assert!(rel_err(&out, &want) <= 1e-6);
}

#[test]
fn area_resize_averages_overlapping_cells_like_adaptive_avg_pool() {
    // 3 rows → 2: rows [0, 2) and [1, 3); 4 columns → 2: [0, 2) and [2, 4).
    let x = Tensor::arange(0f32, 12., &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 3, 4))
        .unwrap();
    let y: Vec<f32> = area_resize(&x, 2, 2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(y, vec![2.5, 4.5, 6.5, 8.5]);
}

#[test]
fn renormalise_round_trips_to_imagenet_statistics() {
    let x = Tensor::new(&[[[[0.25f32]], [[0.5]], [[0.75]]]], &Device::Cpu).unwrap();
    let clip = renormalise(&x, (IMAGENET_MEAN, IMAGENET_STD), (CLIP_MEAN, CLIP_STD)).unwrap();
    let back = renormalise(&clip, (CLIP_MEAN, CLIP_STD), (IMAGENET_MEAN, IMAGENET_STD)).unwrap();
    assert!(rel_err(&back, &x) < 1e-6);
}

#[test]
fn maskclip_source_recomputes_value_features_from_the_prefix() {
    let fake = Fake::new();
    let crops = clip_crops()
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(2, 0, 24)
        .unwrap()
        .narrow(3, 0, 32)
        .unwrap();
    let prefix = fake.prefix(&crops, &Needs::default()).unwrap();
    // ln_1 → 2x, v = 0.5·(2x) + 1 = x + 1, out_proj → (x + 1)/2 − 1 = x/2 − 0.5, head drops CLS.
    let got = maskclip_features(&fake, &prefix.tokens, prefix.grid).unwrap();
    let want = fake
        .head(&prefix.tokens.affine(0.5, -0.5).unwrap(), prefix.grid)
        .unwrap();
    assert_eq!(got.dims(), &[1, 16, 3, 4]);
    assert!(rel_err(&got, &want) < 1e-6);

    // Through the plugin: equals the pipeline source fed with those features.
    let r = build("feature_source = \"maskclip\"").unwrap();
    let junk = Tensor::ones((1, 16, 3, 4), DType::F32, &Device::Cpu).unwrap();
    let a = run(r.as_ref(), &fake, junk, &crops).unwrap();
    let pipeline = build("feature_source = \"pipeline\"").unwrap();
    let b = run(pipeline.as_ref(), &fake, want, &crops).unwrap();
    let e = rel_err(&a, &b);
    assert!(e < 1e-5, "{e:.2e}");
}

#[test]
fn maskclip_rerun_feeds_the_backbone_imagenet_normalised_crops() {
    let fake = Fake::new();
    let crops = clip_crops()
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(2, 0, 24)
        .unwrap()
        .narrow(3, 0, 32)
        .unwrap();
    let r = build("feature_source = \"maskclip-rerun\"").unwrap();
    let text = Tensor::zeros((3, 16), DType::F32, &Device::Cpu).unwrap();
    let prefix = fake.prefix(&crops, &Needs::default()).unwrap();
    let ctx = FeatureCtx {
        backbone: &fake,
        prefix: &prefix,
        crops: &crops,
        text: &text,
    };
    let junk = Tensor::ones((1, 16, 3, 4), DType::F32, &Device::Cpu).unwrap();
    r.features(
        FeatureMap {
            feats: junk,
            normalised: false,
        },
        &ctx,
    )
    .unwrap();
    let seen = fake.seen.lock().unwrap().clone().unwrap();
    let want = renormalise(&crops, (CLIP_MEAN, CLIP_STD), (IMAGENET_MEAN, IMAGENET_STD)).unwrap();
    assert!(rel_err(&seen, &want) < 1e-6);
}

/// The fixture's first crop cut to 24×32 (a 3×4 patch grid), CLIP-normalised.
fn small_crops() -> Tensor {
    clip_crops()
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(2, 0, 24)
        .unwrap()
        .narrow(3, 0, 32)
        .unwrap()
}

/// contracts review #6 (issue #8): by default the plugin upsamples the features the checkpoint
/// was trained on (MaskCLIP last block of ImageNet-normalised crops), not the pipeline's.
#[test]
fn default_feature_source_is_maskclip_on_imagenet_normalised_crops() {
    let fake = Fake::new();
    let crops = small_crops();
    let junk = Tensor::ones((1, 16, 3, 4), DType::F32, &Device::Cpu).unwrap();
    let default = run(build("").unwrap().as_ref(), &fake, junk.clone(), &crops).unwrap();
    // The backbone saw the crops re-normalised with ImageNet statistics.
    let seen = fake.seen.lock().unwrap().clone().unwrap();
    let imagenet =
        renormalise(&crops, (CLIP_MEAN, CLIP_STD), (IMAGENET_MEAN, IMAGENET_STD)).unwrap();
    assert!(rel_err(&seen, &imagenet) < 1e-6);
    // Identical to asking for it, and to the pipeline source fed with those features.
    let explicit = build("feature_source = \"maskclip-rerun\"").unwrap();
    let e = rel_err(
        &default,
        &run(explicit.as_ref(), &fake, junk.clone(), &crops).unwrap(),
    );
    assert_eq!(e, 0.0);
    let prefix = fake.prefix(&imagenet, &Needs::default()).unwrap();
    let trained_on = maskclip_features(&fake, &prefix.tokens, prefix.grid).unwrap();
    let pipeline = build("feature_source = \"pipeline\"").unwrap();
    let want = run(pipeline.as_ref(), &fake, trained_on, &crops).unwrap();
    assert!(rel_err(&default, &want) < 1e-5);
    // And not what the pipeline source makes of the incoming features.
    let incoming = run(pipeline.as_ref(), &fake, junk, &crops).unwrap();
    assert!(rel_err(&default, &incoming) > 1e-2);
}

/// With `[model] normalisation = "imagenet"` the crops already have the training statistics:
/// the default reuses the pipeline's prefix instead of running the backbone again.
#[test]
fn maskclip_rerun_reuses_the_prefix_of_imagenet_normalised_crops() {
    let mut fake = Fake::new();
    fake.info.mean = IMAGENET_MEAN;
    fake.info.std = IMAGENET_STD;
    let crops = renormalise(
        &small_crops(),
        (CLIP_MEAN, CLIP_STD),
        (IMAGENET_MEAN, IMAGENET_STD),
    )
    .unwrap();
    let prefix = fake.prefix(&crops, &Needs::default()).unwrap();
    *fake.seen.lock().unwrap() = None;
    let text = Tensor::zeros((3, 16), DType::F32, &Device::Cpu).unwrap();
    let ctx = FeatureCtx {
        backbone: &fake,
        prefix: &prefix,
        crops: &crops,
        text: &text,
    };
    let junk = Tensor::ones((1, 16, 3, 4), DType::F32, &Device::Cpu).unwrap();
    let feats = |r: &dyn Refiner| {
        r.features(
            FeatureMap {
                feats: junk.clone(),
                normalised: false,
            },
            &ctx,
        )
        .unwrap()
        .feats
    };
    let default = feats(build("").unwrap().as_ref());
    assert!(fake.seen.lock().unwrap().is_none(), "the prefix ran again");
    let maskclip = feats(build("feature_source = \"maskclip\"").unwrap().as_ref());
    assert_eq!(rel_err(&default, &maskclip), 0.0);
}

#[test]
fn wrong_feature_width_names_the_checkpoint_and_the_expected_width() {
    let r = build("feature_source = \"pipeline\"").unwrap();
    let fake = Fake::new();
    let crops = clip_crops().narrow(0, 0, 1).unwrap();
    let feats = Tensor::zeros((1, 8, 3, 4), DType::F32, &Device::Cpu).unwrap();
    let msg = run(r.as_ref(), &fake, feats, &crops)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("loftup") && msg.contains("16-d") && msg.contains("8-d"),
        "{msg}"
    );
}

#[test]
fn build_fails_early_when_the_checkpoint_is_missing() {
    let src = "checkpoint = \"/nonexistent/loftup/pytorch_model.bin\"";
    let raw: BTreeMap<String, toml::Value> =
        src.parse::<toml::Table>().unwrap().into_iter().collect();
    let Err(err) = segsweep_core::registry()
        .unwrap()
        .get("loftup")
        .unwrap()
        .instantiate(&raw)
    else {
        panic!("built without a checkpoint");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("plugin `loftup`") && msg.contains("haiwen/loftup-clip"),
        "{msg}"
    );
    assert!(msg.contains("download"), "{msg}");
}
