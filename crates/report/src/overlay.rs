//! Prediction overlays: bytes in, PNG files out.
//!
//! Label-id PNGs are not written here: `segsweep_data::save_label_png` is the one writer
//! (8-bit, or 16-bit when an id exceeds 255; an id above 65535 is an error naming the file),
//! shared by `data prepare`, the synthetic set and `predict`.

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
        .map_err(|e| ReportError::Png {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
    write_atomic(path, bytes.get_ref())
}

/// Save the image `(h, w, 3)` blended 50/50 with the palette colours of `labels` `(h, w)`.
pub fn save_overlay(path: &Path, h: usize, w: usize, rgb: &[u8], labels: &[u32]) -> Result<()> {
    let bad = || ReportError::Png {
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
    fn overlay_of_a_non_square_map() {
        let dir = tempfile::tempdir().unwrap();
        let (h, w) = (3, 5);
        let labels: Vec<u32> = (0..15).map(|i| i % 4).collect();
        save_overlay(&dir.path().join("o.png"), h, w, &[100; 45], &labels).unwrap();
        let o = image::open(dir.path().join("o.png")).unwrap().to_rgb8();
        assert_eq!(o.dimensions(), (5, 3));
        assert_eq!(o.get_pixel(1, 0).0, [114, 50, 50]); // (100+128)/2, 100/2, 100/2
    }

    /// Quality review C19: overlay failures said "cannot draw chart".
    #[test]
    fn quality_c19_overlay_errors_name_the_png_not_a_chart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.overlay.png");
        let e = save_overlay(&p, 3, 5, &[0; 44], &[0; 15])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.overlay.png") && e.contains("cannot write PNG") && !e.contains("chart"),
            "{e}"
        );
        assert!(!p.exists());
    }
}
