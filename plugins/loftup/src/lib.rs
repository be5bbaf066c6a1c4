//! segsweep-plugin-loftup: the released LoftUp feature upsampler as a feature-stage plugin.
//!
//! LoftUp (Huang, Wang et al., "LoftUp: Learning a Coordinate-Based Feature Upsampler for Vision
//! Foundation Models", ICCV 2025; github.com/andrehuang/loftup) turns a crop's patch features
//! `(B, 512, h, w)` into per-pixel features `(B, 512, H, W)`: Fourier features of the guidance
//! image pass two 3×3 convolutions and then cross-attend (2 layers, 4 heads) to the LR features
//! plus a sine positional encoding. This crate runs the released CLIP ViT-B/16 checkpoint
//! `haiwen/loftup-clip` (`pytorch_model.bin`, read as data by candle's pickle reader) in candle;
//! the head then takes the per-pixel cosine with the text.
//!
//! It does not train, does not depend on the runner, and never executes pickled code. Central
//! types: [`model::LoftUp`] (the network, keys spelled as in the checkpoint),
//! [`checkpoint::resolve`] (path or repo id → file), [`LoftUpRefiner`] (the plugin).
//!
//! Training distribution. The checkpoint was trained on MaskCLIP-style last-block features
//! (`out_proj(v_proj(ln_1 x))`, no residual, no FFN, then `ln_post` and `proj`) of crops
//! normalised with **ImageNet** mean/std. That is the default, `feature_source =
//! "maskclip-rerun"`: the backbone prefix runs again on the crops re-normalised with
//! `input_norm` (ImageNet), then the MaskCLIP block, whatever the pipeline's attention and
//! normalisation; when the crops already carry `input_norm`'s statistics (`[model]
//! normalisation = "imagenet"`) the pipeline's prefix is reused instead of recomputed.
//! `feature_source = "maskclip"` always reuses the pipeline's prefix (faithful only with
//! `[model] normalisation = "imagenet"`). `// Deviation:` `feature_source = "pipeline"`
//! upsamples the incoming features, e.g. SCLIP's CSA or ResCLIP's output, which keep the
//! residual and FFN and have different statistics: outside LoftUp's training distribution (the
//! channel LayerNorm in front absorbs scale and offset but not that). It is the design notes'
//! Phase 1 combination, available as an option.
//!
//! Design decision: the plugin upsamples each crop on its own. Upstream's `MinMaxScaler` takes
//! the min and max over the whole batch, so batching crops together would make a crop's
//! features depend on its neighbours in the batch and on `batch_size`; per crop it equals
//! upstream at batch 1 (its example and our parity goldens). [`model::LoftUp::forward`] keeps
//! the batch semantics for parity.
//!
//! Deviations (each measured): coordinates are correctly rounded rather than torch.linspace's
//! vector-width-dependent last bit (7.7e-5 of max |out| on the tiny fixture); BatchNorm is
//! folded to a per-channel affine map (rounding only); `output_stride > 1` area-averages the
//! guidance image, which upstream supports but does not use for CLIP.

pub mod checkpoint;
pub mod error;
pub mod model;
pub mod params;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use segsweep_core::{
    Backbone, CoreError, FeatureCtx, FeatureMap, Needs, Params, PluginSpec, Refiner, Stage,
};

pub use error::LoftUpError;
pub use model::{LoftUp, LoftUpConfig};
pub use params::PARAMS;

/// ImageNet mean/std on the 0..=1 scale (upstream `layers.py` `norm`), the checkpoint's input
/// normalisation.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// CLIP's mean/std on the 0..=1 scale (0.48145466, 0.4578275, 0.40821073) /
/// (0.26862954, 0.26130258, 0.27577711), as f32.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_7];
pub const CLIP_STD: [f32; 3] = [0.268_629_5, 0.261_302_6, 0.275_777_1];

/// Attention heads of the released checkpoints (`LoftUp(num_heads=4)`); not stored in weights.
pub const HEADS: usize = 4;

/// Where the LR features come from (see the `feature_source` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSource {
    /// The incoming features (outside the training distribution unless they are MaskCLIP's).
    Pipeline,
    /// MaskCLIP's last block on the pipeline's prefix.
    MaskClip,
    /// MaskCLIP's last block on a prefix of the crops normalised with `input_norm` (default).
    MaskClipRerun,
}

/// The `loftup` plugin: LoftUp at the feature stage.
pub struct LoftUpRefiner {
    checkpoint: PathBuf,
    /// The checkpoint's tensors on the CPU, kept to build a copy on an accelerator on demand.
    state_dict: HashMap<String, Tensor>,
    cpu: LoftUp,
    /// Copy of the model on the backbone's device, when that is not the CPU.
    on_device: Mutex<Option<Arc<LoftUp>>>,
    norm: ([f32; 3], [f32; 3]),
    source: FeatureSource,
    output_stride: usize,
    tile_rows: usize,
}

impl std::fmt::Debug for LoftUpRefiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoftUpRefiner")
            .field("checkpoint", &self.checkpoint)
            .field("model", &self.cpu)
            .field("source", &self.source)
            .field("output_stride", &self.output_stride)
            .field("tile_rows", &self.tile_rows)
            .finish()
    }
}

impl LoftUpRefiner {
    /// Resolve and load the checkpoint now (so a missing file fails before any work).
    pub fn from_params(p: &Params) -> segsweep_core::Result<LoftUpRefiner> {
        let checkpoint =
            checkpoint::resolve(p.str("checkpoint")?, &checkpoint::HubEnv::from_env())?;
        let state_dict = checkpoint::read_state_dict(&checkpoint)?;
        let cpu = LoftUp::from_state_dict(&state_dict, HEADS, &Device::Cpu, &checkpoint)?;
        let norm = match p.str("input_norm")? {
            "clip" => (CLIP_MEAN, CLIP_STD),
            _ => (IMAGENET_MEAN, IMAGENET_STD),
        };
        let source = match p.str("feature_source")? {
            "pipeline" => FeatureSource::Pipeline,
            "maskclip" => FeatureSource::MaskClip,
            _ => FeatureSource::MaskClipRerun,
        };
        tracing::info!(
            checkpoint = %checkpoint.display(),
            params = cpu.num_params(),
            "loaded LoftUp"
        );
        Ok(LoftUpRefiner {
            checkpoint,
            state_dict,
            cpu,
            on_device: Mutex::new(None),
            norm,
            source,
            output_stride: p.usize("output_stride")?,
            tile_rows: p.usize("tile_rows")?,
        })
    }

    /// The model on `device` (built once from the CPU weights for an accelerator).
    fn model_on(&self, device: &Device) -> segsweep_core::Result<Arc<LoftUp>> {
        let mut slot = self
            .on_device
            .lock()
            .map_err(|_| CoreError::plugin("loftup", "model cache lock poisoned"))?;
        if let Some(m) = slot.as_ref().filter(|m| m.device().same_device(device)) {
            return Ok(m.clone());
        }
        let m = Arc::new(LoftUp::from_state_dict(
            &self.state_dict,
            HEADS,
            device,
            &self.checkpoint,
        )?);
        *slot = Some(m.clone());
        Ok(m)
    }

    /// The loaded network.
    pub fn model(&self) -> &LoftUp {
        &self.cpu
    }
}

/// Per-channel `y = (x·std_from + mean_from − mean_to) / std_to` on `(B, 3, H, W)`: undo one
/// normalisation and apply another (both on the 0..=1 scale).
pub fn renormalise(
    x: &Tensor,
    from: ([f32; 3], [f32; 3]),
    to: ([f32; 3], [f32; 3]),
) -> candle_core::Result<Tensor> {
    let mul: Vec<f32> = (0..3).map(|c| from.1[c] / to.1[c]).collect();
    let add: Vec<f32> = (0..3).map(|c| (from.0[c] - to.0[c]) / to.1[c]).collect();
    let col = |v: Vec<f32>| Tensor::from_vec(v, (1, 3, 1, 1), x.device());
    x.to_dtype(DType::F32)?
        .broadcast_mul(&col(mul)?)?
        .broadcast_add(&col(add)?)
}

/// Area (adaptive average) resize of `(B, C, H, W)` to `(B, C, oh, ow)`, as torch's
/// `adaptive_avg_pool2d`: output cell i averages input rows `⌊i·H/oh⌋ .. ⌈(i+1)·H/oh⌉`.
pub fn area_resize(x: &Tensor, oh: usize, ow: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let pool = |out: usize, inp: usize| -> candle_core::Result<Tensor> {
        let mut m = vec![0f32; out * inp];
        for i in 0..out {
            let (s, e) = (i * inp / out, ((i + 1) * inp).div_ceil(out));
            for j in s..e {
                m[i * inp + j] = 1.0 / (e - s) as f32;
            }
        }
        Tensor::from_vec(m, (out, inp), x.device())
    };
    let ph = pool(oh, h)?.broadcast_left(b * c)?;
    let pw = pool(ow, w)?.t()?.broadcast_left(b * c)?;
    ph.matmul(&x.reshape((b * c, h, w))?)?
        .matmul(&pw.contiguous()?)?
        .reshape((b, c, oh, ow))
}

/// MaskCLIP's last block on the prefix output `(B, 1 + N, D)`: `out_proj(v_proj(ln_1 x))`, no
/// attention mixing, no residual, no FFN; then the head (`ln_post`, `proj`) → `(B, E, gh, gw)`.
/// Upstream: loftup `featurizers/maskclip/model.py` `forward_v` and `patch_output`.
pub fn maskclip_features(
    backbone: &dyn Backbone,
    tokens: &Tensor,
    grid: (usize, usize),
) -> segsweep_core::Result<Tensor> {
    let blk = backbone.last_block();
    let (_, _, v) = blk.qkv(&blk.ln_1(tokens)?)?;
    let (b, heads, t, hd) = v.dims4()?;
    let v = v.transpose(1, 2)?.reshape((b, t, heads * hd))?;
    backbone.head(&blk.out_proj(&v)?, grid)
}

impl Refiner for LoftUpRefiner {
    fn name(&self) -> &str {
        "loftup"
    }

    fn features(
        &self,
        feats: FeatureMap,
        ctx: &FeatureCtx<'_>,
    ) -> segsweep_core::Result<FeatureMap> {
        let info = ctx.backbone.info();
        let from = (info.mean, info.std);
        let lr = match self.source {
            FeatureSource::Pipeline => feats.feats.clone(),
            FeatureSource::MaskClip => {
                maskclip_features(ctx.backbone, &ctx.prefix.tokens, ctx.prefix.grid)?
            }
            // The crops already carry `input_norm`'s statistics: the rerun would repeat the
            // pipeline's own prefix pass.
            FeatureSource::MaskClipRerun if from == self.norm => {
                maskclip_features(ctx.backbone, &ctx.prefix.tokens, ctx.prefix.grid)?
            }
            FeatureSource::MaskClipRerun => {
                let crops = renormalise(ctx.crops, from, self.norm)?.to_dtype(ctx.crops.dtype())?;
                let prefix = ctx.backbone.prefix(&crops, &Needs::default())?;
                maskclip_features(ctx.backbone, &prefix.tokens, prefix.grid)?
            }
        };
        let (b, e, _, _) = lr.dims4()?;
        let model = match lr.device() {
            Device::Cpu => None,
            d => Some(self.model_on(d)?),
        };
        let model = model.as_deref().unwrap_or(&self.cpu);
        if e != model.config().dim {
            return Err(CoreError::plugin(
                "loftup",
                format!(
                    "the checkpoint {} upsamples {}-d features but the crop features are {e}-d \
                     (haiwen/loftup-clip expects CLIP ViT-B/16's 512-d projected patch features)",
                    self.checkpoint.display(),
                    model.config().dim
                ),
            ));
        }
        let (cb, _, hc, wc) = ctx.crops.dims4()?;
        if cb != b {
            return Err(CoreError::shape(
                "loftup crops",
                format!("({b}, 3, H, W)"),
                ctx.crops.dims(),
            ));
        }
        let mut guidance = renormalise(ctx.crops, from, self.norm)?;
        if self.output_stride > 1 {
            let s = self.output_stride;
            guidance = area_resize(&guidance, hc.div_ceil(s), wc.div_ceil(s))?;
        }
        // One crop at a time: min-max scaling is per image (see the crate doc). Written in
        // place, since at full resolution a batch of 8 crops is already 8·512·224² f32 = 822 MB.
        let (_, _, ho, wo) = guidance.dims4()?;
        let out = Tensor::zeros((b, e, ho, wo), DType::F32, model.device())?;
        for i in 0..b {
            let y = model.forward_tiled(
                &lr.narrow(0, i, 1)?,
                &guidance.narrow(0, i, 1)?,
                self.tile_rows,
            )?;
            out.slice_set(&y, 0, i)?;
        }
        Ok(FeatureMap {
            feats: out.to_dtype(feats.feats.dtype())?,
            normalised: false,
        })
    }
}

const DOC: &str = "LoftUp (Huang et al., ICCV 2025): a learned cross-attention upsampler that \
turns a crop's patch features (B, 512, h, w) into per-pixel features at the crop resolution \
(or crop / output_stride), guided by Fourier features of the crop image; the head then takes the \
per-pixel cosine with the text. Runs the released checkpoint haiwen/loftup-clip \
(pytorch_model.bin, ~7.2 M parameters, 28.7 MB), loaded at build time. It was trained on \
MaskCLIP-style last-block features of ImageNet-normalised crops, which is the default: \
feature_source = \"maskclip-rerun\" re-runs the backbone prefix on the crops normalised with \
input_norm (ImageNet) and takes the MaskCLIP block, under any attention and normalisation (no \
extra pass when [model] normalisation = \"imagenet\"). feature_source = \"maskclip\" reuses the \
pipeline's prefix (faithful with [model] normalisation = \"imagenet\"). DEVIATION: \
feature_source = \"pipeline\" upsamples the incoming features (e.g. SCLIP's or ResCLIP's), \
which are outside LoftUp's training distribution. Cost: about 645 GFLOP per 224² crop at \
output_stride 1 (16× less at output_stride 4); on a loaded 2-core CPU that was 25 s per crop \
(bench/loftup.sh).";

segsweep_core::register_plugin!(PluginSpec {
    name: "loftup",
    version: 1,
    summary: "LoftUp learned feature upsampler (released CLIP checkpoint) → per-pixel features",
    doc: DOC,
    stage: Stage::Features,
    params: PARAMS,
    // Every parameter is a schema-checked choice or count; the checkpoint is checked
    // when the run builds the plugin, before any image.
    check: |_, _| Ok(()),
    build: |p| Ok(Box::new(LoftUpRefiner::from_params(p)?)),
});
