//! `.npy` input and output of `(C, H, W)` maps, for refining probabilities outside a pipeline
//! (`segsweep densecrf --probs P.npy --out Q.npy`).

use std::path::Path;

use ndarray::Array3;

use crate::error::{CrfError, Result};

/// A `(c, h, w)` f32 map, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Map3 {
    pub data: Vec<f32>,
    /// `(c, h, w)`.
    pub shape: (usize, usize, usize),
}

/// Read a 3-D `.npy` array `(c, h, w)` of float32 (float64 is accepted and converted).
/// C- and Fortran-order files both give a row-major result.
pub fn read_map_npy(path: &Path) -> Result<Map3> {
    let err = |msg: String| CrfError::Npy {
        path: path.display().to_string(),
        msg,
    };
    let arr: Array3<f32> = match ndarray_npy::read_npy::<_, Array3<f32>>(path) {
        Ok(a) => a,
        Err(e32) => match ndarray_npy::read_npy::<_, Array3<f64>>(path) {
            Ok(a) => a.mapv(|v| v as f32),
            Err(_) => {
                return Err(err(format!(
                    "cannot read a 3-D float32 array (c, h, w): {e32} \
                     (hint: np.save(path, probs.astype(np.float32)) with probs of shape (C, H, W))"
                )))
            }
        },
    };
    let (c, h, w) = arr.dim();
    Ok(Map3 {
        data: arr.iter().copied().collect(),
        shape: (c, h, w),
    })
}

/// Write a `(c, h, w)` f32 map as a C-order `.npy` file.
pub fn write_map_npy(path: &Path, map: &Map3) -> Result<()> {
    let err = |msg: String| CrfError::Npy {
        path: path.display().to_string(),
        msg,
    };
    let arr = Array3::from_shape_vec(map.shape, map.data.clone()).map_err(|e| {
        err(format!(
            "shape {:?} does not fit {} values: {e}",
            map.shape,
            map.data.len()
        ))
    })?;
    ndarray_npy::write_npy(path, &arr).map_err(|e| err(format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_keeps_shape_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.npy");
        let map = Map3 {
            data: (0..2 * 3 * 5).map(|v| v as f32 * 0.5).collect(),
            shape: (2, 3, 5),
        };
        write_map_npy(&path, &map).unwrap();
        assert_eq!(read_map_npy(&path).unwrap(), map);
        let missing = read_map_npy(&dir.path().join("nope.npy")).unwrap_err();
        assert!(missing.to_string().contains("nope.npy"), "{missing}");
    }
}
