//! The synthetic dataset: seeded, non-square street scenes of flat-coloured shapes.
//!
//! Six classes (`classnames/synthetic.txt`): background, person, car, tree, sky, road. Every
//! class has its own colour, so colour-based refiners (PAMR, DenseCRF) have real edges to
//! follow, and every image contains a person. The outline of each person is labelled 255
//! (ignore), like VOC's object boundaries, so the ignore path of the metric is exercised too.
//! Pixels get ±6 levels of seeded noise so that images are not piecewise constant.
//!
//! Generation uses [`SplitMix64`] only: the same `(n, seed)` gives the same bytes everywhere,
//! and image `i` does not depend on `n` (a larger set extends a smaller one).

use std::path::Path;

use segsweep_core::RgbImage;

use crate::classes::ClassNames;
use crate::dataset::{CustomConfig, DatasetInfo, Sample};
use crate::error::{DataError, Result};
use crate::io::{save_label_png, save_rgb_png, LabelMap, IGNORE_INDEX};
use crate::registry::SYNTHETIC_CLASSES;
use crate::subset::SplitMix64;

/// Class ids of the synthetic set.
pub mod class {
    pub const BACKGROUND: u32 = 0;
    pub const PERSON: u32 = 1;
    pub const CAR: u32 = 2;
    pub const TREE: u32 = 3;
    pub const SKY: u32 = 4;
    pub const ROAD: u32 = 5;
}

/// RGB colour of each class, indexed by class id.
pub const CLASS_COLOURS: [[u8; 3]; 6] = [
    [225, 215, 185], // background: beige
    [235, 160, 50],  // person: orange
    [200, 30, 40],   // car: red
    [40, 130, 50],   // tree: green
    [110, 170, 235], // sky: light blue
    [85, 85, 90],    // road: dark grey
];

/// Image sizes `(h, w)`, cycled by image index: all non-square, both orientations.
pub const SIZES: [(usize, usize); 4] = [(180, 260), (150, 200), (200, 140), (120, 170)];

/// The synthetic set's metadata (classes, person id 1, background id 0, ignore 255).
pub fn synthetic_info() -> DatasetInfo {
    DatasetInfo {
        name: "synthetic".into(),
        classes: synthetic_classes(),
        ignore_index: IGNORE_INDEX,
        reduce_zero_label: false,
        person_class: Some(class::PERSON as usize),
        background_class: Some(class::BACKGROUND as usize),
        defaults: None,
        expected_len: None,
        root: None,
    }
}

/// The synthetic class names.
pub fn synthetic_classes() -> ClassNames {
    ClassNames::parse(SYNTHETIC_CLASSES, "builtin:synthetic.txt")
        .unwrap_or_else(|e| panic!("embedded synthetic class file is malformed: {e}"))
}

/// `n` samples from `seed`, ids `synth_0000`, `synth_0001`, …
pub fn synthetic_dataset(n: usize, seed: u64) -> Vec<Sample> {
    (0..n).map(|i| synthetic_sample(i, seed)).collect()
}

/// Sample `i` of the set with `seed`.
pub fn synthetic_sample(i: usize, seed: u64) -> Sample {
    let (h, w) = SIZES[i % SIZES.len()];
    // Decorrelate images: mix the index into the seed through one SplitMix64 step.
    let mut rng = SplitMix64::new(
        SplitMix64::new(seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64(),
    );
    let mut scene = Scene::new(h, w);
    let (hf, wf) = (h as f64, w as f64);
    let sky_h = (hf * (0.15 + 0.2 * rng.unit())) as usize;
    scene.rect(0, 0, sky_h, w, class::SKY);
    let road_top = h - (hf * (0.12 + 0.13 * rng.unit())) as usize;
    scene.rect(road_top, 0, h, w, class::ROAD);
    if rng.unit() < 0.8 {
        let (cy, cx) = (hf * (0.3 + 0.2 * rng.unit()), wf * (0.1 + 0.8 * rng.unit()));
        scene.ellipse(
            cy,
            cx,
            hf * (0.1 + 0.08 * rng.unit()),
            wf * (0.06 + 0.05 * rng.unit()),
            class::TREE,
        );
    }
    if rng.unit() < 0.8 {
        let (ch, cw) = (
            (hf * (0.08 + 0.06 * rng.unit())) as usize,
            (wf * (0.18 + 0.12 * rng.unit())) as usize,
        );
        let left = rng.range(0, (w - cw) as u64) as usize;
        let bottom = (road_top + (h - road_top) / 2).min(h);
        scene.rect(
            bottom.saturating_sub(ch),
            left,
            bottom,
            left + cw,
            class::CAR,
        );
    }
    // The person: a head (ellipse) on a body (rectangle), standing on the road.
    let ph = hf * (0.3 + 0.15 * rng.unit());
    let pw = (ph * 0.3).max(4.0);
    let px = wf * 0.1 + (wf * 0.8 - pw) * rng.unit();
    let feet = (road_top as f64 + (hf - road_top as f64) * rng.unit()).min(hf - 1.0);
    let head_r = ph * 0.14;
    let body_top = feet - ph + 2.0 * head_r;
    scene.rect(
        body_top as usize,
        px as usize,
        feet as usize,
        (px + pw) as usize,
        class::PERSON,
    );
    scene.ellipse(
        feet - ph + head_r,
        px + pw / 2.0,
        head_r,
        head_r * 0.85,
        class::PERSON,
    );
    scene.ignore_outline(class::PERSON);
    let image = scene.render(&mut rng);
    Sample {
        id: format!("synth_{i:04}"),
        image,
        label: scene.label,
    }
}

/// Write `n` synthetic samples as a custom-dataset tree under `dir`
/// (`images/*.png`, `labels/*.png`, `classes.txt`) and return its [`CustomConfig`].
pub fn write_synthetic(dir: &Path, n: usize, seed: u64) -> Result<CustomConfig> {
    for sub in ["images", "labels"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, e))?;
    }
    let classes = dir.join("classes.txt");
    std::fs::write(&classes, SYNTHETIC_CLASSES).map_err(|e| DataError::io(&classes, e))?;
    for s in synthetic_dataset(n, seed) {
        save_rgb_png(dir.join("images").join(format!("{}.png", s.id)), &s.image)?;
        save_label_png(dir.join("labels").join(format!("{}.png", s.id)), &s.label)?;
    }
    Ok(CustomConfig {
        name: "synthetic".into(),
        root: dir.to_path_buf(),
        image_dir: "images".into(),
        label_dir: "labels".into(),
        split_file: None,
        img_suffix: ".png".into(),
        label_suffix: ".png".into(),
        classes: "classes.txt".into(),
        ignore_index: IGNORE_INDEX,
        reduce_zero_label: false,
        person_class: Some("person".into()),
        background_class: Some("background".into()),
    })
}

/// A label map being painted; shapes later in the painting order cover earlier ones.
struct Scene {
    label: LabelMap,
}

impl Scene {
    fn new(h: usize, w: usize) -> Scene {
        Scene {
            label: LabelMap::filled(h, w, class::BACKGROUND),
        }
    }

    /// Fill rows `top..bottom`, columns `left..right` (clipped to the image).
    fn rect(&mut self, top: usize, left: usize, bottom: usize, right: usize, c: u32) {
        let (h, w) = (self.label.h, self.label.w);
        for y in top.min(h)..bottom.min(h) {
            for x in left.min(w)..right.min(w) {
                self.label.data[y * w + x] = c;
            }
        }
    }

    /// Fill the ellipse with centre `(cy, cx)` and radii `(ry, rx)`.
    fn ellipse(&mut self, cy: f64, cx: f64, ry: f64, rx: f64, c: u32) {
        let (h, w) = (self.label.h, self.label.w);
        for y in 0..h {
            for x in 0..w {
                let (dy, dx) = ((y as f64 + 0.5 - cy) / ry, (x as f64 + 0.5 - cx) / rx);
                if dy * dy + dx * dx <= 1.0 {
                    self.label.data[y * w + x] = c;
                }
            }
        }
    }

    /// Label 255 on pixels of class `c` that touch another class (4-neighbourhood).
    fn ignore_outline(&mut self, c: u32) {
        let (h, w) = (self.label.h, self.label.w);
        let src = self.label.data.clone();
        for y in 0..h {
            for x in 0..w {
                if src[y * w + x] != c {
                    continue;
                }
                let edge = (y > 0 && src[(y - 1) * w + x] != c)
                    || (y + 1 < h && src[(y + 1) * w + x] != c)
                    || (x > 0 && src[y * w + x - 1] != c)
                    || (x + 1 < w && src[y * w + x + 1] != c);
                if edge {
                    self.label.data[y * w + x] = IGNORE_INDEX;
                }
            }
        }
    }

    /// Colour each pixel by its class (ignored outline pixels keep the person colour), plus
    /// ±6 levels of noise.
    fn render(&self, rng: &mut SplitMix64) -> RgbImage {
        let mut data = Vec::with_capacity(self.label.data.len() * 3);
        for &l in &self.label.data {
            let c = if l == IGNORE_INDEX { class::PERSON } else { l };
            for &v in &CLASS_COLOURS[c as usize] {
                let noise = rng.range(0, 13) as i32 - 6;
                data.push((i32::from(v) + noise).clamp(0, 255) as u8);
            }
        }
        RgbImage {
            h: self.label.h,
            w: self.label.w,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_non_square_with_person_and_ignore() {
        let a = synthetic_dataset(5, 3);
        let b = synthetic_dataset(5, 3);
        assert_eq!(a, b);
        assert_ne!(a[0].image.data, synthetic_dataset(1, 4)[0].image.data);
        // A larger set extends a smaller one.
        assert_eq!(synthetic_dataset(2, 3)[..], a[..2]);
        for s in &a {
            assert_ne!(s.image.h, s.image.w);
            assert_eq!((s.label.h, s.label.w), (s.image.h, s.image.w));
            assert_eq!(s.image.data.len(), s.image.h * s.image.w * 3);
            assert!(s.label.data.contains(&class::PERSON), "{}", s.id);
            assert!(s.label.data.contains(&IGNORE_INDEX), "{}", s.id);
            assert!(s.label.data.iter().all(|&v| v < 6 || v == IGNORE_INDEX));
        }
        assert_eq!((a[0].image.h, a[0].image.w), (180, 260));
        assert_eq!((a[2].image.h, a[2].image.w), (200, 140));
    }

    #[test]
    fn colours_follow_labels() {
        let s = synthetic_sample(1, 9);
        for (i, &l) in s.label.data.iter().enumerate() {
            if l == IGNORE_INDEX {
                continue;
            }
            let want = CLASS_COLOURS[l as usize];
            for (&got, &w) in s.image.data[i * 3..i * 3 + 3].iter().zip(&want) {
                assert!((i32::from(got) - i32::from(w)).abs() <= 6);
            }
        }
    }

    #[test]
    fn written_tree_reads_back_as_a_custom_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_synthetic(dir.path(), 3, 1).unwrap();
        let ds = crate::Dataset::custom(&cfg).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.info.person_class, Some(1));
        assert_eq!(ds.info.background_class, Some(0));
        let mem = synthetic_dataset(3, 1);
        for (i, m) in mem.iter().enumerate() {
            let s = ds.load(i).unwrap();
            assert_eq!(&s, m);
        }
    }
}
