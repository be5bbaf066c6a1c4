//! Helpers that build tiny dataset trees in exact benchmark layouts.
#![allow(dead_code)]

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use segsweep_data::{save_label_png, LabelMap};

/// A non-square test image `(h, w)` whose pixels depend on `seed`, saved by extension.
pub fn write_image(path: &Path, h: u32, w: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(3),
            (y as u8).wrapping_add(seed),
            seed,
        ])
    });
    img.save(path).unwrap();
}

/// A grayscale label PNG.
pub fn write_label(path: &Path, label: &LabelMap) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    save_label_png(path, label).unwrap();
}

/// A VOC-style palette label PNG (8-bit indices with a colour palette).
pub fn write_palette_label(path: &Path, label: &LabelMap) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = File::create(path).unwrap();
    let mut enc = png::Encoder::new(BufWriter::new(file), label.w as u32, label.h as u32);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    // VOC's bit-interleaved colour map: index i never maps to grey (i, i, i).
    let palette: Vec<u8> = (0..256u32)
        .flat_map(|i| {
            let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
            let mut c = i;
            for j in 0..8 {
                r |= ((c & 1) as u8) << (7 - j);
                g |= (((c >> 1) & 1) as u8) << (7 - j);
                b |= (((c >> 2) & 1) as u8) << (7 - j);
                c >>= 3;
            }
            [r, g, b]
        })
        .collect();
    enc.set_palette(palette);
    let mut wr = enc.write_header().unwrap();
    let bytes: Vec<u8> = label.data.iter().map(|&v| v as u8).collect();
    wr.write_image_data(&bytes).unwrap();
}

/// A label `(h, w)` cycling through `ids`.
pub fn label_cycling(h: usize, w: usize, ids: &[u32]) -> LabelMap {
    LabelMap::new(h, w, (0..h * w).map(|i| ids[i % ids.len()]).collect()).unwrap()
}

pub fn write_text(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}
