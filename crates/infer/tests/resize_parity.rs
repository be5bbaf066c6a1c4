//! Resize parity with OpenCV: `resize_short_side` must reproduce `cv2.resize(INTER_LINEAR)` as
//! called by mmcv `imrescale`, bit for bit, on the goldens of `tests/reference/sclip_reference.py`
//! (OpenCV 5.0.0): upscale, downscale, exact 2× and the long-side cap, plus the resized test
//! images of the SCLIP cases (every 4th row).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use segsweep_core::RgbImage;
use segsweep_infer::{resize_short_side, LONG_SIDE_CAP};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sclip")
}

fn goldens() -> HashMap<String, Tensor> {
    let path = fixture_dir().join("goldens.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with tests/reference/sclip_reference.py)",
            path.display()
        )
    })
}

fn rgb(t: &Tensor) -> RgbImage {
    let (h, w, _) = t.dims3().unwrap();
    RgbImage::new(h, w, t.flatten_all().unwrap().to_vec1::<u8>().unwrap()).unwrap()
}

/// `(short_side, long_cap)` of each small resize golden, from goldens.json.
fn resize_cases() -> Vec<(usize, usize)> {
    let text = std::fs::read_to_string(fixture_dir().join("goldens.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
    meta["resize"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (n(&c["short_side"]), n(&c["long_cap"])))
        .collect()
}

#[test]
fn resize_is_bit_exact_with_cv2_on_small_goldens() {
    let g = goldens();
    let cases = resize_cases();
    assert_eq!(cases.len(), 4);
    for (i, (short, cap)) in cases.into_iter().enumerate() {
        let src = rgb(&g[&format!("resize.{i}.src")]);
        let want = rgb(&g[&format!("resize.{i}.dst")]);
        let got = resize_short_side(&src, short, cap).unwrap();
        assert_eq!((got.h, got.w), (want.h, want.w), "case {i}: size");
        let diff = got
            .data
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 0, "case {i}: {diff} bytes differ from cv2");
    }
}

#[test]
fn resized_case_images_are_bit_exact_with_cv2() {
    let g = goldens();
    for (case, image) in [("slide_a", "a"), ("slide_b", "b")] {
        let src = rgb(&g[&format!("image.{image}")]);
        let want = g[&format!("{case}.resized_sub")]
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap();
        let got = resize_short_side(&src, 224, LONG_SIDE_CAP).unwrap();
        let row = got.w * 3;
        let sub: Vec<u8> = got.data.chunks(row).step_by(4).flatten().copied().collect();
        assert_eq!(sub.len(), want.len(), "{case}: size");
        assert!(sub == want, "{case}: resized image differs from cv2");
    }
}
