//! Choosing which samples to run: all, the first N, or a seeded random subset.
//!
//! The random subset uses our own SplitMix64 generator rather than `rand`, whose algorithms
//! are not promised to stay the same across versions or platforms: a seed written into a spec
//! must select the same images everywhere, forever.

use serde::{Deserialize, Serialize};

/// Which samples of a dataset to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Subset {
    /// Every sample, in split order.
    All,
    /// The first `n` samples in split order (the old `--num-samples`).
    First { n: usize },
    /// `n` samples drawn without replacement with SplitMix64 from `seed`, returned in split
    /// order.
    Random { n: usize, seed: u64 },
}

impl Subset {
    /// Indices into a dataset of `len` samples, ascending. `n > len` takes everything.
    pub fn indices(&self, len: usize) -> Vec<usize> {
        match *self {
            Subset::All => (0..len).collect(),
            Subset::First { n } => (0..n.min(len)).collect(),
            Subset::Random { n, seed } => {
                let n = n.min(len);
                let mut rng = SplitMix64::new(seed);
                let mut idx: Vec<usize> = (0..len).collect();
                // Partial Fisher–Yates: the first n slots end up a uniform sample.
                for i in 0..n {
                    let j = i + rng.below((len - i) as u64) as usize;
                    idx.swap(i, j);
                }
                idx.truncate(n);
                idx.sort_unstable();
                idx
            }
        }
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and fully specified.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound > 0`), by multiply-shift (bias below 2^-40 for our sizes).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A value in `lo..hi` (`lo < hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    /// A float in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // Published test vector: seed 1234567 (from the reference C implementation).
        let mut r = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            vec![
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn subsets_are_sorted_deterministic_and_bounded() {
        assert_eq!(Subset::First { n: 3 }.indices(10), vec![0, 1, 2]);
        assert_eq!(Subset::First { n: 30 }.indices(4), vec![0, 1, 2, 3]);
        assert_eq!(Subset::All.indices(3), vec![0, 1, 2]);
        let a = Subset::Random { n: 5, seed: 7 }.indices(100);
        let b = Subset::Random { n: 5, seed: 7 }.indices(100);
        let c = Subset::Random { n: 5, seed: 8 }.indices(100);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 5);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|&i| i < 100));
        assert_eq!(
            Subset::Random { n: 9, seed: 1 }.indices(4),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn subset_parses_from_toml_shaped_json() {
        let s: Subset = serde_json::from_str(r#"{"kind":"random","n":10,"seed":3}"#).unwrap();
        assert_eq!(s, Subset::Random { n: 10, seed: 3 });
    }
}
