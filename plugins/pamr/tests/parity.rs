//! PAMR against the PyTorch reference port (`tests/reference/pamr_resclip_reference.py pamr`).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use segsweep_core::{registry, DenseCtx, DenseMaps, RgbImage, Stage};
use segsweep_plugin_pamr::{pamr, Guide, Pamr};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/pamr/pamr_golden.safetensors"
);

fn golden() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(GOLDEN, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{GOLDEN}: {e} (regenerate with the reference script)"))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Non-square 36×56 image, 4 logit planes, the defaults (10 steps, dilations 8 and 16).
#[test]
fn matches_reference_on_non_square_image() {
    let g = golden();
    let out = pamr(&g["a.image"], &g["a.mask"], 10, &[8, 16]).unwrap();
    let d = max_abs_diff(&out, &g["a.out"]);
    eprintln!("max abs diff {d}");
    assert!(d < 1e-5, "max abs diff {d}");
    // The refinement must actually change the map, or the comparison proves nothing.
    assert!(max_abs_diff(&g["a.mask"], &g["a.out"]) > 1e-2);
}

/// A batch of two different 33×20 images with probabilities, 3 steps, dilations 1 and 3.
#[test]
fn matches_reference_on_a_batch_of_probabilities() {
    let g = golden();
    let out = pamr(&g["b.image"], &g["b.mask"], 3, &[1, 3]).unwrap();
    let d = max_abs_diff(&out, &g["b.out"]);
    eprintln!("max abs diff {d}");
    assert!(d < 1e-5, "max abs diff {d}");
    let sums = out.sum(1).unwrap();
    let ones = Tensor::ones(sums.dims(), DType::F32, &Device::Cpu).unwrap();
    assert!(
        max_abs_diff(&sums, &ones) < 1e-5,
        "probabilities must stay normalised"
    );
}

/// CLIP normalisation of the image leaves the result unchanged (up to the reference's 1e-8).
#[test]
fn invariant_to_per_channel_affine_normalisation() {
    let g = golden();
    let img = &g["a.image"];
    let mean = Tensor::new(&[0.481_454_66f32, 0.457_827_5, 0.408_210_73], &Device::Cpu)
        .unwrap()
        .reshape((3, 1, 1))
        .unwrap();
    let std = Tensor::new(&[0.268_629_54f32, 0.261_302_6, 0.275_777_1], &Device::Cpu)
        .unwrap()
        .reshape((3, 1, 1))
        .unwrap();
    let norm = (img / 255.0)
        .unwrap()
        .broadcast_sub(&mean)
        .unwrap()
        .broadcast_div(&std)
        .unwrap();
    let a = pamr(img, &g["a.mask"], 10, &[8, 16]).unwrap();
    let b = pamr(&norm, &g["a.mask"], 10, &[8, 16]).unwrap();
    let d = max_abs_diff(&a, &b);
    eprintln!("max abs diff {d}");
    assert!(d < 1e-5, "max abs diff {d}");
}

/// Through the registry and the `Refiner` trait, on the u8 image, logits and probabilities alike.
#[test]
fn plugin_refines_logits_and_probs_through_the_registry() {
    let g = golden();
    let spec = registry().unwrap().get("pamr").unwrap();
    assert_eq!(spec.stage, Stage::DenseLogits);
    let refiner = spec.instantiate(&BTreeMap::new()).unwrap();
    let img = &g["a.image"];
    let (_, h, w) = img.dims3().unwrap();
    let image = rgb(img);
    // A pipeline that does not resize: the default (resized) guide is the image itself.
    let ctx = DenseCtx {
        image: &image,
        logit_scale: 40.0,
        query_class: &[0, 1, 2, 3],
        n_classes: 4,
        short_side: None,
        device: &Device::Cpu,
    };
    let DenseMaps::Logits(out) = refiner
        .dense(DenseMaps::Logits(g["a.mask"].clone()), &ctx)
        .unwrap()
    else {
        panic!("logits in, logits out");
    };
    assert!(max_abs_diff(&out, &g["a.out"]) < 1e-5);
    let probs = ctx.probs(&DenseMaps::Logits(g["a.mask"].clone())).unwrap();
    let DenseMaps::Probs(p) = refiner.dense(DenseMaps::Probs(probs), &ctx).unwrap() else {
        panic!("probs in, probs out");
    };
    assert_eq!(p.dims(), &[4, h, w]);

    // A map at another size is refused with a message that says why.
    let small = g["a.mask"].narrow(1, 0, h - 1).unwrap();
    let e = refiner
        .dense(DenseMaps::Logits(small), &ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("original image size"), "{e}");
}

/// Unknown or out-of-range parameters fail before anything runs.
#[test]
fn parameters_are_validated() {
    let spec = registry().unwrap().get("pamr").unwrap();
    let mut raw = BTreeMap::new();
    raw.insert("dilations".to_string(), toml_list(&[]));
    assert!(spec.instantiate(&raw).is_err());
    raw.insert("dilations".to_string(), toml_list(&[0]));
    assert!(spec.instantiate(&raw).is_err());
    raw.insert("dilations".to_string(), toml_list(&[1, 2]));
    assert!(spec.instantiate(&raw).is_ok());
}

fn toml_list(v: &[i64]) -> toml::Value {
    toml::Value::Array(v.iter().map(|&x| toml::Value::Integer(x)).collect())
}

/// The `resized` guide (short side 28 of a 40×60 image, then back) against the reference.
/// The guide's uint8 rounding may differ by one level where a bilinear value sits within an
/// f32/f64 rounding error of .5 (candle interpolates with f64 weights, torch with f32; cv2, the
/// real reference, uses fixed point), so the guide is compared to one level and PAMR on the
/// reference's own guide to 1e-5.
#[test]
fn resized_guide_matches_reference() {
    let g = golden();
    let img = &g["c.image"];
    let (_, h, w) = img.dims3().unwrap();
    let image = rgb(img);
    let plugin = Pamr::new(10, vec![8, 16])
        .unwrap()
        .with_guide(Guide::Resized(28));
    let guide = plugin.guide_image(&image, None, &Device::Cpu).unwrap();
    let d = max_abs_diff(&guide, &g["c.guide"]);
    eprintln!("resized guide image: max abs diff {d} (uint8 levels)");
    assert!(d <= 1.0 + 1e-4, "guide image max abs diff {d}");

    let on_ref_guide = pamr(&g["c.guide"], &g["c.mask"], 10, &[8, 16]).unwrap();
    let d = max_abs_diff(&on_ref_guide, &g["c.out"]);
    eprintln!("pamr on the reference guide: max abs diff {d}");
    assert!(d < 1e-5, "max abs diff {d}");

    let mut raw = BTreeMap::new();
    raw.insert("guide".to_string(), toml::Value::String("resized".into()));
    raw.insert("guide_short_side".to_string(), toml::Value::Integer(28));
    let refiner = registry()
        .unwrap()
        .get("pamr")
        .unwrap()
        .instantiate(&raw)
        .unwrap();
    let ctx = DenseCtx {
        image: &image,
        logit_scale: 40.0,
        query_class: &[0, 1, 2],
        n_classes: 3,
        // The override wins over the pipeline's short side.
        short_side: Some(336),
        device: &Device::Cpu,
    };
    let DenseMaps::Logits(out) = refiner
        .dense(DenseMaps::Logits(g["c.mask"].clone()), &ctx)
        .unwrap()
    else {
        panic!("logits in, logits out");
    };
    assert_eq!(out.dims(), &[3, h, w]);
    let d = max_abs_diff(&out, &g["c.out"]);
    eprintln!("pamr plugin with the resized guide: max abs diff {d}");
    assert!(d < 1e-3, "max abs diff {d}");
    // The guide matters: the original image gives a clearly different result.
    let orig = pamr(img, &g["c.mask"], 10, &[8, 16]).unwrap();
    let d_orig = max_abs_diff(&orig, &g["c.out"]);
    eprintln!("original instead of resized guide: max abs diff {d_orig}");
    assert!(d_orig > 10.0 * d);
}

/// contracts review #5: by default PAMR is guided as in methods.md §0, by the image resized to
/// the running pipeline's `[inference] short_side` and back, without setting anything by hand.
#[test]
fn default_guide_is_the_image_resized_to_the_pipelines_short_side() {
    let g = golden();
    let img = &g["c.image"];
    let image = rgb(img);
    let refiner = registry()
        .unwrap()
        .get("pamr")
        .unwrap()
        .instantiate(&BTreeMap::new())
        .unwrap();
    let run = |short_side: Option<usize>| -> Tensor {
        let ctx = DenseCtx {
            image: &image,
            logit_scale: 40.0,
            query_class: &[0, 1, 2],
            n_classes: 3,
            short_side,
            device: &Device::Cpu,
        };
        match refiner
            .dense(DenseMaps::Logits(g["c.mask"].clone()), &ctx)
            .unwrap()
        {
            DenseMaps::Logits(t) => t,
            DenseMaps::Probs(_) => panic!("logits in, logits out"),
        }
    };
    // The pipeline resized to short side 28: the reference harness's guide.
    let d = max_abs_diff(&run(Some(28)), &g["c.out"]);
    eprintln!("default pamr, pipeline short side 28: max abs diff {d}");
    assert!(d < 1e-3, "max abs diff {d}");
    // Another short side gives another guide; no resize gives the original image.
    let orig = pamr(img, &g["c.mask"], 10, &[8, 16]).unwrap();
    assert_eq!(max_abs_diff(&run(None), &orig), 0.0);
    assert!(max_abs_diff(&run(Some(20)), &g["c.out"]) > 10.0 * d);

    // The guide is the image at the pipeline's resized size (mmcv `rescale_size`: 28×42),
    // within one uint8 level of the reference's, bilinearly back.
    let plugin = Pamr::new(10, vec![8, 16]).unwrap();
    assert_eq!(plugin.guide(), Guide::Pipeline);
    let guide = plugin.guide_image(&image, Some(28), &Device::Cpu).unwrap();
    assert!(max_abs_diff(&guide, &g["c.guide"]) <= 1.0 + 1e-4);
    let fixed = Pamr::new(10, vec![8, 16])
        .unwrap()
        .with_guide(Guide::Resized(28))
        .guide_image(&image, Some(336), &Device::Cpu)
        .unwrap();
    assert_eq!(max_abs_diff(&guide, &fixed), 0.0);
}

/// `guide = "original"` stays available; `guide_short_side` is refused with it rather than
/// silently unused.
#[test]
fn original_guide_is_an_option_and_refuses_a_short_side() {
    let spec = registry().unwrap().get("pamr").unwrap();
    let mut raw = BTreeMap::new();
    raw.insert("guide".to_string(), toml::Value::String("original".into()));
    assert!(spec.instantiate(&raw).is_ok());
    raw.insert("guide_short_side".to_string(), toml::Value::Integer(336));
    let Err(e) = spec.instantiate(&raw) else {
        panic!("guide_short_side accepted with guide = \"original\"");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("`pamr`") && msg.contains("guide_short_side"),
        "{msg}"
    );
}

fn rgb(img: &Tensor) -> RgbImage {
    let (_, h, w) = img.dims3().unwrap();
    let bytes: Vec<u8> = img
        .permute((1, 2, 0))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&v| v as u8)
        .collect();
    RgbImage::new(h, w, bytes).unwrap()
}
