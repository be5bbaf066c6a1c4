//! `load_rgb` decodes JPEGs bit-identically to cv2.imdecode (mmseg's loader), EXIF orientation
//! included. Fixtures from `tests/fixtures/make_jpeg_fixtures.py` (OpenCV 5.0.0).

use std::path::PathBuf;

use segsweep_data::load_rgb;

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jpeg"))
}

#[test]
fn jpeg_decode_matches_cv2_exactly() {
    let index = std::fs::read_to_string(dir().join("index.txt")).unwrap();
    let mut n = 0;
    for line in index.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, h, w): (&str, usize, usize) =
            (f[0], f[1].parse().unwrap(), f[2].parse().unwrap());
        let want = std::fs::read(dir().join(format!("{name}.rgb"))).unwrap();
        let got = load_rgb(dir().join(format!("{name}.jpg"))).unwrap();
        assert_eq!((got.h, got.w), (h, w), "{name}");
        // A truncated `.rgb` golden (or decode) must fail here, not shorten the zip below.
        assert!(h * w > 0, "{name}: empty image in index.txt");
        assert_eq!(want.len(), h * w * 3, "{name}: golden length");
        assert_eq!(got.data.len(), want.len(), "{name}: decoded length");
        let diff = got.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{name}: {diff} bytes differ from cv2");
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn truncated_jpeg_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(dir().join("cv2_420_q90.jpg")).unwrap();
    let p = tmp.path().join("cut.jpg");
    std::fs::write(&p, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = load_rgb(&p).unwrap_err().to_string();
    assert!(e.contains("cut.jpg") && e.contains("truncated"), "{e}");
}
