//! DBSCAN with scikit-learn's exact semantics (`sklearn.cluster.DBSCAN`, Euclidean metric).
//!
//! CLIPtrase clusters the rows of its self-correlation with scikit-learn, and on real and random
//! weights some pairs sit within 1e-4 of `eps`, so every rule matters:
//! - distances are computed in f64 from the f32 inputs;
//! - `q` is a neighbour of `p` when `distance <= eps` (inclusive), and `p` is its own neighbour;
//! - `p` is a core point when it has at least `min_samples` neighbours (itself included);
//! - clusters grow from core points taken in index order, each with a depth-first stack that
//!   expands only core points; a border point joins the first cluster that reaches it and is
//!   never relabelled (sklearn `_dbscan_inner.pyx`);
//! - points reached by no cluster are noise, label −1; clusters are numbered 0, 1, … in the
//!   order of their first core point.

/// Cluster `n` points of dimension `dim` stored row-major in `points` (`n · dim` values).
/// Returns one label per point: `0..k` for clusters, `-1` for noise.
///
/// Cost: `O(n² · dim)` for the neighbourhoods (n = 196 or 441 patches in CLIPtrase).
pub fn dbscan(points: &[f32], n: usize, dim: usize, eps: f64, min_samples: usize) -> Vec<i32> {
    assert_eq!(
        points.len(),
        n * dim,
        "dbscan: points must hold n·dim values"
    );
    // scikit-learn's brute-force radius query compares squared distances with eps².
    let eps_sq = eps * eps;
    let mut neighbours: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        let a = &points[i * dim..(i + 1) * dim];
        for j in i..n {
            let b = &points[j * dim..(j + 1) * dim];
            let d2: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| {
                    let d = f64::from(*x) - f64::from(*y);
                    d * d
                })
                .sum();
            if d2 <= eps_sq {
                neighbours[i].push(j);
                if j != i {
                    neighbours[j].push(i);
                }
            }
        }
    }
    let core: Vec<bool> = neighbours
        .iter()
        .map(|nb| nb.len() >= min_samples)
        .collect();
    let mut labels = vec![-1i32; n];
    let mut next = 0i32;
    let mut stack = Vec::new();
    for seed in 0..n {
        if labels[seed] != -1 || !core[seed] {
            continue;
        }
        stack.push(seed);
        while let Some(p) = stack.pop() {
            if labels[p] != -1 {
                continue;
            }
            labels[p] = next;
            if core[p] {
                for &q in &neighbours[p] {
                    if labels[q] == -1 {
                        stack.push(q);
                    }
                }
            }
        }
        next += 1;
    }
    labels
}
