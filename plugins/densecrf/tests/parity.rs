//! Parity with pydensecrf 1.1 (goldens from `tests/reference/densecrf_goldens.py`): Q within
//! 1e-4 absolute and argmax labels equal on ≥ 99.9% of pixels, for both presets, on non-square
//! synthetic inputs with 2, 3, 5 and 21 labels.

use std::path::PathBuf;

use ndarray::Array3;
use segsweep_core::RgbImage;
use segsweep_plugin_densecrf::npy::read_map_npy;
use segsweep_plugin_densecrf::{refine_probs, CrfParams, Preset};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/densecrf")
        .join(name)
}

fn argmax(q: &[f32], c: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            (0..c)
                .max_by(|&a, &b| q[a * n + i].total_cmp(&q[b * n + i]))
                .unwrap_or(0)
        })
        .collect()
}

fn check(case: &str, preset: Preset) {
    let img: Array3<u8> = ndarray_npy::read_npy(fixture(&format!("{case}_image.npy"))).unwrap();
    let (h, w, _) = img.dim();
    let image = RgbImage::new(h, w, img.iter().copied().collect()).unwrap();
    let probs = read_map_npy(&fixture(&format!("{case}_probs.npy"))).unwrap();
    let want = read_map_npy(&fixture(&format!("{case}_q_{preset}.npy"))).unwrap();
    let (c, ph, pw) = probs.shape;
    assert_eq!((ph, pw), (h, w));
    let got = refine_probs(&image, &probs.data, c, h, w, &CrfParams::preset(preset)).unwrap();
    // The element-wise comparisons below zip; a short or empty Q or golden must fail here.
    assert!(c * h * w > 0, "{case}: empty input");
    assert_eq!(want.shape, probs.shape, "{case} {preset}: golden shape");
    assert_eq!(want.data.len(), c * h * w, "{case} {preset}: golden length");
    assert_eq!(got.len(), c * h * w, "{case} {preset}: Q length");

    let max_diff = got
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let n = h * w;
    let (la, lb) = (argmax(&got, c, n), argmax(&want.data, c, n));
    let agree = la.iter().zip(&lb).filter(|(a, b)| a == b).count() as f64 / n as f64;
    eprintln!(
        "{case} {preset}: max |ΔQ| = {max_diff:.2e}, labels equal on {:.3}%",
        100.0 * agree
    );
    assert!(max_diff <= 1e-4, "{case} {preset}: max |ΔQ| = {max_diff}");
    assert!(agree >= 0.999, "{case} {preset}: labels equal on {agree}");
}

#[test]
fn parity_3_labels_37x53() {
    check("a37x53c3", Preset::Pydensecrf);
    check("a37x53c3", Preset::Deeplab);
}

#[test]
fn parity_5_labels_60x45() {
    check("b60x45c5", Preset::Pydensecrf);
    check("b60x45c5", Preset::Deeplab);
}

#[test]
fn parity_21_labels_16x23() {
    check("c16x23c21", Preset::Pydensecrf);
    check("c16x23c21", Preset::Deeplab);
}

/// Two labels take pydensecrf's scalar `seqCompute` path (a different slice rounding order).
#[test]
fn parity_2_labels_29x40() {
    check("d29x40c2", Preset::Pydensecrf);
    check("d29x40c2", Preset::Deeplab);
}
