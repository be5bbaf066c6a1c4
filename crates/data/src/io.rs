//! Image and label-map I/O.
//!
//! Label PNGs are decoded with the `png` crate directly, without transformations, because the
//! `image` crate always expands palette images to RGB: a VOC label would come back as colours
//! instead of class indices. This mirrors mmseg, whose `LoadAnnotations` reads labels with
//! Pillow in `unchanged` mode (palette → indices, `L` → values, `I;16` → values).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use image::{ImageDecoder, ImageReader};
use segsweep_core::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The ignore index of every benchmark: pixels with this label are not scored.
pub const IGNORE_INDEX: u32 = 255;

/// A label map `(h, w)`, row-major, one `u32` class id per pixel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelMap {
    pub h: usize,
    pub w: usize,
    /// `h * w` ids, row-major.
    pub data: Vec<u32>,
}

impl LabelMap {
    /// Wrap `h * w` row-major ids; errors if the length does not match.
    pub fn new(h: usize, w: usize, data: Vec<u32>) -> Result<LabelMap> {
        if data.len() != h * w {
            return Err(DataError::Metric(format!(
                "label map of {h}×{w} needs {} ids, got {}",
                h * w,
                data.len()
            )));
        }
        Ok(LabelMap { h, w, data })
    }

    /// A map of `(h, w)` filled with `value`.
    pub fn filled(h: usize, w: usize, value: u32) -> LabelMap {
        LabelMap {
            h,
            w,
            data: vec![value; h * w],
        }
    }

    /// mmseg's `reduce_zero_label`: 0 → 255, 255 stays 255, every other id − 1.
    pub fn reduce_zero_label(&mut self) {
        for v in &mut self.data {
            // mmseg computes (x − 1) on uint8 (0 wraps to 255) and then sets 254 back to 255;
            // on u32 the same result is spelled out.
            *v = match *v {
                0 | IGNORE_INDEX => IGNORE_INDEX,
                x => x - 1,
            };
        }
    }

    /// The largest id in the map (0 for an empty map).
    pub fn max_id(&self) -> u32 {
        self.data.iter().copied().max().unwrap_or(0)
    }
}

/// Load a PNG or JPEG as `(h, w, 3)` RGB bytes, with EXIF orientation applied. Errors name
/// the file.
///
/// This reproduces cv2's `imdecode(IMREAD_COLOR)` as mmseg's `LoadImageFromFile` calls it:
/// JPEGs are decoded by libjpeg-turbo's code (via mozjpeg, islow IDCT, fancy upsampling), which
/// is bit-identical to cv2 on the files we tried (`crates/data/README.md`); grey images are
/// replicated to RGB; alpha is dropped; the EXIF orientation is applied.
///
// Deviation: libjpeg (and so cv2) decodes a truncated JPEG with a warning and grey fill; we
// reject a JPEG with no end-of-image marker after its last scan, so that a broken download is
// an error naming the file instead of a silently wrong sample.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.starts_with(&[0xFF, 0xD8]) {
        if !jpeg_is_complete(&bytes) {
            return Err(DataError::decode(
                path,
                "JPEG",
                "truncated: no end-of-image marker after the last scan",
            ));
        }
        match decode_jpeg_libjpeg(&bytes) {
            Ok(img) => return Ok(img),
            // CMYK/YCCK JPEGs cannot be converted to RGB by libjpeg; the `image` crate can.
            Err(e) => tracing::debug!(
                "{}: libjpeg decode failed ({e}); using the image crate",
                path.display()
            ),
        }
    }
    load_rgb_image_crate(path, &bytes)
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan (FF DA).
///
/// Entropy-coded data never holds FF DA or FF D9 (FF bytes are stuffed as FF 00), and EXIF
/// thumbnails come before the main image's scans, so this catches files cut short.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(i) => bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// Decode a JPEG with libjpeg (mozjpeg) to RGB and apply its EXIF orientation.
fn decode_jpeg_libjpeg(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let run =
        || -> std::io::Result<(usize, usize, Vec<u8>, Option<image::metadata::Orientation>)> {
            let d =
                mozjpeg::Decompress::with_markers(&[mozjpeg::Marker::APP(1)]).from_mem(bytes)?;
            let orientation = d
                .markers()
                .filter_map(|m| m.data.strip_prefix(b"Exif\0\0"))
                .find_map(image::metadata::Orientation::from_exif_chunk);
            let mut img = d.rgb()?;
            let (w, h) = (img.width(), img.height());
            let px: Vec<[u8; 3]> = img.read_scanlines()?;
            img.finish()?;
            Ok((h, w, px.into_iter().flatten().collect(), orientation))
        };
    // mozjpeg reports libjpeg's fatal errors by unwinding; keep them as errors.
    let (h, w, data, orientation) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .map_err(|_| "libjpeg error".to_string())?
        .map_err(|e| e.to_string())?;
    if data.len() != h * w * 3 {
        return Err(format!("decoded {} bytes for {h}×{w}×3", data.len()));
    }
    match orientation {
        None | Some(image::metadata::Orientation::NoTransforms) => Ok(RgbImage { h, w, data }),
        Some(o) => {
            let buf = image::RgbImage::from_raw(w as u32, h as u32, data).ok_or("bad buffer")?;
            let mut dynimg = image::DynamicImage::ImageRgb8(buf);
            dynimg.apply_orientation(o);
            let rgb = dynimg.to_rgb8();
            let (w, h) = (rgb.width() as usize, rgb.height() as usize);
            Ok(RgbImage {
                h,
                w,
                data: rgb.into_raw(),
            })
        }
    }
}

/// Decode with the `image` crate (PNG, and JPEGs libjpeg cannot convert).
fn load_rgb_image_crate(path: &Path, bytes: &[u8]) -> Result<RgbImage> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| DataError::decode(path, "image", e))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| DataError::decode(path, "image", e))?;
    let mut img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| DataError::decode(path, "image", e))?;
    img.apply_orientation(orientation);
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    RgbImage::new(h, w, rgb.into_raw()).map_err(|e| DataError::decode(path, "image", e))
}

/// Load a label PNG as class ids `(h, w)`.
///
/// Palette PNGs give their palette **indices** (VOC), grayscale PNGs their values (8 or 16 bit).
/// RGB(A) and grey+alpha PNGs are rejected: their colours are not class ids.
pub fn load_label(path: impl AsRef<Path>) -> Result<LabelMap> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| DataError::decode(path, "label PNG", e))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| DataError::decode(path, "label PNG", "image too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| DataError::decode(path, "label PNG", e))?;
    let (h, w) = (info.height as usize, info.width as usize);
    let bits = info.bit_depth as usize;
    match info.color_type {
        png::ColorType::Indexed | png::ColorType::Grayscale => {}
        other => {
            return Err(DataError::decode(
                path,
                "label PNG",
                format!(
                    "colour type {other:?} holds colours, not class ids; expected a palette or \
                     grayscale PNG (convert colour-coded labels to ids first)"
                ),
            ))
        }
    }
    let mut data = Vec::with_capacity(h * w);
    for row in buf.chunks(info.line_size).take(h) {
        unpack_row(row, bits, w, &mut data);
    }
    LabelMap::new(h, w, data)
}

/// The text chunks (`tEXt`, `zTXt`, `iTXt`) before a PNG's image data, as (keyword, text):
/// `predict` records there what made a prediction ([`PREDICTION_WEIGHTS_KEY`] and the model),
/// so `eval` can label its numbers. Reads the header only.
pub fn png_text(path: impl AsRef<Path>) -> Result<Vec<(String, String)>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(|e| DataError::decode(path, "PNG", e))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    out.extend(
        info.compressed_latin1_text
            .iter()
            .filter_map(|t| Some((t.keyword.clone(), t.get_text().ok()?))),
    );
    out.extend(
        info.utf8_text
            .iter()
            .filter_map(|t| Some((t.keyword.clone(), t.get_text().ok()?))),
    );
    Ok(out)
}

/// Text keyword of a prediction PNG naming the kind of weights that made it (`real`,
/// `random-fixture`, `synthetic`), as a sweep's `weights` column does.
pub const PREDICTION_WEIGHTS_KEY: &str = "segsweep:weights";
/// Text keyword of a prediction PNG naming the model (`model.source`) that made it.
pub const PREDICTION_MODEL_KEY: &str = "segsweep:model";

/// Unpack one PNG row of `w` samples at `bits` per sample (1, 2, 4, 8 or 16, big-endian).
fn unpack_row(row: &[u8], bits: usize, w: usize, out: &mut Vec<u32>) {
    match bits {
        16 => out.extend(
            row.chunks_exact(2)
                .take(w)
                .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]]))),
        ),
        8 => out.extend(row.iter().take(w).map(|&b| u32::from(b))),
        _ => {
            let per_byte = 8 / bits;
            let mask = (1u8 << bits) - 1;
            for x in 0..w {
                let byte = row[x / per_byte];
                let shift = 8 - bits * (x % per_byte + 1);
                out.push(u32::from((byte >> shift) & mask));
            }
        }
    }
}

/// Save a label map as a grayscale PNG: 8 bit when every id fits in a byte, else 16 bit.
///
/// This is segsweep's one label-PNG writer (`data prepare`, the synthetic set, `predict`).
/// An id above 65535 does not fit a PNG and is an error naming the file and the id, never
/// clamped. The file is written to a temporary name and renamed, so a crash never leaves a
/// truncated label behind (re-running `data prepare` relies on finished files being whole).
pub fn save_label_png(path: impl AsRef<Path>, label: &LabelMap) -> Result<()> {
    save_label_png_with(path, label, false, &[])
}

/// [`save_label_png`], 16-bit also when `sixteen` is set (a map of more than 256 classes whose
/// ids happen to fit a byte, so that the depth follows the class count, not the content), with
/// `text` as PNG text chunks (keyword, UTF-8 text: `iTXt`).
pub fn save_label_png_with(
    path: impl AsRef<Path>,
    label: &LabelMap,
    sixteen: bool,
    text: &[(&str, &str)],
) -> Result<()> {
    let path = path.as_ref();
    let max = label.max_id();
    if max > u32::from(u16::MAX) {
        return Err(DataError::IdOutOfRange {
            path: path.to_path_buf(),
            id: max,
            n_classes: usize::from(u16::MAX) + 1,
            ignore: IGNORE_INDEX,
            hint: Some("PNG labels hold at most 16-bit ids (0–65535)".into()),
        });
    }
    if label.data.len() != label.h * label.w || label.h == 0 || label.w == 0 {
        return Err(DataError::Encode {
            path: path.to_path_buf(),
            what: "label PNG",
            msg: format!(
                "{} ids for a {}×{} (h×w) map; a PNG needs a non-empty map",
                label.data.len(),
                label.h,
                label.w
            ),
        });
    }
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), label.w as u32, label.h as u32);
    enc.set_color(png::ColorType::Grayscale);
    for (k, v) in text {
        enc.add_itxt_chunk(k.to_string(), v.to_string())
            .map_err(|e| DataError::Encode {
                path: path.to_path_buf(),
                what: "label PNG",
                msg: format!("text chunk `{k}`: {e}"),
            })?;
    }
    let bytes: Vec<u8> = if max <= 255 && !sixteen {
        enc.set_depth(png::BitDepth::Eight);
        label.data.iter().map(|&v| v as u8).collect()
    } else {
        enc.set_depth(png::BitDepth::Sixteen);
        label
            .data
            .iter()
            .flat_map(|&v| (v as u16).to_be_bytes())
            .collect()
    };
    let encode = || -> std::result::Result<(), png::EncodingError> {
        let mut writer = enc.write_header()?;
        writer.write_image_data(&bytes)?;
        writer.finish()
    };
    encode().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::Encode {
            path: path.to_path_buf(),
            what: "label PNG",
            msg: e.to_string(),
        }
    })?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

/// Save `(h, w, 3)` RGB bytes as a PNG (used by the synthetic dataset and tests).
pub fn save_rgb_png(path: impl AsRef<Path>, img: &RgbImage) -> Result<()> {
    let path = path.as_ref();
    let buf = image::RgbImage::from_raw(img.w as u32, img.h as u32, img.data.clone()).ok_or_else(
        || DataError::Encode {
            path: path.to_path_buf(),
            what: "image PNG",
            msg: "byte count does not match h×w×3".into(),
        },
    )?;
    let tmp = tmp_path(path);
    buf.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            DataError::Encode {
                path: path.to_path_buf(),
                what: "image PNG",
                msg: e.to_string(),
            }
        })?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

/// `dir/name.ext` → `dir/.name.ext.tmp` (same directory, so the rename is atomic).
pub(crate) fn tmp_path(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sixteen` makes a map whose ids fit a byte 16-bit (predict: more than 256 classes), and
    /// text chunks come back from `png_text`; the ids read back unchanged either way.
    #[test]
    fn label_pngs_take_a_forced_depth_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let label = LabelMap::new(2, 3, vec![0, 1, 2, 3, 4, 255]).unwrap();
        let depth = |p: &Path| {
            let r = png::Decoder::new(BufReader::new(File::open(p).unwrap()))
                .read_info()
                .unwrap();
            r.info().bit_depth
        };
        let eight = dir.path().join("8.png");
        save_label_png_with(&eight, &label, false, &[]).unwrap();
        assert_eq!(depth(&eight), png::BitDepth::Eight);
        let sixteen = dir.path().join("16.png");
        save_label_png_with(
            &sixteen,
            &label,
            true,
            &[(PREDICTION_WEIGHTS_KEY, "synthetic")],
        )
        .unwrap();
        assert_eq!(depth(&sixteen), png::BitDepth::Sixteen);
        assert_eq!(load_label(&sixteen).unwrap(), label);
        assert_eq!(
            png_text(&sixteen).unwrap(),
            [(PREDICTION_WEIGHTS_KEY.to_string(), "synthetic".to_string())]
        );
    }

    fn write_png(
        path: &Path,
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
        palette: Option<Vec<u8>>,
    ) {
        let file = File::create(path).unwrap();
        let mut enc = png::Encoder::new(BufWriter::new(file), w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(p) = palette {
            enc.set_palette(p);
        }
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(data).unwrap();
    }

    #[test]
    fn palette_png_gives_indices_not_colours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("voc.png");
        // 2×3 (h×w), indices 0, 1, 15, 255; palette entries are colours that differ from the ids.
        let mut palette = vec![0u8; 256 * 3];
        palette[3..6].copy_from_slice(&[128, 0, 0]);
        palette[15 * 3..15 * 3 + 3].copy_from_slice(&[192, 128, 128]);
        palette[255 * 3..].copy_from_slice(&[224, 224, 192]);
        let ids = [0u8, 1, 15, 255, 15, 0];
        write_png(
            &p,
            3,
            2,
            png::ColorType::Indexed,
            png::BitDepth::Eight,
            &ids,
            Some(palette),
        );
        let l = load_label(&p).unwrap();
        assert_eq!((l.h, l.w), (2, 3));
        assert_eq!(l.data, vec![0, 1, 15, 255, 15, 0]);
        // `image` would expand the palette: make sure that is what we avoided.
        let rgb = load_rgb(&p).unwrap();
        assert_eq!(&rgb.data[3..6], &[128, 0, 0]);
    }

    #[test]
    fn packed_4bit_palette_and_16bit_gray() {
        let dir = tempfile::tempdir().unwrap();
        let p4 = dir.path().join("p4.png");
        // w = 3: row bytes hold 2 samples each, the last nibble is padding.
        write_png(
            &p4,
            3,
            2,
            png::ColorType::Indexed,
            png::BitDepth::Four,
            &[0x12, 0x30, 0xF0, 0x50],
            Some(vec![0u8; 16 * 3]),
        );
        assert_eq!(load_label(&p4).unwrap().data, vec![1, 2, 3, 15, 0, 5]);
        let p16 = dir.path().join("g16.png");
        write_png(
            &p16,
            2,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            &[0x01, 0x2C, 0x00, 0x07],
            None,
        );
        assert_eq!(load_label(&p16).unwrap().data, vec![300, 7]);
    }

    #[test]
    fn rgb_label_truncated_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let rgb = dir.path().join("rgb.png");
        write_png(
            &rgb,
            1,
            1,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            &[1, 2, 3],
            None,
        );
        let e = load_label(&rgb).unwrap_err().to_string();
        assert!(e.contains("rgb.png") && e.contains("not class ids"), "{e}");

        let good = dir.path().join("good.png");
        save_label_png(&good, &LabelMap::filled(40, 30, 3)).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.png");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = load_label(&cut).unwrap_err().to_string();
        assert!(e.contains("cut.png"), "{e}");
        let e = load_rgb(&cut).unwrap_err().to_string();
        assert!(e.contains("cut.png"), "{e}");
        let e = load_label(dir.path().join("none.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.png"), "{e}");
    }

    #[test]
    fn save_load_roundtrip_8_and_16_bit_non_square() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u32> = (0..(5 * 7)).map(|i| (i * 7) % 256).collect();
        let l = LabelMap::new(5, 7, data).unwrap();
        let p = dir.path().join("l8.png");
        save_label_png(&p, &l).unwrap();
        assert_eq!(load_label(&p).unwrap(), l);
        let l16 = LabelMap::new(2, 3, vec![0, 255, 256, 1000, 65535, 7]).unwrap();
        let p = dir.path().join("l16.png");
        save_label_png(&p, &l16).unwrap();
        assert_eq!(load_label(&p).unwrap(), l16);
    }

    /// Quality review C23/D29: the two label writers disagreed on ids above 65535 (one
    /// clamped them); the one writer left refuses them, naming the file and the id.
    #[test]
    fn quality_d29_ids_above_16_bit_and_empty_maps_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.png");
        let l = LabelMap::new(1, 3, vec![0, 70000, 5]).unwrap();
        let e = save_label_png(&p, &l).unwrap_err();
        assert!(
            matches!(e, DataError::IdOutOfRange { id: 70000, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("big.png"), "{e}");
        assert!(!p.exists());
        let p = dir.path().join("empty.png");
        let e = save_label_png(&p, &LabelMap::filled(0, 4, 0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("empty.png") && e.contains("cannot encode") && !e.contains(".empty.png.tmp"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn reduce_zero_label_matches_mmseg() {
        let mut l = LabelMap::new(1, 4, vec![0, 1, 150, 255]).unwrap();
        l.reduce_zero_label();
        assert_eq!(l.data, vec![255, 0, 149, 255]);
    }

    #[test]
    fn rgb_roundtrip_keeps_h_w_order() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(4 * 6 * 3)).map(|i| i as u8).collect();
        let img = RgbImage::new(4, 6, data).unwrap();
        let p = dir.path().join("x.png");
        save_rgb_png(&p, &img).unwrap();
        let back = load_rgb(&p).unwrap();
        assert_eq!((back.h, back.w), (4, 6));
        assert_eq!(back.data, img.data);
    }
}
