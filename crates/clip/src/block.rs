//! One pre-LN transformer block (`encoder.layers.N`), shared by both towers.
//!
//! Reference: transformers `CLIPEncoderLayer` / OpenAI `ResidualAttentionBlock`:
//! `x = x + out_proj(attn(ln_1 x)); x = x + fc2(act(fc1(ln_2 x)))`.
//! q, k and v are computed by one fused `(3D, D)` matmul (loaded from the separate HF
//! `q_proj`/`k_proj`/`v_proj`), which is exact and saves two passes over the activations.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::config::Act;
use crate::error::Result;
use segsweep_kernels::block as fused;
use segsweep_kernels::enabled;

/// LayerNorm that always runs in f32 (weights kept in f32), whatever the model dtype,
/// as OpenAI's `LayerNorm` subclass does for fp16 models.
#[derive(Debug, Clone)]
pub(crate) struct Ln {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

impl Ln {
    pub(crate) fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Ln> {
        Ok(Ln {
            w: vb.get(dim, "weight")?.to_dtype(DType::F32)?,
            b: vb.get(dim, "bias")?.to_dtype(DType::F32)?,
            eps: eps as f32,
        })
    }

    /// Views on the weight and bias for [`crate::cpu::layer_norm`], if they are f32 on the CPU.
    fn views(&self) -> Option<(crate::cpu::F32View<'_>, crate::cpu::F32View<'_>)> {
        Some((
            crate::cpu::F32View::new(&self.w)?,
            crate::cpu::F32View::new(&self.b)?,
        ))
    }

    /// `(..., D) → (..., D)` in the input's dtype.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if enabled(x.device(), x.elem_count()) {
            return fused::layer_norm(x, &self.w, &self.b, self.eps);
        }
        if let (true, Some(xv), Some((w, b))) = (
            x.device().is_cpu(),
            crate::cpu::F32View::new(x),
            self.views(),
        ) {
            let d = w.slice().len();
            let y = crate::cpu::layer_norm(xv.slice(), d, w.slice(), b.slice(), self.eps);
            drop(xv);
            return Tensor::from_vec(y, x.shape(), x.device());
        }
        let dt = x.dtype();
        let x32 = x.to_dtype(DType::F32)?.contiguous()?;
        candle_nn::ops::layer_norm(&x32, &self.w, &self.b, self.eps)?.to_dtype(dt)
    }
}

pub(crate) fn linear(
    vb: &VarBuilder,
    out: usize,
    inp: usize,
    bias: bool,
    dt: DType,
) -> Result<Linear> {
    let w = vb.get((out, inp), "weight")?.to_dtype(dt)?;
    let b = if bias {
        Some(vb.get(out, "bias")?.to_dtype(dt)?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// A linear layer's output shape for input `x: (..., in)`: `(..., out)`.
fn out_dims(x: &Tensor, out: usize) -> Vec<usize> {
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    dims
}

/// `Linear::forward`, `(..., in) → (..., out)`, through [`crate::cpu::linear`] (bias added in
/// the gemm, multi-threaded) when `x`, the weight and the bias are contiguous f32 on the CPU.
/// Elsewhere the leading dimensions are flattened first, so that a `(B, T, in)` input is one
/// `(B·T, in) × (in, out)` GEMM instead of candle's B batched `(T, in)` GEMMs against a
/// broadcast weight (T = 197 rows per GEMM wastes a third of a GPU's 128-row tiles).
pub(crate) fn linear_forward(l: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() {
        if let (Some(xv), Some(lv)) = (crate::cpu::F32View::new(x), crate::cpu::LinearView::new(l))
        {
            let inp = l.weight().dim(1)?;
            if x.dims().last() == Some(&inp) {
                let y = lv.forward(xv.slice(), inp, None);
                let dims = out_dims(x, l.weight().dim(0)?);
                drop(xv);
                return Tensor::from_vec(y, dims, x.device());
            }
        }
    }
    let (out, inp) = l.weight().dims2()?;
    if x.rank() > 2 && x.dims().last() == Some(&inp) {
        let rows = x.elem_count() / inp.max(1);
        let y = l.forward(&x.contiguous()?.reshape((rows, inp))?)?;
        return y.reshape(out_dims(x, out));
    }
    l.forward(x)
}

/// `act(l(x)) (+ res)` through the fused GPU ops ([`fused`]): `x: (..., in)` → `(..., out)`,
/// `res` shaped as the output. `None` where they are not enabled or `l` has no bias; the caller
/// then runs the composed ops.
fn linear_fused(
    l: &Linear,
    x: &Tensor,
    act: fused::Act,
    res: Option<&Tensor>,
) -> candle_core::Result<Option<Tensor>> {
    let Some(bias) = l.bias() else {
        return Ok(None);
    };
    let (out, inp) = l.weight().dims2()?;
    let rows = x.elem_count() / inp.max(1);
    if x.dims().last() != Some(&inp) || !enabled(x.device(), rows * out.max(inp)) {
        return Ok(None);
    }
    let y = x
        .contiguous()?
        .reshape((rows, inp))?
        .matmul(&l.weight().t()?)?;
    let res = res.map(|r| r.reshape((rows, out))).transpose()?;
    let y = fused::bias_act(&y, bias, act, res.as_ref())?;
    Ok(Some(y.reshape(out_dims(x, out))?))
}

/// The fused op for a block activation.
fn fused_act(act: Act) -> fused::Act {
    match act {
        Act::QuickGelu => fused::Act::QuickGelu,
        Act::Gelu => fused::Act::GeluErf,
    }
}

/// QuickGELU `x · σ(1.702 x)`, `(...) → (...)`.
///
/// On CPU in f32 this is one fused, multi-threaded pass: composed of candle ops it was three
/// single-threaded passes plus two temporaries, and took ~70 % as long as the fc1 matmul it
/// follows (measured on ViT-B/16, 8 crops, 2 cores). Other devices/dtypes use the composed ops.
pub(crate) fn quick_gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() {
        x.apply_op1_no_bwd(&QuickGeluOp)
    } else {
        x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
    }
}

struct QuickGeluOp;

impl candle_core::CustomOp1 for QuickGeluOp {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (candle_core::CpuStorage::F32(src), Some((a, b))) =
            (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("quick-gelu: expected a contiguous f32 tensor");
        };
        let mut dst = src[a..b].to_vec();
        crate::cpu::quick_gelu_inplace(&mut dst);
        Ok((candle_core::CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// Softmax over the last dimension, computed in f32 (as OpenAI/SCLIP and transformers do).
pub(crate) fn softmax_f32(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?.contiguous()?)
}

/// `(B, heads, T, hd) → (B, T, heads·hd)`.
pub(crate) fn merge_heads(x: &Tensor) -> candle_core::Result<Tensor> {
    if enabled(x.device(), x.elem_count()) {
        return fused::merge_heads(x);
    }
    let (b, h, t, hd) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * hd))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn fused_quick_gelu_equals_composed_ops() {
        let x = Tensor::new(&[-100f32, -3.0, -0.5, 0.0, 0.25, 2.0, 40.0], &Device::Cpu).unwrap();
        let fused: Vec<f32> = super::quick_gelu(&x).unwrap().to_vec1().unwrap();
        let sig = candle_nn::ops::sigmoid(&(&x * 1.702).unwrap()).unwrap();
        let composed: Vec<f32> = (&x * sig).unwrap().to_vec1().unwrap();
        for (f, c) in fused.iter().zip(&composed) {
            assert!((f - c).abs() <= 1e-6 * c.abs().max(1.0), "{f} vs {c}");
        }
        assert_eq!(fused[3], 0.0);
        assert!(fused[0].abs() < 1e-30);
    }

    /// The flattened single GEMM (the path every non-f32-CPU input takes) computes candle's
    /// batched `Linear::forward`, for rank 3 and 4 inputs, f32 and f16, with a strided input.
    #[test]
    fn linear_forward_flattens_leading_dimensions_to_one_gemm() {
        use candle_core::{DType, Module};
        use candle_nn::Linear;
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.2, (7, 5), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.2, 7, &dev).unwrap();
        for dt in [DType::F32, DType::F16] {
            let l = Linear::new(w.to_dtype(dt).unwrap(), Some(b.to_dtype(dt).unwrap()));
            // (2, 3, 4, 5) and a strided (3, 4, 5) view of it.
            let x4 = Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap();
            let x3 = x4.get(1).unwrap().transpose(0, 1).unwrap();
            for x in [x4, x3] {
                let got = super::linear_forward(&l, &x).unwrap();
                let want = l.forward(&x).unwrap();
                assert_eq!(got.dims(), want.dims());
                let d = segsweep_kernels::testing::max_rel(&got, &want).unwrap();
                let tol = if dt == DType::F32 { 1e-6 } else { 2e-3 };
                assert!(d <= tol, "{dt:?} {:?}: {d}", x.dims());
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Block {
    ln_1: Ln,
    /// Fused `[q; k; v]` projection `(3D, D)` with bias.
    qkv: Linear,
    out: Linear,
    ln_2: Ln,
    fc1: Linear,
    fc2: Linear,
    act: Act,
    heads: usize,
}

impl Block {
    pub(crate) fn load(
        vb: &VarBuilder,
        dim: usize,
        inter: usize,
        heads: usize,
        eps: f64,
        act: Act,
        dt: DType,
    ) -> Result<Block> {
        let a = vb.pp("self_attn");
        let get = |n: &str| -> Result<(Tensor, Tensor)> {
            let p = a.pp(n);
            Ok((p.get((dim, dim), "weight")?, p.get(dim, "bias")?))
        };
        let (qw, qb) = get("q_proj")?;
        let (kw, kb) = get("k_proj")?;
        let (vw, vbias) = get("v_proj")?;
        let qkv = Linear::new(
            Tensor::cat(&[qw, kw, vw], 0)?.to_dtype(dt)?,
            Some(Tensor::cat(&[qb, kb, vbias], 0)?.to_dtype(dt)?),
        );
        Ok(Block {
            ln_1: Ln::load(&vb.pp("layer_norm1"), dim, eps)?,
            qkv,
            out: linear(&a.pp("out_proj"), dim, dim, true, dt)?,
            ln_2: Ln::load(&vb.pp("layer_norm2"), dim, eps)?,
            fc1: linear(&vb.pp("mlp").pp("fc1"), inter, dim, true, dt)?,
            fc2: linear(&vb.pp("mlp").pp("fc2"), dim, inter, true, dt)?,
            act,
            heads,
        })
    }

    pub(crate) fn ln_1(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.ln_1.forward(x)
    }

    /// `(B, T, D) → 3 × (B, heads, T, hd)`, contiguous, with bias, unscaled.
    pub(crate) fn qkv(&self, x_ln: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        self.qkv_scaled(x_ln, 1.0)
    }

    /// [`Block::qkv`] with q multiplied by `q_scale` (folded into the head split on the fused
    /// path).
    fn qkv_scaled(
        &self,
        x_ln: &Tensor,
        q_scale: f64,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (b, t, d) = x_ln.dims3()?;
        if let (Some(bias), true) = (
            self.qkv.bias(),
            enabled(x_ln.device(), 3 * x_ln.elem_count()),
        ) {
            let y = x_ln
                .contiguous()?
                .reshape((b * t, d))?
                .matmul(&self.qkv.weight().t()?)?
                .reshape((b, t, 3 * d))?;
            let y = fused::split_qkv(&y, bias, self.heads, q_scale as f32)?;
            return Ok((y.get(0)?, y.get(1)?, y.get(2)?));
        }
        let hd = d / self.heads;
        let y = linear_forward(&self.qkv, x_ln)?
            .reshape((b, t, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let q = y.get(0)?;
        let q = if q_scale == 1.0 {
            q
        } else {
            q.affine(q_scale, 0.)?
        };
        Ok((q, y.get(1)?, y.get(2)?))
    }

    pub(crate) fn out_proj(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(y) = linear_fused(&self.out, x, fused::Act::Identity, None)? {
            return Ok(y);
        }
        linear_forward(&self.out, x)
    }

    /// `softmax(scale · q kᵀ) v` with the heads merged in one kernel ([`fused::attention`])
    /// where the fused ops are enabled and its tensor-core kernel applies (f16/bf16, see
    /// [`fused::attention_on_tensor_cores`]): `q, k, v: (B, H, T, hd)` → `(B, T, H·hd)`;
    /// `None` otherwise (f32 included: candle's matmuls and softmax are faster there).
    fn fused_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, _, t, hd) = q.dims4()?;
        if fused::attention_on_tensor_cores(q.dtype(), t, hd) && enabled(q.device(), q.elem_count())
        {
            let qs = if scale == 1.0 {
                q.clone()
            } else {
                q.affine(scale, 0.)?
            };
            return Ok(Some(fused::attention(&qs, k, v)?));
        }
        Ok(None)
    }

    /// `x + out_proj(o)`, the residual added in the fused op where enabled.
    fn out_proj_residual(&self, o: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(y) = linear_fused(&self.out, o, fused::Act::Identity, Some(x))? {
            return Ok(y);
        }
        x + linear_forward(&self.out, o)?
    }

    pub(crate) fn mlp(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(h) = linear_fused(&self.fc1, x, fused_act(self.act), None)? {
            if let Some(y) = linear_fused(&self.fc2, &h, fused::Act::Identity, None)? {
                return Ok(y);
            }
            return linear_forward(&self.fc2, &h);
        }
        let h = linear_forward(&self.fc1, x)?;
        let h = match self.act {
            Act::QuickGelu => quick_gelu(&h)?,
            Act::Gelu => h.gelu_erf()?,
        };
        linear_forward(&self.fc2, &h)
    }

    /// `x + mlp(ln_2 x)`.
    pub(crate) fn ffn_residual(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.ln_2.forward(x)?;
        if let Some(f) = linear_fused(&self.fc1, &h, fused_act(self.act), None)? {
            if let Some(y) = linear_fused(&self.fc2, &f, fused::Act::Identity, Some(x))? {
                return Ok(y);
            }
        }
        x + self.mlp(&h)?
    }

    pub(crate) fn ln_2(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.ln_2.forward(x)
    }

    /// Standard block with optional additive mask `(T, T)` on the scores; returns the block
    /// output and, when asked, the attention probabilities `(B, heads, T, T)` (f32) and q, k, v.
    pub(crate) fn forward_recording(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        keep_probs: bool,
        keep_qkv: bool,
    ) -> candle_core::Result<BlockOut> {
        if !keep_probs && !keep_qkv {
            if let Some(x) = self.forward_cpu_f32(x, mask)? {
                return Ok(BlockOut {
                    x,
                    probs: None,
                    qkv: None,
                });
            }
        }
        let scale = ((x.dim(D::Minus1)? / self.heads) as f64).powf(-0.5);
        let h = self.ln_1(x)?;
        // q comes scaled (in the head split on the fused path) unless q itself is recorded.
        let (q, k, v, qs) = if keep_qkv {
            let (q, k, v) = self.qkv(&h)?;
            let qs = q.affine(scale, 0.)?;
            (q, k, v, qs)
        } else {
            let (qs, k, v) = self.qkv_scaled(&h, scale)?;
            (qs.clone(), k, v, qs)
        };
        // One kernel where enabled: scores, softmax and the product with v, heads merged.
        let fused_o = if keep_probs || mask.is_some() {
            None
        } else {
            self.fused_attention(&qs, &k, &v, 1.0)?
        };
        let (merged, probs) = if let Some(o) = fused_o {
            (o, None)
        } else {
            let mut s = qs.matmul(&k.t()?)?;
            if let Some(m) = mask {
                s = s.broadcast_add(m)?;
            }
            let p = if !keep_probs && s.dtype() != DType::F32 && !s.device().is_cpu() {
                // candle's CUDA softmax kernel accumulates in f32 and rounds once to the input
                // dtype: the same values as the f32 softmax followed by the cast below, without
                // two f32 copies of the (B, heads, T, T) scores.
                candle_nn::ops::softmax_last_dim(&s.contiguous()?)?
            } else {
                softmax_f32(&s)?
            };
            let o = p.to_dtype(v.dtype())?.matmul(&v)?;
            (merge_heads(&o)?, keep_probs.then_some(p))
        };
        let x = self.out_proj_residual(&merged, x)?;
        let x = self.ffn_residual(&x)?;
        Ok(BlockOut {
            x,
            probs,
            qkv: keep_qkv.then_some((q, k, v)),
        })
    }

    /// The whole block with the fused CPU kernels of [`crate::cpu`]: `x: (B, T, D)` with an
    /// optional additive `mask: (T, T)` → `(B, T, D)`. `None` where they do not apply (another
    /// device or dtype, a strided input, exact GELU): the caller then runs the composed ops.
    fn forward_cpu_f32(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Option<Tensor>> {
        use crate::cpu::{self, F32View, LinearView};
        if !x.device().is_cpu() || self.act != Act::QuickGelu {
            return Ok(None);
        }
        let (b, t, d) = x.dims3()?;
        let views = (
            F32View::new(x),
            self.ln_1.views(),
            LinearView::new(&self.qkv),
            LinearView::new(&self.out),
            self.ln_2.views(),
            LinearView::new(&self.fc1),
            LinearView::new(&self.fc2),
        );
        let (Some(xv), Some(ln1), Some(qkv), Some(out), Some(ln2), Some(fc1), Some(fc2)) = views
        else {
            return Ok(None);
        };
        let mask = match mask {
            None => None,
            Some(m) => match (m.dims() == [t, t], F32View::new(m)) {
                (true, Some(v)) => Some(v),
                _ => return Ok(None),
            },
        };
        let h = cpu::layer_norm(xv.slice(), d, ln1.0.slice(), ln1.1.slice(), self.ln_1.eps);
        let y = qkv.forward(&h, d, None);
        let scale = ((d / self.heads) as f32).powf(-0.5);
        let m = mask.as_ref().map(F32View::slice);
        let o = cpu::attention(&y, t, d, self.heads, scale, m);
        let x1 = out.forward(&o, d, Some(xv.slice()));
        let h = cpu::layer_norm(&x1, d, ln2.0.slice(), ln2.1.slice(), self.ln_2.eps);
        let mut f = fc1.forward(&h, d, None);
        cpu::quick_gelu_inplace(&mut f);
        let x2 = fc2.forward(&f, f.len() / (b * t), Some(&x1));
        Ok(Some(Tensor::from_vec(x2, (b, t, d), x.device())?))
    }
}

pub(crate) struct BlockOut {
    pub x: Tensor,
    pub probs: Option<Tensor>,
    pub qkv: Option<(Tensor, Tensor, Tensor)>,
}

impl segsweep_core::LastBlock for Block {
    fn heads(&self) -> usize {
        self.heads
    }
    fn ln_1(&self, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(Block::ln_1(self, x)?)
    }
    fn qkv(&self, x_ln: &Tensor) -> segsweep_core::Result<(Tensor, Tensor, Tensor)> {
        Ok(Block::qkv(self, x_ln)?)
    }
    fn out_proj(&self, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(Block::out_proj(self, x)?)
    }
    fn ln_2(&self, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(Block::ln_2(self, x)?)
    }
    fn mlp(&self, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(Block::mlp(self, x)?)
    }
    fn fused_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
    ) -> segsweep_core::Result<Option<Tensor>> {
        Ok(Block::fused_attention(self, q, k, v, scale)?)
    }
    fn out_proj_residual(&self, o: &Tensor, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(Block::out_proj_residual(self, o, x)?)
    }
    fn ffn_residual(&self, x: &Tensor) -> segsweep_core::Result<Tensor> {
        Ok(Block::ffn_residual(self, x)?)
    }
}

#[cfg(test)]
mod fused_block_tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use super::Block;
    use crate::config::Act;

    fn block(d: usize, inter: usize, heads: usize) -> Block {
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        let mut put = |name: &str, shape: &[usize], std: f64| {
            t.insert(
                name.to_string(),
                Tensor::randn(0f32, std as f32, shape, &dev).unwrap(),
            );
        };
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            put(&format!("self_attn.{p}.weight"), &[d, d], 0.2);
            put(&format!("self_attn.{p}.bias"), &[d], 0.1);
        }
        put("mlp.fc1.weight", &[inter, d], 0.2);
        put("mlp.fc1.bias", &[inter], 0.1);
        put("mlp.fc2.weight", &[d, inter], 0.2);
        put("mlp.fc2.bias", &[d], 0.1);
        for ln in ["layer_norm1", "layer_norm2"] {
            put(&format!("{ln}.weight"), &[d], 0.5);
            put(&format!("{ln}.bias"), &[d], 0.1);
        }
        let vb = VarBuilder::from_tensors(t, DType::F32, &dev);
        Block::load(&vb, d, inter, heads, 1e-5, Act::QuickGelu, DType::F32).unwrap()
    }

    /// The fused CPU block (taken when nothing is recorded) equals the composed path (taken
    /// when the attention probabilities are recorded: candle's matmuls, head split/merge and
    /// softmax; its LayerNorm and QuickGELU kernels are shared and compared with candle's ops
    /// in `cpu.rs`), with and without a mask.
    #[test]
    fn fused_cpu_block_equals_the_composed_block() {
        let (b, t, d) = (3, 17, 32);
        let blk = block(d, 64, 4);
        let x = Tensor::randn(0f32, 1.0, (b, t, d), &Device::Cpu).unwrap();
        let mask = Tensor::randn(0f32, 1.0, (t, t), &Device::Cpu).unwrap();
        for m in [None, Some(&mask)] {
            let fused = blk.forward_recording(&x, m, false, false).unwrap();
            let composed = blk.forward_recording(&x, m, true, false).unwrap();
            assert!(fused.probs.is_none() && composed.probs.is_some());
            let diff = (fused.x - &composed.x)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let scale = composed
                .x
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff <= 1e-5 * scale,
                "mask {}: {diff} vs {scale}",
                m.is_some()
            );
        }
    }
}
