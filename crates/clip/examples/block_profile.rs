//! Where a ViT-B/16 block's time goes, op by op (not a test; numbers depend on the machine
//! and its load):
//!
//! ```text
//! cargo run --release -p segsweep-clip --example block_profile -- [batch] [cpu|cuda:N] [f32|f16|bf16]
//! ```
//!
//! On a GPU (a binary built with the `cuda` feature, see `scripts/build-cuda.sh --bench`) every
//! timed op ends with a device synchronisation, so the times are per op including its launch.
//!
//! Runs the ops of one pre-LN block on random f32 activations `(batch, 197, 768)` with candle's
//! composed ops (the generic path) and prints, per op, wall milliseconds and GFLOP/s for the
//! matmuls; then the ops of `segsweep_kernels::block` that replace candle's elementwise ones, and
//! the whole block both ways end to end (with the largest difference between the two); and the
//! throughput of one large gemm `(1576, 768) · (768, 3072)`, which bounds what any f32
//! ViT-B/16 can reach on this machine. On the CPU the fused ops run their single-threaded
//! reference loops, so only the GPU numbers of that section mean anything.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn time<T>(dev: &Device, reps: usize, mut f: impl FnMut() -> candle_core::Result<T>) -> Res<f64> {
    f()?; // warm-up
    dev.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        dev.synchronize()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best * 1e3)
}

fn main() -> Res<()> {
    let arg = |i: usize| std::env::args().nth(i);
    let batch: usize = arg(1).map(|b| b.parse()).transpose()?.unwrap_or(8);
    let dev = match arg(2).as_deref() {
        None | Some("cpu") => Device::Cpu,
        Some(d) => segsweep_kernels::cuda_device(d.trim_start_matches("cuda:").parse()?)?,
    };
    let dtype = match arg(3).as_deref() {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some("bf16") => DType::BF16,
        Some(o) => return Err(format!("dtype {o}: expected f32, f16 or bf16").into()),
    };
    println!("batch {batch}, {dev:?}, {dtype:?}");
    let (t, d, h, inter) = (197usize, 768usize, 12usize, 3072usize);
    let hd = d / h;
    let r = |s: &[usize]| Tensor::randn(0f32, 0.02, s, &dev)?.to_dtype(dtype);
    let x = r(&[batch, t, d])?;
    let (w_qkv, b_qkv) = (r(&[3 * d, d])?, r(&[3 * d])?);
    let (w_o, b_o) = (r(&[d, d])?, r(&[d])?);
    let (w1, b1) = (r(&[inter, d])?, r(&[inter])?);
    let (w2, b2) = (r(&[d, inter])?, r(&[d])?);
    let (ln_w, ln_b) = (r(&[d])?, r(&[d])?);
    let reps = 5;
    let rows = batch * t;
    let gf = |flop: usize, ms: f64| flop as f64 / ms / 1e6;
    let mut total = 0.0;
    let mut row = |name: &str, ms: f64, flop: usize| {
        total += ms;
        if flop > 0 {
            println!("{name:<34} {ms:8.2} ms  {:6.1} GFLOP/s", gf(flop, ms));
        } else {
            println!("{name:<34} {ms:8.2} ms");
        }
    };

    let x2 = x.reshape((rows, d))?;
    if dtype != DType::F32 {
        // segsweep's LayerNorm in a half dtype: f32 weights, the input cast up and back.
        let (w32, b32) = (ln_w.to_dtype(DType::F32)?, ln_b.to_dtype(DType::F32)?);
        row(
            "layer_norm via f32 (2 casts)",
            time(&dev, reps, || {
                candle_nn::ops::layer_norm(&x.to_dtype(DType::F32)?, &w32, &b32, 1e-5)?
                    .to_dtype(dtype)
            })?,
            0,
        );
    }
    row(
        "layer_norm",
        time(&dev, reps, || {
            candle_nn::ops::layer_norm(&x, &ln_w, &ln_b, 1e-5)
        })?,
        0,
    );
    let qkv_mm = || x2.matmul(&w_qkv.t()?);
    row(
        "qkv matmul",
        time(&dev, reps, qkv_mm)?,
        2 * rows * d * 3 * d,
    );
    let y = qkv_mm()?;
    row(
        "qkv bias broadcast_add",
        time(&dev, reps, || y.broadcast_add(&b_qkv))?,
        0,
    );
    let y = y.reshape((batch, t, 3, h, hd))?;
    let split = || y.permute((2, 0, 3, 1, 4))?.contiguous();
    row(
        "head split (permute+contiguous)",
        time(&dev, reps, split)?,
        0,
    );
    let s3 = split()?;
    let (q, k, v) = (s3.get(0)?, s3.get(1)?, s3.get(2)?);
    row(
        "q scale (affine)",
        time(&dev, reps, || q.affine(0.125, 0.))?,
        0,
    );
    let att_flop = 2 * batch * h * t * t * hd;
    row(
        "q kᵀ batched matmul",
        time(&dev, reps, || q.matmul(&k.t()?))?,
        att_flop,
    );
    let s = q.matmul(&k.t()?)?;
    row(
        "softmax_last_dim",
        time(&dev, reps, || candle_nn::ops::softmax_last_dim(&s))?,
        0,
    );
    let p = candle_nn::ops::softmax_last_dim(&s)?;
    row(
        "p v batched matmul",
        time(&dev, reps, || p.matmul(&v))?,
        att_flop,
    );
    let o = p.matmul(&v)?;
    let merge = || o.transpose(1, 2)?.reshape((batch, t, d));
    row(
        "head merge (transpose+reshape)",
        time(&dev, reps, merge)?,
        0,
    );
    let om = merge()?.reshape((rows, d))?;
    row(
        "out_proj matmul",
        time(&dev, reps, || om.matmul(&w_o.t()?))?,
        2 * rows * d * d,
    );
    let a = om.matmul(&w_o.t()?)?;
    row(
        "out bias broadcast_add",
        time(&dev, reps, || a.broadcast_add(&b_o))?,
        0,
    );
    row("residual add", time(&dev, reps, || &x2 + &a)?, 0);
    row(
        "fc1 matmul",
        time(&dev, reps, || x2.matmul(&w1.t()?))?,
        2 * rows * d * inter,
    );
    let f = x2.matmul(&w1.t()?)?;
    row(
        "fc1 bias broadcast_add",
        time(&dev, reps, || f.broadcast_add(&b1))?,
        0,
    );
    row(
        "quick_gelu composed",
        time(&dev, reps, || &f * candle_nn::ops::sigmoid(&(&f * 1.702)?)?)?,
        0,
    );
    row(
        "fc2 matmul",
        time(&dev, reps, || f.matmul(&w2.t()?))?,
        2 * rows * inter * d,
    );
    let g = f.matmul(&w2.t()?)?;
    row(
        "fc2 bias broadcast_add",
        time(&dev, reps, || g.broadcast_add(&b2))?,
        0,
    );
    row("residual add", time(&dev, reps, || &x2 + &g)?, 0);
    println!("{:<34} {total:8.2} ms  (× 11 blocks in the prefix)", "sum");
    let _ = D::Minus1;

    // The same block with segsweep's fused ops (`segsweep_kernels::block`, the CUDA kernels of
    // kernels/fused.cu on a GPU; their single-threaded reference loops on the CPU), op by op
    // and end to end against the composed block.
    use segsweep_kernels::block::{self as fused, Act};
    println!("-- fused ops (segsweep_kernels::block)");
    let (w32, b32) = (ln_w.to_dtype(DType::F32)?, ln_b.to_dtype(DType::F32)?);
    let ms = time(&dev, reps, || fused::layer_norm(&x2, &w32, &b32, 1e-5))?;
    println!("{:<34} {ms:8.2} ms", "layer_norm (f32 weights)");
    let y3 = qkv_mm()?.reshape((batch, t, 3 * d))?;
    let ms = time(&dev, reps, || fused::split_qkv(&y3, &b_qkv, h, 0.125))?;
    println!("{:<34} {ms:8.2} ms", "qkv bias + head split + q scale");
    let ms = time(&dev, reps, || fused::merge_heads(&o))?;
    println!("{:<34} {ms:8.2} ms", "head merge");
    let qs = q.affine(0.125, 0.)?;
    let ms = time(&dev, reps, || fused::attention(&qs, &k, &v))?;
    println!("{:<34} {ms:8.2} ms", "attention (scores+softmax+pv+merge)");
    let ms = time(&dev, reps, || {
        fused::bias_act(&a, &b_o, Act::Identity, Some(&x2))
    })?;
    println!("{:<34} {ms:8.2} ms", "out bias + residual");
    let ms = time(&dev, reps, || {
        fused::bias_act(&f, &b1, Act::QuickGelu, None)
    })?;
    println!("{:<34} {ms:8.2} ms", "fc1 bias + QuickGELU");
    let ms = time(&dev, reps, || {
        fused::bias_act(&g, &b2, Act::Identity, Some(&x2))
    })?;
    println!("{:<34} {ms:8.2} ms", "fc2 bias + residual");

    let ln_composed = |z: &Tensor| -> candle_core::Result<Tensor> {
        if dtype == DType::F32 {
            candle_nn::ops::layer_norm(z, &w32, &b32, 1e-5)
        } else {
            candle_nn::ops::layer_norm(&z.to_dtype(DType::F32)?, &w32, &b32, 1e-5)?.to_dtype(dtype)
        }
    };
    let composed_block = || -> candle_core::Result<Tensor> {
        let hn = ln_composed(&x2)?;
        let y = hn.matmul(&w_qkv.t()?)?.broadcast_add(&b_qkv)?;
        let y = y
            .reshape((batch, t, 3, h, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (y.get(0)?.affine(0.125, 0.)?, y.get(1)?, y.get(2)?);
        let p = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let m = p.matmul(&v)?.transpose(1, 2)?.reshape((rows, d))?;
        let a = (&x2 + m.matmul(&w_o.t()?)?.broadcast_add(&b_o)?)?;
        let f = ln_composed(&a)?.matmul(&w1.t()?)?.broadcast_add(&b1)?;
        let f = (&f * candle_nn::ops::sigmoid(&(&f * 1.702)?)?)?;
        &a + f.matmul(&w2.t()?)?.broadcast_add(&b2)?
    };
    let fused_block = || -> candle_core::Result<Tensor> {
        let hn = fused::layer_norm(&x2, &w32, &b32, 1e-5)?;
        let y = hn.matmul(&w_qkv.t()?)?.reshape((batch, t, 3 * d))?;
        let y = fused::split_qkv(&y, &b_qkv, h, 0.125)?;
        let (q, k, v) = (y.get(0)?, y.get(1)?, y.get(2)?);
        let m = fused::attention(&q, &k, &v)?.reshape((rows, d))?;
        let a = fused::bias_act(&m.matmul(&w_o.t()?)?, &b_o, Act::Identity, Some(&x2))?;
        let hn = fused::layer_norm(&a, &w32, &b32, 1e-5)?;
        let f = fused::bias_act(&hn.matmul(&w1.t()?)?, &b1, Act::QuickGelu, None)?;
        fused::bias_act(&f.matmul(&w2.t()?)?, &b2, Act::Identity, Some(&a))
    };
    let (tc, tf) = (
        time(&dev, reps, composed_block)?,
        time(&dev, reps, fused_block)?,
    );
    let diff = (composed_block()? - fused_block()?)?
        .to_dtype(DType::F32)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!(
        "whole block: composed {tc:.2} ms, fused {tf:.2} ms ({:.2}× faster); max |difference| {diff:.2e}",
        tc / tf
    );

    // One large gemm: what the matmuls of this model can reach at best.
    let a = r(&[rows, d])?;
    let b = r(&[d, inter])?;
    let ms = time(&dev, reps, || a.matmul(&b))?;
    println!(
        "gemm ({rows}, {d}) · ({d}, {inter}): {ms:.2} ms = {:.1} GFLOP/s ({} rayon threads)",
        gf(2 * rows * d * inter, ms),
        rayon::current_num_threads()
    );
    Ok(())
}
