//! Training-free regional clues on a crop's feature grid (`variant = "phase2a"`).
//!
//! Pure functions: the region layout (plain `f64` arithmetic, so it can be checked by hand)
//! and the tensor computation that uses it.

use candle_core::{Device, Tensor};
use segsweep_core::tensor::l2_normalise;
use segsweep_core::{CoreError, Result};

/// One region along one axis: the half-open interval `[lo, hi)` in grid units (a cell `i` spans
/// `[i, i + 1)`, its centre is `i + 0.5`) and the cells whose centres fall inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisRegion {
    /// Lower bound of the interval, in cells.
    pub lo: f64,
    /// Upper bound of the interval, in cells.
    pub hi: f64,
    /// First member cell.
    pub start: usize,
    /// One past the last member cell.
    pub end: usize,
}

impl AxisRegion {
    /// Centre of the interval, in cells.
    pub fn centre(&self) -> f64 {
        0.5 * (self.lo + self.hi)
    }

    /// Length of the interval, in cells.
    pub fn size(&self) -> f64 {
        self.hi - self.lo
    }
}

/// Split an axis of `len` cells into `count` intervals of equal length `s` that overlap by the
/// fraction `overlap` of `s` and together span exactly `[0, len]`:
/// `s = len / (count − (count − 1)·overlap)`, `lo_k = k·(s·(1 − overlap))`, `hi_k = lo_k + s`.
/// Cell `i` belongs to interval `k` when its centre `i + 0.5` lies in `[lo_k, hi_k)`, so that
/// without overlap the intervals partition the cells.
/// Intervals without a member cell (only when `len` is smaller than about `count`) are dropped.
///
/// On a 14-cell axis with 4 regions and overlap 0.25: `s = 14 / 3.25 ≈ 4.308`, members
/// `0..4`, `3..8`, `6..11`, `10..14`.
pub fn axis_regions(len: usize, count: usize, overlap: f64) -> Vec<AxisRegion> {
    let len_f = len as f64;
    let s = len_f / (count as f64 - (count as f64 - 1.0) * overlap);
    let step = s * (1.0 - overlap);
    (0..count)
        .filter_map(|k| {
            let lo = k as f64 * step;
            let hi = lo + s;
            let inside = |i: usize| {
                let c = i as f64 + 0.5;
                c >= lo && c < hi
            };
            let start = (0..len).find(|&i| inside(i))?;
            let end = (start..len).find(|&i| !inside(i)).unwrap_or(len);
            Some(AxisRegion { lo, hi, start, end })
        })
        .collect()
}

/// The two linear maps of the regional step for a grid `(h, w)`, as dense `f32` matrices:
/// `pool` `(K, N)` averages the cells of each of the K regions; `spread` `(N, K)` maps region
/// features back to cells. Row `p` of `spread` holds, for the regions that contain cell `p`,
/// `exp(−d²/(2σ²))` normalised to sum 1, where
/// `d² = ((y_p − cy_k)/s_y,k)² + ((x_p − cx_k)/s_x,k)²` is the squared distance from the cell
/// centre to the region centre in units of the region's size; regions that do not contain `p`
/// get weight 0. The weights are computed as a softmax of the exponents (the row's largest
/// exponent subtracted first), so they stay finite and sum to 1 for any σ > 0.
pub fn region_maps(
    grid: (usize, usize),
    count: usize,
    overlap: f64,
    sigma: f64,
) -> (Vec<f32>, Vec<f32>, usize) {
    let (h, w) = grid;
    let n = h * w;
    let rows = axis_regions(h, count, overlap);
    let cols = axis_regions(w, count, overlap);
    let k = rows.len() * cols.len();
    let mut pool = vec![0f32; k * n];
    // Exponents −d²/(2σ²) first; regions that do not contain the cell stay at −∞ (weight 0).
    let mut exponents = vec![f64::NEG_INFINITY; n * k];
    for (ry, r) in rows.iter().enumerate() {
        for (rx, c) in cols.iter().enumerate() {
            let region = ry * cols.len() + rx;
            let members = ((r.end - r.start) * (c.end - c.start)) as f64;
            for y in r.start..r.end {
                for x in c.start..c.end {
                    let p = y * w + x;
                    pool[region * n + p] = (1.0 / members) as f32;
                    let dy = (y as f64 + 0.5 - r.centre()) / r.size();
                    let dx = (x as f64 + 0.5 - c.centre()) / c.size();
                    exponents[p * k + region] = -(dy * dy + dx * dx) / (2.0 * sigma * sigma);
                }
            }
        }
    }
    let mut spread = vec![0f32; n * k];
    for p in 0..n {
        let row = &exponents[p * k..(p + 1) * k];
        // Softmax of the exponents: subtracting the row's largest one leaves the normalised
        // weights unchanged but keeps the nearest region at exp(0) = 1. Without it, every
        // weight of a cell underflows to 0 for small σ (below about 0.016 on 14 cells) and the
        // normalisation divides 0 by 0.
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            // No region contains the cell; cannot happen, as the intervals cover every axis.
            continue;
        }
        let weights: Vec<f64> = row.iter().map(|e| (e - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        for (j, v) in weights.iter().enumerate() {
            spread[p * k + j] = (v / total) as f32;
        }
    }
    (pool, spread, k)
}

/// The settings of the regional step (see the crate docs for each symbol).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionalParams {
    /// Regions per axis.
    pub num_regions: usize,
    /// Overlap of neighbouring regions as a fraction of the region size, in `[0, 1)`.
    pub region_overlap: f64,
    /// β: weight of the regional features against the global one.
    pub regional_weight: f64,
    /// ρ: weight of the original (normalised) features in the output.
    pub residual_weight: f64,
    /// σ of the Gaussian distance weights, in units of the region size.
    pub distance_sigma: f64,
}

impl RegionalParams {
    /// The ranges the formulas need, as a parameter error naming the `clip-rc` key. The plugin's
    /// schema enforces narrower ranges; this guards direct callers of [`regional_clues`].
    pub fn check(&self) -> Result<()> {
        let bad = |key: &str, msg: String, hint: &str| {
            Err(CoreError::Param {
                plugin: crate::NAME.into(),
                key: key.into(),
                msg,
                hint: Some(hint.into()),
            })
        };
        if self.num_regions == 0 {
            return bad(
                "num_regions",
                "must be at least 1, got 0".into(),
                "regions per axis; the design notes use 4",
            );
        }
        if !(0.0..1.0).contains(&self.region_overlap) {
            return bad(
                "region_overlap",
                format!("must lie in [0, 1), got {}", self.region_overlap),
                "a fraction of the region size; the design notes use 0.25",
            );
        }
        if !(self.distance_sigma > 0.0 && self.distance_sigma.is_finite()) {
            return bad(
                "distance_sigma",
                format!("must be a finite number > 0, got {}", self.distance_sigma),
                "σ in region sizes; the default is 0.5",
            );
        }
        Ok(())
    }
}

/// Apply regional clues to crop features `(B, E, h, w) → (B, E, h, w)`.
///
/// With f̂ the L2-normalised features, `g` the mean of f̂ over the crop, `m_k` the mean of f̂
/// over region k and `reg_p = Σ_k spread[p, k]·m_k`:
/// `out_p = ρ·f̂_p + (1 − ρ)·((1 − β)·g + β·reg_p)`. The output is not normalised.
pub fn regional_clues(feats: &Tensor, p: &RegionalParams) -> Result<Tensor> {
    let (b, e, h, w) = feats.dims4()?;
    p.check()?;
    let n = h * w;
    let dev: &Device = feats.device();
    let f = feats.reshape((b, e, n))?.transpose(1, 2)?.contiguous()?; // (B, N, E)
    let f_hat = l2_normalise(&f, 2)?;
    let (pool, spread, k) = region_maps((h, w), p.num_regions, p.region_overlap, p.distance_sigma);
    let pool = Tensor::from_vec(pool, (1, k, n), dev)?.to_dtype(f.dtype())?;
    let spread = Tensor::from_vec(spread, (1, n, k), dev)?.to_dtype(f.dtype())?;
    let region_means = pool.broadcast_matmul(&f_hat)?; // (B, K, E)
    let regional = spread.broadcast_matmul(&region_means)?; // (B, N, E)
    let global = f_hat.mean_keepdim(1)?; // (B, 1, E)
    let rho = p.residual_weight;
    let beta = p.regional_weight;
    let mix = ((regional * beta)?.broadcast_add(&(global * (1.0 - beta))?))?;
    let out = ((f_hat * rho)? + (mix * (1.0 - rho))?)?;
    Ok(out.transpose(1, 2)?.contiguous()?.reshape((b, e, h, w))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(len: usize, count: usize, overlap: f64) -> Vec<(usize, usize)> {
        axis_regions(len, count, overlap)
            .iter()
            .map(|r| (r.start, r.end))
            .collect()
    }

    #[test]
    fn default_layout_on_14_cells() {
        // s = 14 / 3.25 = 4.3077, step 3.2308: [0, 4.31], [3.23, 7.54], [6.46, 10.77], [9.69, 14].
        assert_eq!(
            members(14, 4, 0.25),
            vec![(0, 4), (3, 8), (6, 11), (10, 14)]
        );
        let r = axis_regions(14, 4, 0.25);
        assert!(
            (r[3].hi - 14.0).abs() < 1e-12,
            "the last interval ends at the border"
        );
        assert!((r[1].size() - 14.0 / 3.25).abs() < 1e-12);
    }

    #[test]
    fn no_overlap_partitions_the_axis() {
        assert_eq!(members(8, 4, 0.0), vec![(0, 2), (2, 4), (4, 6), (6, 8)]);
        // s = 4.5: cell 4 (centre 4.5) starts the second half-open interval.
        assert_eq!(members(9, 2, 0.0), vec![(0, 4), (4, 9)]);
        assert_eq!(members(5, 1, 0.25), vec![(0, 5)]);
    }

    #[test]
    fn every_cell_is_covered_and_weights_sum_to_one() {
        for (grid, n, o) in [((14, 14), 4, 0.25), ((6, 10), 3, 0.4), ((2, 3), 4, 0.25)] {
            let (pool, spread, k) = region_maps(grid, n, o, 0.5);
            let cells = grid.0 * grid.1;
            for p in 0..cells {
                let s: f32 = spread[p * k..(p + 1) * k].iter().sum();
                assert!(
                    (s - 1.0).abs() < 1e-6,
                    "{grid:?}: cell {p} weights sum to {s}"
                );
            }
            for r in 0..k {
                let s: f32 = pool[r * cells..(r + 1) * cells].iter().sum();
                assert!(
                    (s - 1.0).abs() < 1e-5,
                    "{grid:?}: region {r} pool sums to {s}"
                );
            }
        }
    }

    fn run(f: &[[f32; 3]; 2], e: usize, p: RegionalParams) -> Vec<f32> {
        // f: per channel, a 2×3 grid → (1, E, 2, 3) with E = 2 channels.
        let data: Vec<f32> = f.iter().flatten().copied().collect();
        let t = Tensor::from_vec(data, (1, e, 1, 3), &Device::Cpu).unwrap();
        regional_clues(&t, &p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// One row of three unit vectors a = (1, 0), b = (0, 1), c = (0.6, 0.8); two column
    /// regions with overlap 0.5: s = 3 / 1.5 = 2, members {0, 1} and {1, 2}; the middle cell is
    /// equally far (0.25 region sizes) from both centres.
    #[test]
    fn hand_computed_regional_means() {
        let f = [[1.0, 0.0, 0.6], [0.0, 1.0, 0.8]]; // channel-major (E=2, h=1, w=3)
        let p = RegionalParams {
            num_regions: 2,
            region_overlap: 0.5,
            regional_weight: 1.0,
            residual_weight: 0.0,
            distance_sigma: 0.5,
        };
        let out = run(&f, 2, p);
        // m0 = (a + b)/2 = (0.5, 0.5), m1 = (b + c)/2 = (0.3, 0.9); cell 1 = (m0 + m1)/2.
        let want = [0.5, 0.4, 0.3, 0.5, 0.7, 0.9];
        for (g, w) in out.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{out:?} vs {want:?}");
        }
        // β = 0: every cell is the crop mean g = (1.6/3, 1.8/3).
        let out = run(
            &f,
            2,
            RegionalParams {
                regional_weight: 0.0,
                ..p
            },
        );
        let want = [1.6 / 3.0, 1.6 / 3.0, 1.6 / 3.0, 0.6, 0.6, 0.6];
        for (g, w) in out.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{out:?} vs {want:?}");
        }
        // ρ = 1: the normalised input.
        let out = run(
            &f,
            2,
            RegionalParams {
                residual_weight: 1.0,
                ..p
            },
        );
        for (g, w) in out.iter().zip(f.iter().flatten()) {
            assert!((g - w).abs() < 1e-6, "{out:?}");
        }
    }

    /// quality review A2: at the schema's smallest σ (0.01) every plain `exp(−d²/2σ²)` of an
    /// edge cell underflows to 0 and the normalisation gave 0/0 = NaN (56 of 196 cells on the
    /// default 14×14 layout, 100 with overlap 0). Each cell must now take its nearest region.
    #[test]
    fn small_sigma_gives_finite_weights_on_the_nearest_region() {
        for overlap in [0.25, 0.0] {
            let (_, spread, k) = region_maps((14, 14), 4, overlap, 0.01);
            assert!(
                spread.iter().all(|v| v.is_finite()),
                "overlap {overlap}: NaN weights"
            );
            for p in 0..14 * 14 {
                let row = &spread[p * k..(p + 1) * k];
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-6, "cell {p} weights sum to {s}");
            }
        }
        // Cell (0, 3) lies in row region 0 and column regions 0 and 1; column region 0's centre
        // is nearer (0.3125 vs 0.4375 region sizes), so it takes all the weight.
        let (_, spread, k) = region_maps((14, 14), 4, 0.25, 0.01);
        let cell = &spread[3 * k..4 * k];
        assert_eq!(cell[0], 1.0, "{cell:?}");
        // The features stay finite through the whole step.
        let f = Tensor::randn(0f32, 1.0, (1, 8, 14, 14), &Device::Cpu).unwrap();
        let p = RegionalParams {
            num_regions: 4,
            region_overlap: 0.25,
            regional_weight: 0.6,
            residual_weight: 0.5,
            distance_sigma: 0.01,
        };
        let out: Vec<f32> = regional_clues(&f, &p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
    }

    /// quality review C20: an invalid setting names the plugin and the key, with a hint.
    #[test]
    fn invalid_settings_name_the_parameter() {
        let f = Tensor::ones((1, 2, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let ok = RegionalParams {
            num_regions: 2,
            region_overlap: 0.25,
            regional_weight: 0.6,
            residual_weight: 0.5,
            distance_sigma: 0.5,
        };
        for (p, key) in [
            (
                RegionalParams {
                    distance_sigma: 0.0,
                    ..ok
                },
                "distance_sigma",
            ),
            (
                RegionalParams {
                    distance_sigma: f64::NAN,
                    ..ok
                },
                "distance_sigma",
            ),
            (
                RegionalParams {
                    region_overlap: 1.0,
                    ..ok
                },
                "region_overlap",
            ),
            (
                RegionalParams {
                    num_regions: 0,
                    ..ok
                },
                "num_regions",
            ),
        ] {
            let e = regional_clues(&f, &p).unwrap_err();
            assert!(
                matches!(&e, CoreError::Param { plugin, key: k, hint: Some(_), .. }
                    if plugin == "clip-rc" && k == key),
                "{e}"
            );
            let msg = e.to_string();
            assert!(msg.contains("`clip-rc`") && msg.contains(key), "{msg}");
        }
    }

    /// Cell 3 of a 14-cell axis lies in intervals 0 and 1, at 0.3125 and 0.4375 region sizes
    /// from their centres: weights ∝ exp(−d²/(2·0.5²)).
    #[test]
    fn overlap_weights_prefer_the_nearer_centre() {
        let (_, spread, k) = region_maps((1, 14), 4, 0.25, 0.5);
        // Row axis of length 1 with 4 intervals: only intervals whose span contains 0.5 exist.
        let rows = axis_regions(1, 4, 0.25).len();
        assert_eq!(k, rows * 4);
        let w0 = (-(0.3125f64.powi(2)) / 0.5).exp();
        let w1 = (-(0.4375f64.powi(2)) / 0.5).exp();
        let cell = &spread[3 * k..4 * k];
        // Sum the weights of each column interval over the row intervals.
        let col = |c: usize| -> f64 { (0..rows).map(|r| cell[r * 4 + c] as f64).sum() };
        assert!((col(0) - w0 / (w0 + w1)).abs() < 1e-6, "{cell:?}");
        assert!((col(1) - w1 / (w0 + w1)).abs() < 1e-6, "{cell:?}");
        assert_eq!(col(2) + col(3), 0.0);
    }
}
