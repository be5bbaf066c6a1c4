//! Prediction overlays and label PNGs: bytes in, PNG files out.

use std::path::Path;

use crate::records::write_atomic;
use crate::{ReportError, Result};

/// The colour of label `id`: PASCAL VOC's palette (bit-interleaved), so VOC predictions look
/// familiar; 255 (ignore) is white.
pub fn palette(id: u32) -> [u8; 3] {
    if id == 255 {
        return [255, 255, 255];
    }
    let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
    let mut c = id;
    for j in 0..8 {
        r |= ((c & 1) as u8) << (7 - j);
        g |= (((c >> 1) & 1) as u8) << (7 - j);
        b |= (((c >> 2) & 1) as u8) << (7 - j);
        c >>= 3;
    }
    [r, g, b]
}

fn encode_png(path: &Path, img: image::DynamicImage) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| ReportError::Chart {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
    write_atomic(path, bytes.get_ref())
}

/// Save the image `(h, w, 3)` blended 50/50 with the palette colours of `labels` `(h, w)`.
pub fn save_overlay(path: &Path, h: usize, w: usize, rgb: &[u8], labels: &[u32]) -> Result<()> {
    let bad = || ReportError::Chart {
        path: path.display().to_string(),
        msg: format!(
            "overlay of a {h}×{w} image needs {} bytes and {} labels",
            h * w * 3,
            h * w
        ),
    };
    if rgb.len() != h * w * 3 || labels.len() != h * w {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(rgb.len());
    for (px, &l) in rgb.chunks_exact(3).zip(labels) {
        let c = palette(l);
        for k in 0..3 {
            out.push(((px[k] as u16 + c[k] as u16) / 2) as u8);
        }
    }
    let img = image::RgbImage::from_raw(w as u32, h as u32, out).ok_or_else(bad)?;
    encode_png(path, image::DynamicImage::ImageRgb8(img))
}

/// Save label ids `(h, w)` as a single-channel PNG (8-bit when every id fits, else 16-bit).
pub fn save_label_ids(path: &Path, h: usize, w: usize, labels: &[u32]) -> Result<()> {
    let bad = |msg: String| ReportError::Chart {
        path: path.display().to_string(),
        msg,
    };
    if labels.len() != h * w {
        return Err(bad(format!("{} labels for a {h}×{w} map", labels.len())));
    }
    let img = if labels.iter().all(|&l| l <= 255) {
        let data: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
        image::DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w as u32, h as u32, data)
                .ok_or_else(|| bad("size".into()))?,
        )
    } else {
        let data: Vec<u16> = labels.iter().map(|&l| l.min(65535) as u16).collect();
        image::DynamicImage::ImageLuma16(
            image::ImageBuffer::from_raw(w as u32, h as u32, data)
                .ok_or_else(|| bad("size".into()))?,
        )
    };
    encode_png(path, img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_palette_matches_the_known_colours() {
        assert_eq!(palette(0), [0, 0, 0]);
        assert_eq!(palette(1), [128, 0, 0]);
        assert_eq!(palette(15), [192, 128, 128]); // person
        assert_eq!(palette(255), [255, 255, 255]);
    }

    #[test]
    fn overlay_and_label_png_round_trip_on_a_non_square_map() {
        let dir = tempfile::tempdir().unwrap();
        let (h, w) = (3, 5);
        let labels: Vec<u32> = (0..15).map(|i| i % 4).collect();
        save_label_ids(&dir.path().join("l.png"), h, w, &labels).unwrap();
        let back = image::open(dir.path().join("l.png")).unwrap().to_luma8();
        assert_eq!(back.dimensions(), (5, 3));
        assert_eq!(
            back.as_raw().iter().map(|&v| v as u32).collect::<Vec<_>>(),
            labels
        );
        save_overlay(&dir.path().join("o.png"), h, w, &[100; 45], &labels).unwrap();
        let o = image::open(dir.path().join("o.png")).unwrap().to_rgb8();
        assert_eq!(o.get_pixel(1, 0).0, [114, 50, 50]); // (100+128)/2, 100/2, 100/2
    }
}
