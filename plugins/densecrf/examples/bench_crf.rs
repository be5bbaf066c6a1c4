//! Refine `.npy` probabilities with the CRF and time it; the Rust side of `bench/densecrf.sh`.
//!
//! ```text
//! cargo run --release -p segsweep-plugin-densecrf --example bench_crf -- \
//!     IMAGE.npy PROBS.npy OUT.npy PRESET ITERATIONS REPEATS
//! ```
//! IMAGE.npy: `(h, w, 3)` uint8; PROBS.npy: `(c, h, w)` float32; OUT.npy receives Q `(c, h, w)`.
//! Prints the median wall time of REPEATS runs (arrays already in memory, as on the Python side).

use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array3;
use segsweep_core::RgbImage;
use segsweep_plugin_densecrf::npy::{read_map_npy, write_map_npy, Map3};
use segsweep_plugin_densecrf::{refine_probs, CrfParams, Preset};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, probs, out, preset, iterations, repeats] = args.as_slice() else {
        return Err(
            "usage: bench_crf IMAGE.npy PROBS.npy OUT.npy PRESET ITERATIONS REPEATS".into(),
        );
    };
    let img: Array3<u8> = ndarray_npy::read_npy(PathBuf::from(image))?;
    let (h, w, _) = img.dim();
    let image = RgbImage::new(h, w, img.iter().copied().collect())?;
    let probs = read_map_npy(&PathBuf::from(probs))?;
    let (c, _, _) = probs.shape;
    let params = CrfParams {
        iterations: iterations.parse()?,
        ..CrfParams::preset(preset.parse::<Preset>()?)
    };

    let mut times = Vec::new();
    let mut q = Vec::new();
    for _ in 0..repeats.parse::<usize>()?.max(1) {
        let t0 = Instant::now();
        q = refine_probs(&image, &probs.data, c, h, w, &params)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "segsweep: {h}x{w}, {c} labels, preset {preset}, {} iterations, {} threads: median {:.3} s over {} runs",
        params.iterations,
        rayon::current_num_threads(),
        median,
        times.len()
    );
    write_map_npy(
        &PathBuf::from(out),
        &Map3 {
            data: q,
            shape: (c, h, w),
        },
    )?;
    Ok(())
}
