//! A tiny deterministic [`Backbone`] for tests of this crate and of the crates above it (runner,
//! CLI): patch means through a fixed linear map, one real-shaped last block, a linear head.
//! It has the interfaces and shapes of CLIP and none of its meaning; it runs in microseconds.

use candle_core::{DType, Device, Tensor, D};
use segsweep_core::{
    tensor::{l2_normalise, softmax},
    Backbone, BackboneInfo, CoreError, LastBlock, Needs, PrefixOut, WeightsKind,
};

type CoreResult<T> = segsweep_core::Result<T>;

/// Deterministic pseudo-random values in `[-scale, scale)` (a 64-bit LCG).
fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn weight(seed: u64, rows: usize, cols: usize, dev: &Device) -> CoreResult<Tensor> {
    Ok(Tensor::from_vec(
        lcg(seed, rows * cols, 1.0 / (rows as f32).sqrt()),
        (rows, cols),
        dev,
    )?)
}

/// Layer norm over the last dimension without affine parameters.
fn layer_norm(x: &Tensor) -> CoreResult<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?)
}

/// The fake last block: one head, width D.
struct FakeBlock {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    wm: Tensor,
}

impl LastBlock for FakeBlock {
    fn heads(&self) -> usize {
        1
    }
    fn ln_1(&self, x: &Tensor) -> CoreResult<Tensor> {
        layer_norm(x)
    }
    fn qkv(&self, x_ln: &Tensor) -> CoreResult<(Tensor, Tensor, Tensor)> {
        let p = |w: &Tensor| -> CoreResult<Tensor> { Ok(x_ln.broadcast_matmul(w)?.unsqueeze(1)?) };
        Ok((p(&self.wq)?, p(&self.wk)?, p(&self.wv)?))
    }
    fn out_proj(&self, x: &Tensor) -> CoreResult<Tensor> {
        Ok(x.broadcast_matmul(&self.wo)?)
    }
    fn ln_2(&self, x: &Tensor) -> CoreResult<Tensor> {
        layer_norm(x)
    }
    fn mlp(&self, x: &Tensor) -> CoreResult<Tensor> {
        Ok(x.broadcast_matmul(&self.wm)?.tanh()?)
    }
}

/// A tiny deterministic stand-in for CLIP (see the module docs). Width 8, embedding 6,
/// patch 16, one head; built-in attentions `vanilla` and `sclip`.
pub struct FakeBackbone {
    info: BackboneInfo,
    device: Device,
    w_in: Tensor,
    w_out: Tensor,
    block: FakeBlock,
}

impl FakeBackbone {
    /// Build it on the CPU; `seed` varies the weights.
    // CLIP's mean and std exactly as OpenAI publishes them.
    #[allow(clippy::excessive_precision)]
    pub fn new(seed: u64) -> CoreResult<FakeBackbone> {
        let dev = Device::Cpu;
        let (d, e) = (8, 6);
        let w = |k: u64, r, c| weight(seed * 100 + k, r, c, &dev);
        Ok(FakeBackbone {
            info: BackboneInfo {
                model_id: "builtin:fake".into(),
                file_hash: format!("fake{seed}"),
                weights: WeightsKind::Synthetic,
                patch_size: 16,
                image_size: 224,
                width: d,
                embed_dim: e,
                layers: 12,
                heads: 1,
                mean: [0.48145466, 0.4578275, 0.40821073],
                std: [0.26862954, 0.26130258, 0.27577711],
                dtype: "f32".into(),
                device: "cpu".into(),
            },
            w_in: w(1, 5, d)?,
            w_out: w(2, d, e)?,
            block: FakeBlock {
                wq: w(3, d, d)?,
                wk: w(4, d, d)?,
                wv: w(5, d, d)?,
                wo: w(6, d, d)?,
                wm: w(7, d, d)?,
            },
            device: dev,
        })
    }

    fn attend(&self, x: &Tensor, sclip: bool) -> CoreResult<Tensor> {
        let b = &self.block;
        let (q, k, v) = b.qkv(&b.ln_1(x)?)?;
        let s = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
        let aff = |a: &Tensor, c: &Tensor| -> CoreResult<Tensor> {
            softmax(&(a.matmul(&c.transpose(2, 3)?.contiguous()?)? * s)?, 3)
        };
        let attn = if sclip {
            (aff(&q, &q)? + aff(&k, &k)?)?
        } else {
            aff(&q, &k)?
        };
        let o = attn.matmul(&v)?.squeeze(1)?;
        let x = (x + b.out_proj(&o)?)?;
        Ok((&x + b.mlp(&b.ln_2(&x)?)?)?)
    }
}

impl Backbone for FakeBackbone {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn prefix(&self, crops: &Tensor, needs: &Needs) -> CoreResult<PrefixOut> {
        let (b, c, h, w) = crops.dims4()?;
        let (gh, gw) = (h / 16, w / 16);
        let x = crops
            .to_dtype(DType::F32)?
            .narrow(2, 0, gh * 16)?
            .narrow(3, 0, gw * 16)?
            .contiguous()?
            .reshape((b, c, gh, 16, gw, 16))?
            .mean(5)?
            .mean(3)?
            .flatten_from(2)?
            .transpose(1, 2)?
            .contiguous()?;
        // Two position channels so that identical patches at different places differ.
        let pos: Vec<f32> = (0..gh * gw)
            .flat_map(|i| [(i / gw) as f32 / gh as f32, (i % gw) as f32 / gw as f32])
            .collect();
        let pos =
            Tensor::from_vec(pos, (1, gh * gw, 2), &self.device)?.broadcast_as((b, gh * gw, 2))?;
        let x = Tensor::cat(&[&x, &pos], 2)?
            .broadcast_matmul(&self.w_in)?
            .tanh()?;
        let tokens = Tensor::cat(&[&x.mean_keepdim(1)?, &x], 1)?;
        let mut out = PrefixOut {
            tokens: tokens.clone(),
            grid: (gh, gw),
            attn_probs: Default::default(),
            qkv: Default::default(),
        };
        for &l in &needs.attn_probs {
            let t = (&tokens * l as f64)?.unsqueeze(1)?;
            out.attn_probs.insert(
                l,
                softmax(&t.matmul(&t.transpose(2, 3)?.contiguous()?)?, 3)?,
            );
        }
        for &l in &needs.qkv {
            let t = tokens.unsqueeze(1)?;
            out.qkv
                .insert(l, (t.clone(), (&t * 0.5)?, (&t * l as f64)?));
        }
        Ok(out)
    }
    fn last_block(&self) -> &dyn LastBlock {
        &self.block
    }
    fn builtin_attention(
        &self,
        name: &str,
        x: &Tensor,
        _grid: (usize, usize),
    ) -> CoreResult<Tensor> {
        match name {
            "vanilla" => self.attend(x, false),
            "sclip" => self.attend(x, true),
            other => Err(CoreError::Msg(format!(
                "fake backbone has no attention `{other}`"
            ))),
        }
    }
    fn builtin_attention_names(&self) -> &'static [&'static str] {
        &["vanilla", "sclip"]
    }
    fn head(&self, tokens: &Tensor, (gh, gw): (usize, usize)) -> CoreResult<Tensor> {
        let (b, t, _) = tokens.dims3()?;
        let e = self.info.embed_dim;
        let f = tokens.narrow(1, 1, t - 1)?.broadcast_matmul(&self.w_out)?;
        Ok(f.transpose(1, 2)?.contiguous()?.reshape((b, e, gh, gw))?)
    }
    fn encode_text(&self, prompts: &[String]) -> CoreResult<Tensor> {
        let e = self.info.embed_dim;
        let rows: Vec<f32> = prompts
            .iter()
            .flat_map(|p| {
                // FNV-1a of the prompt seeds its embedding.
                let h = p.bytes().fold(0xcbf29ce484222325u64, |h, c| {
                    (h ^ c as u64).wrapping_mul(0x100000001b3)
                });
                lcg(h, e, 1.0)
            })
            .collect();
        l2_normalise(
            &Tensor::from_vec(rows, (prompts.len(), e), &self.device)?,
            1,
        )
    }
}
