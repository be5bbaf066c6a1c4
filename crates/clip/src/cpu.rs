//! Fused, multi-threaded f32 kernels for the transformer block on the CPU.
//!
//! Composed of candle ops, one block on the CPU spent a third of its time outside the matmuls,
//! mostly single-threaded: bias and residual adds, the head split/merge copies, a batched matmul
//! over (batch × heads) small matrices that parallelises badly, and the scaling pass. Here a
//! block is a chain of plain slice functions: a bias (and residual) is written into the
//! destination before the `gemm` call accumulates into it, and attention runs per
//! `(batch, head)` in parallel with rayon, reading q, k and v in place from the fused qkv rows
//! and writing each head's output into its column band of the merged `(batch·tokens, dim)`
//! matrix, so that no transpose is ever materialised.
//!
//! Everything here is f32, row-major and contiguous; callers fall back to the composed candle
//! ops for other devices and dtypes (see [`crate::block::Block::forward_recording`]).

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};
use rayon::prelude::*;

/// Defines `fn name(args)` from a slice loop, compiled twice: for baseline x86-64 (SSE2, what
/// the crate is built for) and for AVX2 + FMA, picked at run time by what the CPU has. Helpers
/// it calls must be `#[inline(always)]` to be compiled into the wide version too.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),*) $body:block) => {
        $(#[$m])*
        fn $name($($a: $t),*) {
            #[inline(always)]
            fn generic($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($a: $t),*) {
                    generic($($a),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($a),*) };
                }
            }
            generic($($a),*)
        }
    };
}

/// A read guard on a contiguous f32 CPU tensor, to borrow its elements as a slice.
pub(crate) struct F32View<'a> {
    guard: StorageRef<'a>,
    start: usize,
    len: usize,
}

impl<'a> F32View<'a> {
    /// `None` unless `t` is an f32 CPU tensor with a contiguous layout.
    pub(crate) fn new(t: &'a Tensor) -> Option<F32View<'a>> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))).then_some(F32View {
            guard,
            start,
            len: end - start,
        })
    }

    pub(crate) fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            // `new` only builds views over f32 CPU storage.
            _ => &[],
        }
    }
}

/// Views on a `Linear`'s weight `(out, in)` and bias `(out,)`.
pub(crate) struct LinearView<'a> {
    w: F32View<'a>,
    b: Option<F32View<'a>>,
}

impl<'a> LinearView<'a> {
    /// `None` unless the weight and the bias (if any) are contiguous f32 CPU tensors.
    pub(crate) fn new(l: &'a candle_nn::Linear) -> Option<LinearView<'a>> {
        let b = match l.bias() {
            Some(b) => Some(F32View::new(b)?),
            None => None,
        };
        Some(LinearView {
            w: F32View::new(l.weight())?,
            b,
        })
    }

    /// `x: (rows, in)` (+ `residual: (rows, out)`) → `(rows, out)`, see [`linear`].
    pub(crate) fn forward(&self, x: &[f32], inp: usize, residual: Option<&[f32]>) -> Vec<f32> {
        linear(
            x,
            inp,
            self.w.slice(),
            self.b.as_ref().map(F32View::slice),
            residual,
        )
    }
}

fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// Rows per rayon task for the elementwise passes: about 64 Ki elements each.
fn rows_per_task(row_len: usize) -> usize {
    (1 << 16) / row_len.max(1) + 1
}

/// LayerNorm over rows of `x: (rows, dim)` → `(rows, dim)`, with weight and bias `(dim,)`.
///
/// Deviation: mean and variance are computed in two passes (as PyTorch does) rather than from
/// the sums of x and x² in one pass (candle's `layer_norm`), which is more accurate when the
/// mean is large against the spread; both are f32.
pub(crate) fn layer_norm(x: &[f32], dim: usize, w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let chunk = rows_per_task(dim) * dim;
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(out, x)| {
            layer_norm_rows(out, x, dim, w, b, eps);
        });
    out
}

multiversion! {
    fn layer_norm_rows(out: &mut [f32], x: &[f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
        for (o, r) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
            let mean = sum(r) / dim as f32;
            let var = sum_sq_dev(r, mean) / dim as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (((o, &v), &w), &b) in o.iter_mut().zip(r).zip(w).zip(b) {
                *o = (v - mean) * inv * w + b;
            }
        }
    }
}

/// Sum with 16 independent accumulators, so that it vectorises.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// Maximum with 16 independent accumulators (−∞ for an empty slice).
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let m = it
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    acc.iter().fold(m, |a, &v| a.max(v))
}

#[inline(always)]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>()
        + it.remainder()
            .iter()
            .map(|&v| (v - mean) * (v - mean))
            .sum::<f32>()
}

/// `x · wᵀ + bias (+ residual)`: `x: (rows, inp)`, `w: (out, inp)` (a `Linear` weight),
/// `bias: (out,)`, `residual: (rows, out)` → `(rows, out)`.
///
/// The bias and residual are written into the destination first and the product is accumulated
/// onto them, so each output element is touched by one pass instead of three.
pub(crate) fn linear(
    x: &[f32],
    inp: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let rows = x.len() / inp;
    let out = w.len() / inp;
    let mut dst = vec![0f32; rows * out];
    let chunk = rows_per_task(out) * out;
    match (bias, residual) {
        (Some(b), Some(r)) => {
            dst.par_chunks_mut(chunk)
                .zip(r.par_chunks(chunk))
                .for_each(|(d, r)| {
                    for (d, r) in d.chunks_exact_mut(out).zip(r.chunks_exact(out)) {
                        for ((d, &r), &b) in d.iter_mut().zip(r).zip(b) {
                            *d = r + b;
                        }
                    }
                })
        }
        (Some(b), None) => dst.par_chunks_mut(chunk).for_each(|d| {
            for d in d.chunks_exact_mut(out) {
                d.copy_from_slice(b);
            }
        }),
        (None, Some(r)) => dst.copy_from_slice(r),
        (None, None) => {}
    }
    let read_dst = bias.is_some() || residual.is_some();
    // SAFETY: dst is (rows, out) row-major, x is (rows, inp) row-major and w (out, inp)
    // row-major read as its transpose (inp, out): all strides stay inside the slices.
    unsafe {
        gemm::gemm(
            rows,
            out,
            inp,
            dst.as_mut_ptr(),
            1,
            out as isize,
            read_dst,
            x.as_ptr(),
            1,
            inp as isize,
            w.as_ptr(),
            inp as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
    dst
}

/// QuickGELU `x · σ(1.702 x)` in place, multi-threaded.
pub(crate) fn quick_gelu_inplace(x: &mut [f32]) {
    x.par_chunks_mut(1 << 14).for_each(quick_gelu_chunk);
}

multiversion! {
    fn quick_gelu_chunk(c: &mut [f32]) {
        for v in c {
            // x · 1/(1 + e^(−1.702x)); for very negative x, e^… saturates and the result is ~−0.
            *v /= 1.0 + exp(-1.702 * *v);
        }
    }
}

/// A raw pointer that rayon tasks may share; each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used where every task writes elements no other task touches (see `attention`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// A method, so that closures capture the whole (Sync) wrapper, not the raw field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Multi-head self-attention from the fused projection: `qkv: (batch·tokens, 3·dim)` with each
/// row `[q | k | v]` and each of those `heads` contiguous `head_dim` blocks, optional additive
/// `mask: (tokens, tokens)` → `softmax(q kᵀ · scale + mask) v` with the heads merged,
/// `(batch·tokens, dim)`.
pub(crate) fn attention(
    qkv: &[f32],
    tokens: usize,
    dim: usize,
    heads: usize,
    scale: f32,
    mask: Option<&[f32]>,
) -> Vec<f32> {
    let t = tokens;
    let batch = qkv.len() / (t * 3 * dim);
    let hd = dim / heads;
    let mut out = vec![0f32; batch * t * dim];
    let dst = SharedMut(out.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each_init(
        || vec![0f32; t * t],
        |s, job| {
            let (b, h) = (job / heads, job % heads);
            let base = b * t * 3 * dim + h * hd;
            let (q, k, v) = (&qkv[base..], &qkv[base + dim..], &qkv[base + 2 * dim..]);
            let row = 3 * dim as isize;
            // SAFETY: q, k, v rows are `3·dim` apart and hold `hd` elements from their start,
            // `t` rows per image, all inside `qkv`; s is (t, t).
            unsafe {
                // s = scale · q kᵀ  (kᵀ read in place: element (c, j) = k[j, c]).
                gemm::gemm(
                    t,
                    t,
                    hd,
                    s.as_mut_ptr(),
                    1,
                    t as isize,
                    false,
                    q.as_ptr(),
                    1,
                    row,
                    k.as_ptr(),
                    row,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            softmax_rows(s, t, mask);
            // SAFETY: this job writes rows b·t..(b+1)·t, columns h·hd..(h+1)·hd of `out`
            // (row stride `dim`), which no other job writes; v is read like q and k above.
            unsafe {
                gemm::gemm(
                    t,
                    hd,
                    t,
                    dst.at(b * t * dim + h * hd),
                    1,
                    dim as isize,
                    false,
                    s.as_ptr(),
                    1,
                    t as isize,
                    v.as_ptr(),
                    1,
                    row,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    out
}

multiversion! {
    /// Softmax of each row of `s: (rows, n)` in place, after adding `mask` (rows, n) if given:
    /// `exp(x − max) / Σ`, as candle's `softmax_last_dim` computes it.
    fn softmax_rows(s: &mut [f32], n: usize, mask: Option<&[f32]>) {
        for (i, r) in s.chunks_exact_mut(n).enumerate() {
            if let Some(m) = mask {
                for (x, &m) in r.iter_mut().zip(&m[i * n..(i + 1) * n]) {
                    *x += m;
                }
            }
            let max = max(r);
            for x in r.iter_mut() {
                *x = exp(*x - max);
            }
            let total = sum(r);
            for x in r.iter_mut() {
                *x /= total;
            }
        }
    }
}

/// `eˣ` in f32 without a libm call, so that loops over slices vectorise (Cephes `expf`: Cody–Waite
/// reduction `x = n·ln 2 + r`, a degree-6 polynomial on |r| ≤ ln2/2, and `2ⁿ` built from its
/// exponent bits); within 2 ulp of `f32::exp` (see the test).
///
/// Deviation: results below `e^−87` (1.6e−38, the f32 denormal range) are flushed to 0 and
/// results above `e^88` saturate at 1.65e38 instead of ∞: the only callers are softmax, where
/// arguments are ≤ 0 and such terms are invisible next to the row maximum's `e⁰ = 1`, and
/// QuickGELU, where `x / (1 + 1.65e38)` and `x / ∞` both vanish.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to the nearest integer.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // n is in −126..=127 after the clamp: its biased exponent is a normal 2ⁿ.
    let n_int = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let two_n = f32::from_bits(((n_int + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        y * two_n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * y.abs().max(1.0), "[{i}] {x} vs {y}");
        }
    }

    fn vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn linear_with_bias_and_residual_equals_composed_ops() {
        let d = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (7, 5), &d).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 5), &d).unwrap();
        let b = Tensor::randn(0f32, 1.0, 3, &d).unwrap();
        let r = Tensor::randn(0f32, 1.0, (7, 3), &d).unwrap();
        let y = x.matmul(&w.t().unwrap()).unwrap();
        let yb = y.broadcast_add(&b).unwrap();
        let (xs, ws, bs, rs) = (vec(&x), vec(&w), vec(&b), vec(&r));
        close(&linear(&xs, 5, &ws, None, None), &vec(&y), 1e-6);
        close(&linear(&xs, 5, &ws, Some(&bs), None), &vec(&yb), 1e-6);
        let full = (&yb + &r).unwrap();
        close(
            &linear(&xs, 5, &ws, Some(&bs), Some(&rs)),
            &vec(&full),
            1e-6,
        );
    }

    #[test]
    fn layer_norm_equals_candle() {
        let d = Device::Cpu;
        let x = (Tensor::randn(0f32, 1.0, (5, 37), &d).unwrap() + 3.0).unwrap();
        let w = Tensor::randn(0f32, 1.0, 37, &d).unwrap();
        let b = Tensor::randn(0f32, 1.0, 37, &d).unwrap();
        let want = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5).unwrap();
        close(
            &layer_norm(&vec(&x), 37, &vec(&w), &vec(&b), 1e-5),
            &vec(&want),
            1e-5,
        );
    }

    /// Non-square everything: 2 images, 5 tokens, 3 heads of 4, with a causal mask.
    #[test]
    fn attention_equals_composed_ops() {
        let dev = Device::Cpu;
        let (b, t, h, hd) = (2, 5, 3, 4);
        let dim = h * hd;
        let qkv = Tensor::randn(0f32, 1.0, (b, t, 3 * dim), &dev).unwrap();
        let m = crate::text::causal_mask(t, candle_core::DType::F32, &dev).unwrap();
        let mask: Vec<f32> = m.flatten_all().unwrap().to_vec1().unwrap();
        let split = qkv
            .reshape((b, t, 3, h, hd))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap()
            .contiguous()
            .unwrap();
        let (q, k, v) = (
            split.get(0).unwrap(),
            split.get(1).unwrap(),
            split.get(2).unwrap(),
        );
        let scale = (hd as f64).powf(-0.5);
        for mask in [None, Some((&mask, &m))] {
            let mut s = q
                .affine(scale, 0.)
                .unwrap()
                .matmul(&k.t().unwrap())
                .unwrap();
            if let Some((_, m)) = mask {
                s = s.broadcast_add(m).unwrap();
            }
            let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
            let o = p.matmul(&v).unwrap().transpose(1, 2).unwrap();
            let want = vec(&o.contiguous().unwrap());
            let got = attention(
                &vec(&qkv),
                t,
                dim,
                h,
                scale as f32,
                mask.map(|(m, _)| m.as_slice()),
            );
            close(&got, &want, 1e-5);
        }
    }

    #[test]
    fn exp_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst <= 2.0 * f32::EPSILON, "max relative error {worst:e}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(100.0).is_finite());
    }

    #[test]
    fn max_and_sum_of_odd_lengths() {
        let x: Vec<f32> = (0..37).map(|i| ((i * 7) % 37) as f32 - 18.0).collect();
        assert_eq!(max(&x), 18.0);
        assert_eq!(sum(&x), 0.0);
        assert_eq!(
            max(&x[..3]),
            x[..3].iter().copied().fold(f32::MIN, f32::max)
        );
    }

    #[test]
    fn view_refuses_strided_tensors() {
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(F32View::new(&x).is_some());
        assert!(F32View::new(&x.t().unwrap()).is_none());
        let i = Tensor::zeros((2, 3), candle_core::DType::U32, &Device::Cpu).unwrap();
        assert!(F32View::new(&i).is_none());
    }
}
