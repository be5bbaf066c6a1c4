//! The LoftUp upsampler in candle (Huang et al., "LoftUp: Learning a Coordinate-Based Feature
//! Upsampler for Vision Foundation Models", ICCV 2025).
//!
//! Reference: andrehuang/loftup 6620d9b, `upsamplers/upsamplers.py` (`LoftUp`,
//! `UpsamplerwithChannelNorm`), `upsamplers/layers.py` (`ChannelNorm`, `LayerNorm`,
//! `MinMaxScaler`, `ImplicitFeaturizer`, `CrossAttentionLayer`, `FeedForward`, `CATransformer`),
//! `hubconf.py::loftup_clip`; restated in `shared/research/methods.md` §5. Tensor names below are
//! the checkpoint's keys, spelled exactly as `pytorch_model.bin` spells them.
//!
//! Shapes: LR features `(B, dim, h, w)`, guidance image `(B, 3, H, W)`, output
//! `(B, dim, H, W)` at the guidance resolution. C = dim + 4·lr_freqs is the transformer width
//! (532 for CLIP).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use crate::error::{LoftUpError, Result};

/// torch `nn.LayerNorm` and `nn.BatchNorm2d` default eps.
const TORCH_EPS: f64 = 1e-5;
/// eps of the final ConvNeXt-style channel LayerNorm (`layers.py::LayerNorm`).
const FINAL_LN_EPS: f64 = 1e-6;
/// `MinMaxScaler`'s lower bound on a channel's range.
const MIN_RANGE: f32 = 1e-4;

/// The architecture's sizes. Everything but `heads` is read from the state dict's shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoftUpConfig {
    /// Feature dimension of the backbone (512 for CLIP ViT-B/16's projected features).
    pub dim: usize,
    /// Attention heads of the cross-attention layers (upstream default 4; not in the weights).
    pub heads: usize,
    /// Frequencies of the image Fourier features (20): 10·n_freqs + 3 = 203 input channels.
    pub n_freqs: usize,
    /// Frequencies of the LR sine positional encoding (5): 4·lr_freqs = 20 channels.
    pub lr_freqs: usize,
    /// Hidden width of the feed-forward blocks (`mlp_dim = dim` upstream).
    pub mlp_hidden: usize,
    /// Number of cross-attention layers (2).
    pub depth: usize,
}

impl LoftUpConfig {
    /// `hubconf.py::loftup_clip`: `LoftUp(512, lr_pe_type="sine", lr_size=14)`.
    pub const CLIP_B16: LoftUpConfig = LoftUpConfig {
        dim: 512,
        heads: 4,
        n_freqs: 20,
        lr_freqs: 5,
        mlp_hidden: 512,
        depth: 2,
    };

    /// Transformer width C = dim + 4·lr_freqs (532 for CLIP).
    pub fn channels(&self) -> usize {
        self.dim + 4 * self.lr_freqs
    }

    /// Channels of the query features: sin and cos of 5 inputs × n_freqs, plus the image (203).
    pub fn query_channels(&self) -> usize {
        10 * self.n_freqs + 3
    }

    /// Per-head width, C / heads (133 for CLIP).
    pub fn head_dim(&self) -> usize {
        self.channels() / self.heads
    }

    /// Read the sizes from a state dict's shapes; `heads` is not stored in the weights.
    pub fn from_state_dict(
        sd: &HashMap<String, Tensor>,
        heads: usize,
        path: &Path,
    ) -> Result<Self> {
        let dims = |key: &str| -> Result<Vec<usize>> {
            sd.get(key)
                .map(|t| t.dims().to_vec())
                .ok_or_else(|| LoftUpError::MissingKey {
                    path: path.to_path_buf(),
                    key: key.to_string(),
                })
        };
        // Each size comes from one tensor whose layout is checked first (rank, the fixed axes,
        // no empty axis), so a foreign or damaged checkpoint is an error naming the key and the
        // expected shape rather than a panic or a zero-sized model.
        let sized = |key: &str, layout: &[Option<usize>], expected: &str| -> Result<Vec<usize>> {
            let d = dims(key)?;
            let fits = d.len() == layout.len()
                && d.iter()
                    .zip(layout)
                    .all(|(&n, want)| n > 0 && want.is_none_or(|w| n == w));
            match fits {
                true => Ok(d),
                false => Err(LoftUpError::shape(
                    format!("{}: tensor `{key}`", path.display()),
                    expected,
                    &d,
                )),
            }
        };
        let dim = sized(
            "channelnorm.norm.weight",
            &[None],
            "(dim,), dim ≥ 1 (haiwen/loftup-clip: (512,))",
        )?[0];
        let n_freqs = sized(
            "upsampler.fourier_feat.1.biases",
            &[Some(2), Some(5), None],
            "(2, 5, n_freqs), n_freqs ≥ 1 (haiwen/loftup-clip: (2, 5, 20))",
        )?[2];
        let lr_freqs = sized(
            "upsampler.lr_pe.biases",
            &[Some(2), Some(2), None],
            "(2, 2, lr_freqs), lr_freqs ≥ 1 (haiwen/loftup-clip: (2, 2, 5))",
        )?[2];
        let width = dim + 4 * lr_freqs;
        let mlp_hidden = sized(
            "upsampler.ca_transformer.layers.0.1.net.1.weight",
            &[None, Some(width)],
            &format!(
                "(mlp_hidden, dim + 4·lr_freqs) = (mlp_hidden, {width}), mlp_hidden ≥ 1 \
                 (haiwen/loftup-clip: (512, 532))"
            ),
        )?[0];
        let depth = (0..)
            .take_while(|i| {
                sd.contains_key(&format!(
                    "upsampler.ca_transformer.layers.{i}.0.norm_q.weight"
                ))
            })
            .count();
        let cfg = LoftUpConfig {
            dim,
            heads,
            n_freqs,
            lr_freqs,
            mlp_hidden,
            depth,
        };
        if heads == 0 || !cfg.channels().is_multiple_of(heads) {
            return Err(LoftUpError::Config(format!(
                "transformer width {} is not divisible by {heads} heads",
                cfg.channels()
            )));
        }
        Ok(cfg)
    }

    /// Every key of the state dict this architecture reads, in no particular order.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = [
            "channelnorm.norm.weight",
            "channelnorm.norm.bias",
            "upsampler.fourier_feat.1.biases",
            "upsampler.lr_pe.biases",
            "upsampler.first_conv.0.norm.weight",
            "upsampler.first_conv.0.norm.bias",
            "upsampler.ca_transformer.norm.weight",
            "upsampler.ca_transformer.norm.bias",
            "upsampler.final_conv.0.weight",
            "upsampler.final_conv.0.bias",
            "upsampler.final_conv.1.weight",
            "upsampler.final_conv.1.bias",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for i in [1, 4] {
            k.push(format!("upsampler.first_conv.{i}.weight"));
            k.push(format!("upsampler.first_conv.{i}.bias"));
        }
        for i in [2, 5] {
            for s in [
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked",
            ] {
                k.push(format!("upsampler.first_conv.{i}.{s}"));
            }
        }
        for l in 0..self.depth {
            let p = format!("upsampler.ca_transformer.layers.{l}");
            for s in [
                "0.norm_q.weight",
                "0.norm_q.bias",
                "0.norm_kv.weight",
                "0.norm_kv.bias",
                "0.attention.in_proj_weight",
                "0.attention.in_proj_bias",
                "0.attention.out_proj.weight",
                "0.attention.out_proj.bias",
                "1.net.0.weight",
                "1.net.0.bias",
                "1.net.1.weight",
                "1.net.1.bias",
                "1.net.4.weight",
                "1.net.4.bias",
            ] {
                k.push(format!("{p}.{s}"));
            }
        }
        k
    }
}

/// Tensor lookup with shape checks, on the target device, as f32.
struct Weights<'a> {
    sd: &'a HashMap<String, Tensor>,
    path: &'a Path,
    device: &'a Device,
}

impl Weights<'_> {
    fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.sd.get(key).ok_or_else(|| LoftUpError::MissingKey {
            path: self.path.to_path_buf(),
            key: key.to_string(),
        })?;
        if t.dims() != shape {
            return Err(LoftUpError::shape(key, format!("{shape:?}"), t.dims()));
        }
        Ok(t.to_dtype(DType::F32)?.to_device(self.device)?)
    }

    fn layer_norm(&self, prefix: &str, n: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.get(&format!("{prefix}.weight"), &[n])?,
            self.get(&format!("{prefix}.bias"), &[n])?,
            eps,
        ))
    }

    fn linear(&self, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear::new(
            self.get(&format!("{prefix}.weight"), &[out, inp])?,
            Some(self.get(&format!("{prefix}.bias"), &[out])?),
        ))
    }
}

/// The frequencies exp(linspace(-2, 10, n)) exactly as torch computes them in f32: linspace's
/// two-sided formula (start + k·step below the middle, end − (n−1−k)·step above), then a
/// correctly rounded exp (checked against torch 2.x for n = 5 and 20 in the tests).
fn frequencies(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![(-2f64).exp() as f32];
    }
    let step = 12f32 / (n - 1) as f32;
    (0..n)
        .map(|k| {
            let lin = if k < n / 2 {
                -2f32 + step * k as f32
            } else {
                10f32 - step * (n - 1 - k) as f32
            };
            (lin as f64).exp() as f32
        })
        .collect()
}

/// The coordinate of index `i` of `n` evenly spaced points in [-1, 1], correctly rounded.
// Deviation: torch.linspace's last bit depends on the CPU's vector width (AVX2/AVX-512/CUDA);
// we take the correctly rounded value. Measured effect on the tiny fixture: 7.7e-5 of max |out|
// (tests/reference/loftup_reference.py prints it), all of it from the top frequencies (≈2e4).
fn coordinate(i: usize, n: usize) -> f32 {
    if n <= 1 {
        return -1.0;
    }
    (-1.0 + 2.0 * i as f64 / (n - 1) as f64) as f32
}

/// `(1, 2, rows, w)` grid of (y, x) coordinates for rows `row0..row0 + rows` of an `h`-row image.
fn coordinate_grid(
    row0: usize,
    rows: usize,
    h: usize,
    w: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut data = Vec::with_capacity(2 * rows * w);
    for r in row0..row0 + rows {
        data.extend(std::iter::repeat_n(coordinate(r, h), w));
    }
    for _ in 0..rows {
        data.extend((0..w).map(|c| coordinate(c, w)));
    }
    Ok(Tensor::from_vec(data, (1, 2, rows, w), device)?)
}

/// `ImplicitFeaturizer` with learned biases: sin and cos of every input dim × frequency.
struct Fourier {
    /// `(n, dims)` views of `biases[0]` and `biases[1]` (the raw reshape of a `(dims, n)` slice).
    bias_sin: Tensor,
    bias_cos: Tensor,
    /// `(1, n, 1, 1, 1)`.
    freqs: Tensor,
    n: usize,
    dims: usize,
}

impl Fourier {
    fn load(w: &Weights<'_>, key: &str, dims: usize, n: usize) -> Result<Fourier> {
        let biases = w.get(key, &[2, dims, n])?;
        // Upstream reshapes biases[i] (dims, n) to (n, dims) without transposing; keep that.
        let raw = |i: usize| -> Result<Tensor> { Ok(biases.get(i)?.reshape((1, n, dims, 1, 1))?) };
        Ok(Fourier {
            bias_sin: raw(0)?,
            bias_cos: raw(1)?,
            freqs: Tensor::from_vec(frequencies(n), (1, n, 1, 1, 1), w.device)?,
            n,
            dims,
        })
    }

    /// `(B, dims, h, w)` → `(B, 2·n·dims, h, w)`; channel `k·dims + d` of each half is frequency
    /// k of input d.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, dims, h, w) = x.dims4()?;
        debug_assert_eq!(dims, self.dims);
        let z = x.unsqueeze(1)?.broadcast_mul(&self.freqs)?;
        let flat = (b, self.n * self.dims, h, w);
        let sin = z.broadcast_add(&self.bias_sin)?.reshape(flat)?.sin()?;
        let cos = z.broadcast_add(&self.bias_cos)?.reshape(flat)?.cos()?;
        Ok(Tensor::cat(&[sin, cos], 1)?)
    }
}

/// LayerNorm over the channels of `(B, C, H, W)` (`ChannelNorm`).
fn channel_norm(ln: &LayerNorm, x: &Tensor) -> Result<Tensor> {
    let y = ln.forward(&x.permute((0, 2, 3, 1))?.contiguous()?)?;
    Ok(y.permute((0, 3, 1, 2))?.contiguous()?)
}

/// `MinMaxScaler`: each channel to [-0.5, 0.5] with min and max over batch × H × W.
pub fn min_max_scale(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let flat = x.transpose(0, 1)?.contiguous()?.reshape((c, b * h * w))?;
    let lo = flat.min_keepdim(1)?;
    let range = flat.max_keepdim(1)?.sub(&lo)?.maximum(MIN_RANGE)?;
    let lo = lo.reshape((1, c, 1, 1))?;
    let range = range.reshape((1, c, 1, 1))?;
    Ok(x.broadcast_sub(&lo)?
        .broadcast_div(&range)?
        .affine(1.0, -0.5)?)
}

/// A 3×3 convolution (padding 1 in torch) applied to a band of rows. Columns are always
/// zero-padded; rows only where the band touches the image border, so interior bands use their
/// real neighbours and the result equals the full-image convolution. Loses one row at each
/// non-border side.
struct Conv3x3 {
    weight: Tensor,
    /// `(1, C, 1, 1)`.
    bias: Tensor,
    /// BatchNorm (eval mode) folded to `y = x·scale + shift`, each `(1, C, 1, 1)`.
    bn_scale: Tensor,
    bn_shift: Tensor,
}

impl Conv3x3 {
    fn load(w: &Weights<'_>, conv: &str, bn: &str, cin: usize, cout: usize) -> Result<Conv3x3> {
        let g = |name: &str| w.get(&format!("{bn}.{name}"), &[cout]);
        let (gamma, beta, mean, var) = (
            g("weight")?,
            g("bias")?,
            g("running_mean")?,
            g("running_var")?,
        );
        let scale = gamma.div(&var.affine(1.0, TORCH_EPS)?.sqrt()?)?;
        let shift = beta.sub(&mean.mul(&scale)?)?;
        let col = |t: Tensor| t.reshape((1, cout, 1, 1));
        Ok(Conv3x3 {
            weight: w.get(&format!("{conv}.weight"), &[cout, cin, 3, 3])?,
            bias: col(w.get(&format!("{conv}.bias"), &[cout])?)?,
            bn_scale: col(scale)?,
            bn_shift: col(shift)?,
        })
    }

    /// conv → BN → ReLU on `(B, Cin, rows, W)`; `top`/`bottom`: the band touches that border.
    fn forward(&self, x: &Tensor, top: bool, bottom: bool) -> Result<Tensor> {
        let x =
            x.pad_with_zeros(3, 1, 1)?
                .pad_with_zeros(2, usize::from(top), usize::from(bottom))?;
        let y = x
            .conv2d(&self.weight, 0, 1, 1, 1)?
            .broadcast_add(&self.bias)?;
        Ok(y.broadcast_mul(&self.bn_scale)?
            .broadcast_add(&self.bn_shift)?
            .relu()?)
    }
}

/// One `CrossAttentionLayer` + `FeedForward` pair of the `CATransformer`.
struct Layer {
    norm_q: LayerNorm,
    norm_kv: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ff_norm: LayerNorm,
    ff1: Linear,
    ff2: Linear,
}

/// Keys and values of one layer for the LR tokens, computed once per image and shared by all
/// query tiles: kᵀ `(B, heads, head_dim, T)` and v `(B, heads, T, head_dim)`.
struct KeyValues {
    k_t: Tensor,
    v: Tensor,
}

impl Layer {
    fn load(w: &Weights<'_>, p: &str, cfg: &LoftUpConfig) -> Result<Layer> {
        let c = cfg.channels();
        let in_w = w.get(&format!("{p}.0.attention.in_proj_weight"), &[3 * c, c])?;
        let in_b = w.get(&format!("{p}.0.attention.in_proj_bias"), &[3 * c])?;
        // torch MultiheadAttention packs q, k, v projections as rows [0, C), [C, 2C), [2C, 3C).
        let part = |i: usize| -> Result<Linear> {
            Ok(Linear::new(
                in_w.narrow(0, i * c, c)?.contiguous()?,
                Some(in_b.narrow(0, i * c, c)?),
            ))
        };
        Ok(Layer {
            norm_q: w.layer_norm(&format!("{p}.0.norm_q"), c, TORCH_EPS)?,
            norm_kv: w.layer_norm(&format!("{p}.0.norm_kv"), c, TORCH_EPS)?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            out: w.linear(&format!("{p}.0.attention.out_proj"), c, c)?,
            ff_norm: w.layer_norm(&format!("{p}.1.net.0"), c, TORCH_EPS)?,
            ff1: w.linear(&format!("{p}.1.net.1"), cfg.mlp_hidden, c)?,
            ff2: w.linear(&format!("{p}.1.net.4"), c, cfg.mlp_hidden)?,
        })
    }

    /// `(B, T, C)` → `(B, heads, T, head_dim)`.
    fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        Ok(x.reshape((b, t, heads, c / heads))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// The LR tokens `(B, T, C)` through the shared `norm_kv` and the k, v projections.
    fn key_values(&self, kv: &Tensor, heads: usize) -> Result<KeyValues> {
        let kv = self.norm_kv.forward(kv)?;
        let k = Self::split_heads(&self.k.forward(&kv)?, heads)?;
        let v = Self::split_heads(&self.v.forward(&kv)?, heads)?;
        Ok(KeyValues {
            k_t: k.transpose(2, 3)?.contiguous()?,
            v,
        })
    }

    /// Queries `(B, N, C)` → `(B, N, C)`: `q += MHA(LN_q q, LN_kv kv, LN_kv kv); q += FF(q)`.
    fn forward(&self, x: &Tensor, kv: &KeyValues, heads: usize) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let q = Self::split_heads(&self.q.forward(&self.norm_q.forward(x)?)?, heads)?;
        let scale = 1.0 / ((c / heads) as f64).sqrt();
        let attn = candle_nn::ops::softmax_last_dim(&(q.matmul(&kv.k_t)? * scale)?)?;
        let o = attn.matmul(&kv.v)?.transpose(1, 2)?.reshape((b, n, c))?;
        let x = (x + self.out.forward(&o)?)?;
        let h = self.ff1.forward(&self.ff_norm.forward(&x)?)?.gelu_erf()?;
        Ok((&x + self.ff2.forward(&h)?)?)
    }
}

/// LoftUp with its input channel norm (`UpsamplerwithChannelNorm`), ready for inference.
pub struct LoftUp {
    cfg: LoftUpConfig,
    channelnorm: LayerNorm,
    fourier: Fourier,
    lr_pe: Fourier,
    first_norm: LayerNorm,
    conv1: Conv3x3,
    conv2: Conv3x3,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    final_proj: Linear,
    final_ln: LayerNorm,
    n_params: usize,
    device: Device,
}

impl std::fmt::Debug for LoftUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoftUp")
            .field("cfg", &self.cfg)
            .field("n_params", &self.n_params)
            .finish()
    }
}

impl LoftUp {
    /// Read a `torch.save(state_dict)` file (see [`crate::checkpoint`]) and build the model.
    pub fn load(path: &Path, heads: usize, device: &Device) -> Result<LoftUp> {
        let sd = crate::checkpoint::read_state_dict(path)?;
        Self::from_state_dict(&sd, heads, device, path)
    }

    /// Build from a state dict (`path` only names the origin in errors). Refuses missing and
    /// unexpected keys, as torch's strict `load_state_dict` does.
    pub fn from_state_dict(
        sd: &HashMap<String, Tensor>,
        heads: usize,
        device: &Device,
        path: &Path,
    ) -> Result<LoftUp> {
        let cfg = LoftUpConfig::from_state_dict(sd, heads, path)?;
        let expected: BTreeSet<String> = cfg.keys().into_iter().collect();
        let unexpected: Vec<String> = sd
            .keys()
            .filter(|k| !expected.contains(*k))
            .cloned()
            .collect();
        if !unexpected.is_empty() {
            let mut keys = unexpected;
            keys.sort();
            return Err(LoftUpError::UnexpectedKeys {
                path: path.to_path_buf(),
                keys,
            });
        }
        let w = Weights { sd, path, device };
        let (c, q_in) = (cfg.channels(), cfg.query_channels());
        let layers = (0..cfg.depth)
            .map(|l| Layer::load(&w, &format!("upsampler.ca_transformer.layers.{l}"), &cfg))
            .collect::<Result<Vec<_>>>()?;
        let model = LoftUp {
            channelnorm: w.layer_norm("channelnorm.norm", cfg.dim, TORCH_EPS)?,
            fourier: Fourier::load(&w, "upsampler.fourier_feat.1.biases", 5, cfg.n_freqs)?,
            lr_pe: Fourier::load(&w, "upsampler.lr_pe.biases", 2, cfg.lr_freqs)?,
            first_norm: w.layer_norm("upsampler.first_conv.0.norm", q_in, TORCH_EPS)?,
            conv1: Conv3x3::load(
                &w,
                "upsampler.first_conv.1",
                "upsampler.first_conv.2",
                q_in,
                c,
            )?,
            conv2: Conv3x3::load(&w, "upsampler.first_conv.4", "upsampler.first_conv.5", c, c)?,
            layers,
            final_norm: w.layer_norm("upsampler.ca_transformer.norm", c, TORCH_EPS)?,
            final_proj: Linear::new(
                w.get("upsampler.final_conv.0.weight", &[cfg.dim, c, 1, 1])?
                    .reshape((cfg.dim, c))?,
                Some(w.get("upsampler.final_conv.0.bias", &[cfg.dim])?),
            ),
            final_ln: w.layer_norm("upsampler.final_conv.1", cfg.dim, FINAL_LN_EPS)?,
            n_params: count_params(sd),
            device: device.clone(),
            cfg,
        };
        Ok(model)
    }

    pub fn config(&self) -> &LoftUpConfig {
        &self.cfg
    }

    /// Number of learned parameters (BatchNorm running statistics not counted).
    pub fn num_params(&self) -> usize {
        self.n_params
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Upsample in one piece: LR features `(B, dim, h, w)` and guidance `(B, 3, H, W)` →
    /// `(B, dim, H, W)`. The guidance is min-max scaled over the whole batch, as upstream does.
    pub fn forward(&self, lr: &Tensor, guidance: &Tensor) -> Result<Tensor> {
        let h = guidance.dim(2)?;
        self.forward_tiled(lr, guidance, h.max(1))
    }

    /// [`LoftUp::forward`] in bands of `tile_rows` output rows, to bound memory (the 532-channel
    /// maps and the convolutions' im2col buffers grow with H·W). Exact: each query attends to all
    /// h·w LR tokens, and each band's convolutions read two halo rows on each side.
    pub fn forward_tiled(
        &self,
        lr: &Tensor,
        guidance: &Tensor,
        tile_rows: usize,
    ) -> Result<Tensor> {
        let (b, dim, lh, lw) = lr.dims4()?;
        if dim != self.cfg.dim {
            return Err(LoftUpError::shape(
                "LoftUp LR features",
                format!("(B, {}, h, w)", self.cfg.dim),
                lr.dims(),
            ));
        }
        let (gb, gc, h, w) = guidance.dims4()?;
        if gb != b || gc != 3 || h == 0 || w == 0 {
            return Err(LoftUpError::shape(
                "LoftUp guidance image",
                format!("({b}, 3, H, W)"),
                guidance.dims(),
            ));
        }
        if tile_rows == 0 {
            return Err(LoftUpError::Config("tile_rows must be at least 1".into()));
        }
        let lr = lr.to_dtype(DType::F32)?.to_device(&self.device)?;
        let guidance = guidance.to_dtype(DType::F32)?.to_device(&self.device)?;

        // Keys/values: channel-normed LR features with the LR sine PE appended, (B, h·w, C).
        let lr = channel_norm(&self.channelnorm, &lr)?;
        let pe = self
            .lr_pe
            .forward(&coordinate_grid(0, lh, lh, lw, &self.device)?)?
            .broadcast_as((b, 4 * self.cfg.lr_freqs, lh, lw))?;
        let kv = Tensor::cat(&[lr, pe.contiguous()?], 1)?
            .flatten_from(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let kvs = self
            .layers
            .iter()
            .map(|l| l.key_values(&kv, self.cfg.heads))
            .collect::<Result<Vec<_>>>()?;

        let scaled = min_max_scale(&guidance)?;
        // Bands are written in place: concatenating them would hold the output twice.
        let out = Tensor::zeros((b, self.cfg.dim, h, w), DType::F32, &self.device)?;
        for r0 in (0..h).step_by(tile_rows) {
            let r1 = (r0 + tile_rows).min(h);
            let q = self.query_features(&scaled, r0, r1)?;
            let mut x = q.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
            for (layer, kv) in self.layers.iter().zip(&kvs) {
                x = layer.forward(&x, kv, self.cfg.heads)?;
            }
            let x = self.final_norm.forward(&x)?;
            // final_conv: a 1×1 conv (a per-pixel linear map), then the channel LN (eps 1e-6).
            let y = self.final_ln.forward(&self.final_proj.forward(&x)?)?;
            let band = y.transpose(1, 2)?.reshape((b, self.cfg.dim, r1 - r0, w))?;
            out.slice_set(&band.contiguous()?, 2, r0)?;
        }
        Ok(out)
    }

    /// `first_conv(fourier_feat(img))` for output rows `r0..r1` of the min-max scaled image
    /// `(B, 3, H, W)` → `(B, C, r1 - r0, W)`.
    fn query_features(&self, scaled: &Tensor, r0: usize, r1: usize) -> Result<Tensor> {
        let (b, _, h, w) = scaled.dims4()?;
        // Two 3×3 convolutions need two rows of context on each side.
        let (a, e) = (r0.saturating_sub(2), (r1 + 2).min(h));
        let img = scaled.narrow(2, a, e - a)?;
        let grid = coordinate_grid(a, e - a, h, w, &self.device)?.broadcast_as((b, 2, e - a, w))?;
        let inp = Tensor::cat(&[grid.contiguous()?, img.clone()], 1)?;
        let feats = Tensor::cat(&[self.fourier.forward(&inp)?, img], 1)?;
        let x = channel_norm(&self.first_norm, &feats)?;
        let x = self.conv1.forward(&x, a == 0, e == h)?;
        let a1 = if a == 0 { 0 } else { a + 1 };
        let e1 = if e == h { h } else { e - 1 };
        let x = self.conv2.forward(&x, a1 == 0, e1 == h)?;
        let a2 = if a1 == 0 { 0 } else { a1 + 1 };
        Ok(x.narrow(2, r0 - a2, r1 - r0)?)
    }
}

/// Learned parameters of a state dict: everything but BatchNorm's running statistics.
fn count_params(sd: &HashMap<String, Tensor>) -> usize {
    sd.iter()
        .filter(|(k, _)| {
            !(k.ends_with("running_mean")
                || k.ends_with("running_var")
                || k.ends_with("num_batches_tracked"))
        })
        .map(|(_, t)| t.elem_count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_match_torch_bit_for_bit() {
        // torch.exp(torch.linspace(-2, 10, n)).tolist() with torch 2.15 on this CPU.
        let t5 = [
            0.1353352814912796,
            2.7182817459106445,
            54.598148345947266,
            1096.6331787109375,
            22026.46484375,
        ];
        let t20_last = [
            3311.851806640625,
            6228.19677734375,
            11712.6123046875,
            22026.46484375,
        ];
        let t20_mid = [39.81366729736328f64, 74.87272644042969];
        let f5 = frequencies(5);
        for (a, b) in f5.iter().zip(t5) {
            assert_eq!(*a, b as f32);
        }
        let f20 = frequencies(20);
        for (a, b) in f20[16..].iter().zip(t20_last) {
            assert_eq!(*a, b as f32);
        }
        assert_eq!(f20[9], t20_mid[0] as f32);
        assert_eq!(f20[10], t20_mid[1] as f32);
    }

    #[test]
    fn coordinates_span_minus_one_to_one() {
        assert_eq!(coordinate(0, 5), -1.0);
        assert_eq!(coordinate(2, 5), 0.0);
        assert_eq!(coordinate(4, 5), 1.0);
        assert_eq!(coordinate(0, 1), -1.0);
        let g = coordinate_grid(1, 2, 3, 4, &Device::Cpu).unwrap();
        assert_eq!(g.dims(), &[1, 2, 2, 4]);
        let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        // y rows 1, 2 of 3 → 0, 1; x over 4 columns.
        assert_eq!(&v[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(v[8], -1.0);
        assert!((v[9] + 1.0 / 3.0).abs() < 1e-7);
    }

    #[test]
    fn min_max_scale_uses_batch_range_and_clamps_flat_channels() {
        // Channel 0 spans [0, 4] over the batch, channel 1 is constant, channel 2 spans [-1, 1].
        let x = Tensor::from_vec(
            vec![0f32, 1., 7., 7., -1., 0., 2., 4., 7., 7., 1., 0.],
            (2, 3, 1, 2),
            &Device::Cpu,
        )
        .unwrap();
        let y: Vec<f32> = min_max_scale(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = [
            -0.5, -0.25, -0.5, -0.5, -0.5, 0.0, 0.0, 0.5, -0.5, -0.5, 0.5, 0.0,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }
}
