//! LoftUp CPU benchmark (not a test): time and peak memory for one VOC-sized image.
//!
//! Usage: `loftup_bench <checkpoint.bin> <case>`, one case per process so that the peak RSS
//! (`VmHWM`) belongs to that case alone. Cases:
//! - `crops-s<S>`: SCLIP slide inference on a 336×500 image = 8 crops of 224², each upsampled
//!   from its 14×14 grid to 224/S (per crop, as the plugin does).
//! - `whole-s<S>`: the whole 336×500 image at once from a 21×31 grid, output 336/S × 500/S.
//!
//! Inputs are random (seeded): timing does not depend on values. `bench/loftup.sh` runs all.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use segsweep_plugin_loftup::{area_resize, LoftUp, HEADS};

/// Peak and current resident set size in MiB, from /proc/self/status.
fn rss_mib() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(ckpt), Some(case)) = (args.get(1), args.get(2)) else {
        return Err(
            "usage: loftup_bench <checkpoint.bin> <crops-s1|crops-s2|whole-s1|...> [tile_rows]"
                .into(),
        );
    };
    let tile_rows: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let dev = Device::Cpu;
    let t = Instant::now();
    let model = LoftUp::load(Path::new(ckpt), HEADS, &dev)?;
    let load_s = t.elapsed().as_secs_f64();
    let (_, base) = rss_mib();
    let (kind, stride) = case
        .split_once("-s")
        .and_then(|(k, s)| Some((k.to_string(), s.parse::<usize>().ok()?)))
        .ok_or("case must be crops-s<N> or whole-s<N>")?;
    let dim = model.config().dim;
    // (number of forward calls, LR grid, guidance size)
    let (calls, grid, size): (usize, (usize, usize), (usize, usize)) = match kind.as_str() {
        "crops" => (8, (14, 14), (224, 224)),
        "whole" => (1, (21, 31), (336, 500)),
        _ => return Err("case must be crops-s<N> or whole-s<N>".into()),
    };
    let out_size = (size.0.div_ceil(stride), size.1.div_ceil(stride));
    let t = Instant::now();
    for i in 0..calls {
        let lr = Tensor::randn(0f32, 1., (1, dim, grid.0, grid.1), &dev)?;
        let img = Tensor::randn(0f32, 1., (1, 3, size.0, size.1), &dev)?;
        let g = if stride > 1 {
            area_resize(&img, out_size.0, out_size.1)?
        } else {
            img
        };
        let out = model.forward_tiled(&lr, &g, tile_rows)?;
        if i == 0 {
            assert_eq!(out.dims(), &[1, dim, out_size.0, out_size.1]);
        }
        drop(out.to_dtype(DType::F32)?);
    }
    let secs = t.elapsed().as_secs_f64();
    let (peak, _) = rss_mib();
    println!(
        "case={case} calls={calls} grid={}x{} out={}x{} tile_rows={tile_rows} params={} \
         load_s={load_s:.2} s_per_image={secs:.2} s_per_call={:.2} peak_rss_mib={peak:.0} \
         peak_over_loaded_mib={:.0}",
        grid.0,
        grid.1,
        out_size.0,
        out_size.1,
        model.num_params(),
        secs / calls as f64,
        peak - base
    );
    Ok(())
}
