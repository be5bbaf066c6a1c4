//! Fused block ops for the GPU: bias + activation (+ residual), q/k/v head split, head merge
//! and LayerNorm, each one pass with every intermediate in f32 and one rounding to the
//! output dtype.
//!
//! On CUDA candle runs a half-precision block as ~24 kernels, and its elementwise kernels, not
//! the matmuls, take most of the time (`block_profile` on an H100, one block of 64 crops in f16:
//! 4.05 ms with candle's ops, of which 0.70 ms are the linear layers' matmuls; 1.70 ms with
//! these ops; README, "GPU parity and benchmark"). The ops here replace those with one kernel
//! each (`kernels/fused.cu`, compiled to PTX by `build.rs` with the `cuda` feature).
//!
//! Status and tests: see the crate documentation. Callers (segsweep-clip's block) use these
//! where [`crate::enabled`] says so.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};

use crate::{cpu_f32, cpu_round};

/// The activation applied after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `x`.
    Identity = 0,
    /// QuickGELU `x · σ(1.702 x)` (OpenAI CLIP).
    QuickGelu = 1,
    /// Exact GELU `x · Φ(x)`.
    GeluErf = 2,
}

/// `act(x + bias) (+ res)`: `x: (..., C)`, `bias: (C,)`, `res` shaped as `x`; same dtype.
pub fn bias_act(x: &Tensor, bias: &Tensor, act: Act, res: Option<&Tensor>) -> Result<Tensor> {
    let x = x.contiguous()?;
    let c = x.dim(candle_core::D::Minus1)?;
    if bias.dims() != [c] {
        bail!("bias_act: bias {:?} for rows of {c}", bias.dims());
    }
    let bias = bias.contiguous()?;
    match res {
        None => x.apply_op2_no_bwd(&bias, &BiasAct { act }),
        Some(r) => {
            if r.dims() != x.dims() {
                bail!("bias_act: residual {:?} for {:?}", r.dims(), x.dims());
            }
            x.apply_op3_no_bwd(&bias, &r.contiguous()?, &BiasAct { act })
        }
    }
}

/// `y: (B, T, 3·H·hd)` (a fused q/k/v projection without its bias) and `bias: (3·H·hd,)` →
/// `(3, B, H, T, hd)` with the bias added and q multiplied by `q_scale`.
pub fn split_qkv(y: &Tensor, bias: &Tensor, heads: usize, q_scale: f32) -> Result<Tensor> {
    let (b, t, c) = y.dims3()?;
    if heads == 0 || c % (3 * heads) != 0 || bias.dims() != [c] {
        bail!(
            "split_qkv: {:?} with bias {:?} and {heads} heads",
            y.dims(),
            bias.dims()
        );
    }
    let op = SplitQkv {
        b,
        t,
        heads,
        hd: c / 3 / heads,
        q_scale,
    };
    y.contiguous()?.apply_op2_no_bwd(&bias.contiguous()?, &op)
}

/// `(B, H, T, hd) → (B, T, H·hd)`.
pub fn merge_heads(o: &Tensor) -> Result<Tensor> {
    let (_, heads, t, hd) = o.dims4()?;
    o.contiguous()?
        .apply_op1_no_bwd(&MergeHeads { t, heads, hd })
}

/// Longest sequence [`attention`] takes (keys held in registers, 32 per lane-slot).
pub const ATTENTION_MAX_TOKENS: usize = 1024;
/// Largest head dimension [`attention`] takes.
pub const ATTENTION_MAX_HEAD_DIM: usize = 128;

/// Longest sequence of the tensor-core attention kernel (`MMA_MAX_TOKENS` of `kernels/fused.cu`).
pub const MMA_MAX_TOKENS: usize = 448;
/// Largest head dimension of the tensor-core attention kernel (`MMA_MAX_DIM`).
pub const MMA_MAX_HEAD_DIM: usize = 128;

/// Warps per block of the mma.sync attention kernel (`FA_WARPS`): 16 query rows each.
pub const FA_WARPS: usize = 8;
/// Largest head dimension of the mma.sync attention kernel (`FA_MAX_DIM`; every CLIP ViT has
/// 64). Larger ones (up to [`MMA_MAX_HEAD_DIM`]) run the WMMA kernel.
pub const FA_MAX_HEAD_DIM: usize = 64;
/// Elements of padding per staged row in the mma.sync attention kernel (`FA_PAD`).
const FA_PAD: usize = 8;

/// Dynamic shared memory of the mma.sync attention kernel for `t` tokens of head dim `hd`, in
/// bytes: K as `(tp, hd + FA_PAD)` and Vᵀ as `(hd, tp + FA_PAD)` 16-bit values, `tp` = `t`
/// rounded up to 16 (57 600 bytes for ViT-B/16 on 224-pixel crops: t 197, hd 64).
pub fn fa_shared_bytes(t: usize, hd: usize) -> usize {
    let tp = t.div_ceil(16) * 16;
    (tp * (hd + FA_PAD) + hd * (tp + FA_PAD)) * 2
}

/// Whether [`attention`] on CUDA runs its tensor-core kernel for `dt` and this shape: f16 or
/// bf16, `hd` a multiple of 16 up to [`MMA_MAX_HEAD_DIM`], `t ≤` [`MMA_MAX_TOKENS`] (and, checked
/// at launch, 32-byte aligned operands). Otherwise it runs a SIMT kernel, which on an H100 was
/// 3.4× slower than candle's matmul + softmax + matmul (f32, 64 crops of ViT-B/16:
/// 4.27 ms against 1.25 ms), so callers should compose the attention themselves then.
pub fn attention_on_tensor_cores(dt: DType, t: usize, hd: usize) -> bool {
    matches!(dt, DType::F16 | DType::BF16)
        && hd > 0
        && hd.is_multiple_of(16)
        && hd <= MMA_MAX_HEAD_DIM
        && t <= MMA_MAX_TOKENS
}

/// `softmax(q kᵀ) v` per head with the heads merged: `q, k, v: (B, H, T, hd)` (q already
/// scaled by `hd^-½`), same dtype → `(B, T, H·hd)`. Scores, probabilities and sums in f32, one
/// rounding at the end. `T ≤` [`ATTENTION_MAX_TOKENS`], `hd ≤` [`ATTENTION_MAX_HEAD_DIM`]; no
/// mask. On CUDA in f16/bf16 with `hd` a multiple of 16, `T ≤ 448` and 32-byte aligned
/// operands, a tensor-core kernel computes it, which also rounds the (unnormalised)
/// probabilities to the dtype before the product with v, as SDPA does: the mma.sync kernel
/// (`attention_fa`) for `hd ≤` [`FA_MAX_HEAD_DIM`] on sm_80 and newer unless
/// [`crate::ATTENTION_ENV`]` = wmma`, else the WMMA kernel (`attention_mma`).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, h, t, hd) = q.dims4()?;
    if k.dims() != q.dims() || v.dims() != q.dims() {
        bail!(
            "attention: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if t > ATTENTION_MAX_TOKENS || hd > ATTENTION_MAX_HEAD_DIM || t == 0 || hd == 0 {
        bail!(
            "attention: {t} tokens of head dim {hd} (at most {ATTENTION_MAX_TOKENS} and {ATTENTION_MAX_HEAD_DIM})"
        );
    }
    let op = Attention { b, heads: h, t, hd };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

/// LayerNorm over the last dimension: `x: (..., C)` in any float dtype, `w`, `b`: `(C,)` f32;
/// two-pass mean and variance in f32, one rounding to `x`'s dtype.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    let c = x.dim(candle_core::D::Minus1)?;
    if w.dims() != [c] || b.dims() != [c] || w.dtype() != DType::F32 || b.dtype() != DType::F32 {
        bail!(
            "layer_norm: weight {:?} {:?} for rows of {c}",
            w.dims(),
            w.dtype()
        );
    }
    x.contiguous()?
        .apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &LayerNormOp { eps })
}

// ---- CPU transliterations (one rounding at the end, as the kernels) ----------------------

fn activate(v: f32, act: Act) -> f32 {
    match act {
        Act::Identity => v,
        Act::QuickGelu => v / (1.0 + (-1.702 * v).exp()),
        Act::GeluErf => {
            (candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * v
        }
    }
}

struct BiasAct {
    act: Act,
}

impl BiasAct {
    /// The kernel's loops: a column `c` per thread, rows strided.
    fn cpu(&self, x: &[f32], bias: &[f32], res: Option<&[f32]>) -> Vec<f32> {
        let cols = bias.len();
        let rows = x.len() / cols.max(1);
        let mut out = vec![0f32; x.len()];
        for (c, &bc) in bias.iter().enumerate() {
            for r in 0..rows {
                let i = r * cols + c;
                let v = activate(x[i] + bc, self.act);
                out[i] = res.map_or(v, |res| v + res[i]);
            }
        }
        out
    }
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "segsweep-bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, "bias_act x")?;
        let b = cpu_f32(s2, l2, "bias_act bias")?;
        let out = cpu_round(self.cpu(&x, &b, None), s1.dtype())?;
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = crate::cuda::bias_act(self.act, s1, l1, s2, l2, None)?;
        Ok((out, l1.shape().clone()))
    }
}

impl CustomOp3 for BiasAct {
    fn name(&self) -> &'static str {
        "segsweep-bias-act-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, "bias_act x")?;
        let b = cpu_f32(s2, l2, "bias_act bias")?;
        let r = cpu_f32(s3, l3, "bias_act residual")?;
        let out = cpu_round(self.cpu(&x, &b, Some(&r)), s1.dtype())?;
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = crate::cuda::bias_act(self.act, s1, l1, s2, l2, Some((s3, l3)))?;
        Ok((out, l1.shape().clone()))
    }
}

pub(crate) struct SplitQkv {
    pub(crate) b: usize,
    pub(crate) t: usize,
    pub(crate) heads: usize,
    pub(crate) hd: usize,
    pub(crate) q_scale: f32,
}

impl SplitQkv {
    fn shape(&self) -> Shape {
        Shape::from((3, self.b, self.heads, self.t, self.hd))
    }

    /// The kernel's loops: a block per (s, h) pair, a thread per `e < hd`, rows strided.
    fn cpu(&self, y: &[f32], bias: &[f32]) -> Vec<f32> {
        let (heads, hd, b_n, t_n) = (self.heads, self.hd, self.b, self.t);
        let cols = 3 * heads * hd;
        let mut out = vec![0f32; y.len()];
        for sh in 0..3 * heads {
            let (s, h) = (sh / heads, sh % heads);
            let scale = if s == 0 { self.q_scale } else { 1.0 };
            for e in 0..hd {
                let c = sh * hd + e;
                for r in 0..b_n * t_n {
                    let (b, t) = (r / t_n, r % t_n);
                    let v = (y[r * cols + c] + bias[c]) * scale;
                    out[(((s * b_n + b) * heads + h) * t_n + t) * hd + e] = v;
                }
            }
        }
        out
    }
}

impl CustomOp2 for SplitQkv {
    fn name(&self) -> &'static str {
        "segsweep-split-qkv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = cpu_f32(s1, l1, "split_qkv")?;
        let b = cpu_f32(s2, l2, "split_qkv bias")?;
        Ok((cpu_round(self.cpu(&y, &b), s1.dtype())?, self.shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((crate::cuda::split_qkv(self, s1, l1, s2, l2)?, self.shape()))
    }
}

pub(crate) struct MergeHeads {
    pub(crate) t: usize,
    pub(crate) heads: usize,
    pub(crate) hd: usize,
}

impl MergeHeads {
    fn shape(&self, l: &Layout) -> Result<Shape> {
        let (b, ..) = l.shape().dims4()?;
        Ok(Shape::from((b, self.t, self.heads * self.hd)))
    }

    /// The kernel's loops: a block per head, a thread per `e < hd`, rows strided.
    fn cpu(&self, o: &[f32]) -> Vec<f32> {
        let (heads, hd, t_n) = (self.heads, self.hd, self.t);
        let rows = o.len() / (heads * hd).max(1);
        let mut out = vec![0f32; o.len()];
        for h in 0..heads {
            for e in 0..hd {
                for r in 0..rows {
                    let (b, t) = (r / t_n, r % t_n);
                    out[(r * heads + h) * hd + e] = o[((b * heads + h) * t_n + t) * hd + e];
                }
            }
        }
        out
    }
}

impl CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "segsweep-merge-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let o = cpu_f32(s, l, "merge_heads")?;
        Ok((cpu_round(self.cpu(&o), s.dtype())?, self.shape(l)?))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((crate::cuda::merge_heads(self, s, l)?, self.shape(l)?))
    }
}

pub(crate) struct Attention {
    pub(crate) b: usize,
    pub(crate) heads: usize,
    pub(crate) t: usize,
    pub(crate) hd: usize,
}

impl Attention {
    /// The kernel's arithmetic per (batch, head, query row): dot products, the max,
    /// `exp(s − max)`, their sum, `Σ e_j v_j` in key order, times `1 / sum`. Only the order of
    /// two sums differs (f32 rounding): the kernel adds each dot product and the sum of the
    /// exponentials per lane first, then across the warp's 32 lanes.
    fn cpu(&self, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let (heads, t_n, hd) = (self.heads, self.t, self.hd);
        let mut out = vec![0f32; q.len()];
        let mut s = vec![0f32; t_n];
        for bh in 0..self.b * heads {
            let (b, h) = (bh / heads, bh % heads);
            let base = bh * t_n * hd;
            for t in 0..t_n {
                let qr = &q[base + t * hd..base + (t + 1) * hd];
                let mut m = f32::NEG_INFINITY;
                for (j, sj) in s.iter_mut().enumerate() {
                    let kr = &k[base + j * hd..base + (j + 1) * hd];
                    *sj = qr.iter().zip(kr).fold(0f32, |a, (x, y)| a + x * y);
                    m = m.max(*sj);
                }
                let mut sum = 0f32;
                for sj in s.iter_mut() {
                    *sj = (*sj - m).exp();
                    sum += *sj;
                }
                let inv = 1.0 / sum;
                let orow = &mut out[((b * t_n + t) * heads + h) * hd..][..hd];
                for (d, o) in orow.iter_mut().enumerate() {
                    let acc = s
                        .iter()
                        .enumerate()
                        .fold(0f32, |a, (j, &p)| a + p * v[base + j * hd + d]);
                    *o = acc * inv;
                }
            }
        }
        out
    }

    fn shape(&self) -> Shape {
        Shape::from((self.b, self.t, self.heads * self.hd))
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "segsweep-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = cpu_f32(s1, l1, "attention q")?;
        let k = cpu_f32(s2, l2, "attention k")?;
        let v = cpu_f32(s3, l3, "attention v")?;
        let out = cpu_round(self.cpu(&q, &k, &v), s1.dtype())?;
        Ok((out, self.shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = crate::cuda::attention(self, s1, l1, s2, l2, s3, l3)?;
        Ok((out, self.shape()))
    }
}

struct LayerNormOp {
    eps: f32,
}

impl LayerNormOp {
    /// The kernel's arithmetic per row (the lanes' partial sums are a different summation order,
    /// within f32 rounding).
    fn cpu(&self, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let cols = w.len();
        let mut out = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            let mean = xr.iter().sum::<f32>() / cols as f32;
            let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
            let rstd = 1.0 / (var + self.eps).sqrt();
            for c in 0..cols {
                yr[c] = (xr[c] - mean) * rstd * w[c] + b[c];
            }
        }
        out
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "segsweep-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, "layer_norm x")?;
        let w = cpu_f32(s2, l2, "layer_norm weight")?;
        let b = cpu_f32(s3, l3, "layer_norm bias")?;
        let out = cpu_round(self.cpu(&x, &w, &b), s1.dtype())?;
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = crate::cuda::layer_norm(self.eps, s1, l1, s2, l2, s3, l3)?;
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::IndexOp;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        crate::testing::pseudo_random(shape, seed).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        crate::testing::max_rel(a, b).unwrap()
    }

    #[test]
    fn bias_act_equals_composed_ops_for_every_act_and_dtype() {
        let x = rand(&[3, 5, 7], 1);
        let b = rand(&[7], 2);
        let r = rand(&[3, 5, 7], 3);
        let pre = x.broadcast_add(&b).unwrap();
        for (act, want) in [
            (Act::Identity, pre.clone()),
            (
                Act::QuickGelu,
                (&pre * candle_nn::ops::sigmoid(&(&pre * 1.702).unwrap()).unwrap()).unwrap(),
            ),
            (Act::GeluErf, pre.gelu_erf().unwrap()),
        ] {
            for dt in [DType::F32, DType::F16, DType::BF16] {
                let tol = match dt {
                    DType::F32 => 1e-6,
                    DType::F16 => 2e-3,
                    _ => 1e-2,
                };
                let (xd, bd, rd) = (
                    x.to_dtype(dt).unwrap(),
                    b.to_dtype(dt).unwrap(),
                    r.to_dtype(dt).unwrap(),
                );
                let got = bias_act(&xd, &bd, act, None).unwrap();
                assert_eq!(got.dtype(), dt);
                assert_eq!(got.dims(), [3, 5, 7]);
                let e = max_rel(&got, &want);
                assert!(e <= tol, "{act:?} {dt:?}: {e}");
                let got = bias_act(&xd, &bd, act, Some(&rd)).unwrap();
                let e = max_rel(&got, &(&want + &r).unwrap());
                assert!(e <= tol, "{act:?} {dt:?} + residual: {e}");
            }
        }
        // Shape errors name the op.
        let e = bias_act(&x, &rand(&[6], 4), Act::Identity, None).unwrap_err();
        assert!(e.to_string().contains("bias_act"), "{e}");
    }

    #[test]
    fn split_qkv_equals_reshape_permute_and_scales_q_only() {
        // B 2, T 5 (odd), 3 heads of 4.
        let (b, t, h, hd) = (2, 5, 3, 4);
        let y = rand(&[b, t, 3 * h * hd], 5);
        let bias = rand(&[3 * h * hd], 6);
        let got = split_qkv(&y, &bias, h, 0.5).unwrap();
        assert_eq!(got.dims(), [3, b, h, t, hd]);
        let want = y
            .broadcast_add(&bias)
            .unwrap()
            .reshape((b, t, 3, h, hd))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap()
            .contiguous()
            .unwrap();
        let q = (want.i(0).unwrap() * 0.5).unwrap();
        assert!(max_rel(&got.i(0).unwrap(), &q) <= 1e-7);
        for s in 1..3 {
            assert!(
                max_rel(&got.i(s).unwrap(), &want.i(s).unwrap()) <= 1e-7,
                "{s}"
            );
        }
        assert!(split_qkv(&y, &bias, 5, 1.0).is_err());
    }

    #[test]
    fn attention_equals_softmax_matmul_and_merge_on_odd_shapes() {
        // B 2, 3 heads, T 37, hd 24; q pre-scaled as the block passes it.
        let (b, h, t, hd) = (2, 3, 37, 24);
        let q = rand(&[b, h, t, hd], 21).affine(0.2, 0.0).unwrap();
        let k = rand(&[b, h, t, hd], 22);
        let v = rand(&[b, h, t, hd], 23);
        let p = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t().unwrap()).unwrap()).unwrap();
        let want = p
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, h * hd))
            .unwrap();
        for (dt, tol) in [
            (DType::F32, 1e-5),
            (DType::F16, 2e-3),
            (DType::BF16, 1.6e-2),
        ] {
            let c = |x: &Tensor| x.to_dtype(dt).unwrap();
            let got = attention(&c(&q), &c(&k), &c(&v)).unwrap();
            assert_eq!(got.dims(), [b, t, h * hd]);
            assert_eq!(got.dtype(), dt);
            let e = max_rel(&got, &want);
            assert!(e <= tol, "{dt:?}: {e}");
        }
        let long = rand(&[1, 1, ATTENTION_MAX_TOKENS + 1, 8], 24);
        assert!(attention(&long, &long, &long).is_err());
        assert!(attention(&q, &k, &v.narrow(2, 0, 5).unwrap()).is_err());
    }

    #[test]
    fn tensor_cores_for_half_precision_shapes_that_fit() {
        assert!(attention_on_tensor_cores(DType::F16, 197, 64));
        assert!(attention_on_tensor_cores(DType::BF16, MMA_MAX_TOKENS, 128));
        assert!(!attention_on_tensor_cores(DType::F32, 197, 64));
        assert!(!attention_on_tensor_cores(
            DType::F16,
            MMA_MAX_TOKENS + 1,
            64
        ));
        assert!(!attention_on_tensor_cores(DType::F16, 197, 72));
        assert!(!attention_on_tensor_cores(DType::F16, 197, 144));
    }

    #[test]
    fn kernel_constants_match_fused_cu() {
        let cu = include_str!("../kernels/fused.cu");
        for (name, value) in [
            ("MMA_MAX_TOKENS", MMA_MAX_TOKENS),
            ("MMA_MAX_DIM", MMA_MAX_HEAD_DIM),
            ("FA_WARPS", FA_WARPS),
            ("FA_PAD", FA_PAD),
            ("FA_MAX_DIM", FA_MAX_HEAD_DIM),
        ] {
            let line = format!("#define {name} {value}\n");
            assert!(cu.contains(&line), "fused.cu lacks `{}`", line.trim());
        }
    }

    #[test]
    fn fa_shared_memory_for_vit_b16_crops() {
        // 224 crops: 197 tokens padded to 208; 336 crops: 442 → 448.
        assert_eq!(fa_shared_bytes(197, 64), (208 * 72 + 64 * 216) * 2);
        assert_eq!(fa_shared_bytes(197, 64), 57_600);
        assert_eq!(fa_shared_bytes(442, 64), (448 * 72 + 64 * 456) * 2);
        assert_eq!(fa_shared_bytes(16, 16), (16 * 24 + 16 * 24) * 2);
    }

    #[test]
    fn merge_heads_equals_transpose_reshape() {
        let o = rand(&[2, 3, 5, 4], 7);
        let got = merge_heads(&o).unwrap();
        let want = o.transpose(1, 2).unwrap().reshape((2, 5, 12)).unwrap();
        assert_eq!(got.dims(), [2, 5, 12]);
        assert_eq!(max_rel(&got, &want), 0.0);
        // A non-contiguous input is made contiguous first.
        let ot = o.transpose(2, 3).unwrap();
        let want = ot.transpose(1, 2).unwrap().reshape((2, 4, 15)).unwrap();
        assert_eq!(max_rel(&merge_heads(&ot).unwrap(), &want), 0.0);
    }

    #[test]
    fn layer_norm_equals_candle_in_f32_and_rounds_once_in_half() {
        let x = rand(&[4, 3, 33], 8).affine(5.0, 3.0).unwrap();
        let w = rand(&[33], 9);
        let b = rand(&[33], 10);
        let want = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5).unwrap();
        assert!(max_rel(&layer_norm(&x, &w, &b, 1e-5).unwrap(), &want) <= 1e-5);
        for (dt, tol) in [(DType::F16, 1e-3), (DType::BF16, 8e-3)] {
            let got = layer_norm(&x.to_dtype(dt).unwrap(), &w, &b, 1e-5).unwrap();
            assert_eq!(got.dtype(), dt);
            // The reference sees the same rounded input.
            let x_r = x.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap();
            let want = candle_nn::ops::layer_norm(&x_r, &w, &b, 1e-5).unwrap();
            assert!(max_rel(&got, &want) <= tol, "{dt:?}");
        }
        assert!(layer_norm(&x, &w.to_dtype(DType::F16).unwrap(), &b, 1e-5).is_err());
    }
}
