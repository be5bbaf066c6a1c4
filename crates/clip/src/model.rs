//! [`ClipModel`]: loading, and the [`Backbone`] implementation the pipeline runs on.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, DeviceLocation, Tensor};
use candle_nn::VarBuilder;
use segsweep_core::{Backbone, BackboneInfo, LastBlock, Needs, PrefixOut, WeightsKind};

use crate::attention;
use crate::config::ClipConfig;
use crate::error::{ClipError, Result};
use crate::source::{self, HubEnv, ModelFiles};
use crate::text::Text;
use crate::tokenizer::{ClipTokenizer, VOCAB_SIZE};
use crate::vision::Vision;

/// CLIP's mean on the 0..=1 scale (digits as published by OpenAI).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's std on the 0..=1 scale (digits as published by OpenAI).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Name of the generated tiny model (see [`crate::synthetic`]).
pub const BUILTIN_TINY: &str = "builtin:tiny-random";
/// The `file_hash` recorded for [`BUILTIN_TINY`]: it identifies the generator, not a file;
/// bump it when `synthetic.rs` changes its output.
pub const BUILTIN_TINY_HASH: &str = "synthetic-tiny-v1";

/// A CLIP model (vision and text towers) in candle.
pub struct ClipModel {
    info: BackboneInfo,
    config: ClipConfig,
    device: Device,
    vision: Vision,
    text: Text,
    tokenizer: ClipTokenizer,
    /// (gh, gw) → NACLIP prior for the built-in `naclip` strategy.
    priors: Mutex<HashMap<(usize, usize), Tensor>>,
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ClipModel {
    /// Load from `source`: a local directory (`config.json` + `model.safetensors`, or
    /// `pytorch_model.bin`), a Hugging Face repo id such as `openai/clip-vit-base-patch16`
    /// (cache first, honouring `HF_HOME` and `HF_HUB_OFFLINE`; otherwise downloaded once with a
    /// progress bar), or `builtin:tiny-random`.
    ///
    /// `dtype`: f32 (default everywhere), f16 or bf16 (weights cast; LayerNorm and softmax stay
    /// in f32).
    pub fn load(source: &str, device: &Device, dtype: DType) -> Result<ClipModel> {
        Self::load_with_hub(source, device, dtype, &HubEnv::from_env())
    }

    /// The weights file hash [`ClipModel::load`] would record for `source`
    /// ([`BackboneInfo::file_hash`]), found without loading the model and without network:
    /// `None` where it cannot be told here (a hub repo not in the local cache, a directory that
    /// does not exist or has no weights).
    pub fn weights_hash(source: &str, hub: &HubEnv) -> Option<String> {
        if let Some(name) = source.strip_prefix("builtin:") {
            return (name == "tiny-random").then(|| BUILTIN_TINY_HASH.to_string());
        }
        let path = Path::new(source);
        let weights = if path.is_dir() && !source.starts_with("hf:") {
            source::local_files(path).ok()?.weights
        } else {
            let repo = source.strip_prefix("hf:").unwrap_or(source);
            source::WEIGHT_FILES
                .iter()
                .find_map(|f| hub.cached(repo, f))?
        };
        source::file_hash(&weights).ok()
    }

    /// [`ClipModel::load`] with an explicit Hugging Face environment (tests use a fake cache).
    pub fn load_with_hub(
        source: &str,
        device: &Device,
        dtype: DType,
        hub: &HubEnv,
    ) -> Result<ClipModel> {
        check_dtype(dtype)?;
        if let Some(name) = source.strip_prefix("builtin:") {
            return Self::builtin(name, device, dtype);
        }
        let path = Path::new(source);
        let files = if let Some(repo) = source.strip_prefix("hf:") {
            if !source::looks_like_repo_id(repo) {
                return Err(ClipError::Source {
                    spec: source.to_string(),
                    msg: "`hf:` must be followed by a Hugging Face repo id, `org/name`".into(),
                });
            }
            source::hub_files(repo, hub)?
        } else if path.is_dir() {
            source::local_files(path)?
        } else if source::looks_like_repo_id(source) {
            // `models/clip` where `models/` is a local directory is a mistyped path far more
            // often than a repo id; asking the hub would only hide that.
            if let Some(parent) = path.parent().filter(|p| p.is_dir()) {
                return Err(ClipError::Source {
                    spec: source.to_string(),
                    msg: format!(
                        "no such directory (though {} exists); for the Hugging Face repo of that name write `hf:{source}`",
                        parent.display()
                    ),
                });
            }
            source::hub_files(source, hub)?
        } else {
            return Err(ClipError::Source {
                spec: source.to_string(),
                msg: "not a directory, not a Hugging Face repo id (`org/name` or `hf:org/name`) and not `builtin:tiny-random`".into(),
            });
        };
        Self::from_files(source, &files, device, dtype)
    }

    /// Load from resolved files.
    pub fn from_files(
        model_id: &str,
        files: &ModelFiles,
        device: &Device,
        dtype: DType,
    ) -> Result<ClipModel> {
        check_dtype(dtype)?;
        let config = ClipConfig::from_file(&files.config)?;
        let context = config.text_config.max_position_embeddings;
        let tokenizer = match &files.tokenizer {
            Some(p) => ClipTokenizer::from_json(p, context)?,
            None => ClipTokenizer::new(context),
        };
        if tokenizer.is_builtin() && config.text_config.vocab_size != VOCAB_SIZE {
            return Err(ClipError::Config {
                path: files.config.clone(),
                msg: format!(
                    "text_config.vocab_size is {}, but there is no tokenizer.json and the built-in tokenizer is OpenAI CLIP's ({VOCAB_SIZE})",
                    config.text_config.vocab_size
                ),
            });
        }
        let w = &files.weights;
        let is_pth = w.extension().is_some_and(|e| e == "bin");
        let vb = if is_pth {
            VarBuilder::from_pth(w, DType::F32, device)
        } else {
            // SAFETY: the file is memory-mapped read-only; segsweep never writes weights files
            // while a model is loaded.
            unsafe { VarBuilder::from_mmaped_safetensors(&[w], DType::F32, device) }
        }
        .map_err(|e| ClipError::Weights {
            path: w.clone(),
            msg: weights_msg(e),
        })?;
        let info = BackboneInfo {
            model_id: model_id.to_string(),
            file_hash: source::file_hash(w)?,
            weights: source::weights_kind(&files.dir)?,
            ..base_info(&config, device, dtype)
        };
        Self::build(vb, config, tokenizer, info, device, dtype).map_err(|e| match e {
            ClipError::Candle(c) => ClipError::Weights {
                path: w.clone(),
                msg: weights_msg(c),
            },
            other => other,
        })
    }

    fn builtin(name: &str, device: &Device, dtype: DType) -> Result<ClipModel> {
        if name != "tiny-random" {
            return Err(ClipError::Source {
                spec: format!("builtin:{name}"),
                msg: format!("unknown built-in model; available: {BUILTIN_TINY}"),
            });
        }
        let config = ClipConfig::tiny();
        let tensors = crate::synthetic::synthetic_tensors(&config, 0, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let info = BackboneInfo {
            model_id: BUILTIN_TINY.to_string(),
            file_hash: BUILTIN_TINY_HASH.to_string(),
            weights: WeightsKind::Synthetic,
            ..base_info(&config, device, dtype)
        };
        let tokenizer = ClipTokenizer::new(config.text_config.max_position_embeddings);
        Self::build(vb, config, tokenizer, info, device, dtype)
    }

    fn build(
        vb: VarBuilder,
        config: ClipConfig,
        tokenizer: ClipTokenizer,
        info: BackboneInfo,
        device: &Device,
        dtype: DType,
    ) -> Result<ClipModel> {
        let model = ClipModel {
            vision: Vision::load(&vb, &config, dtype)?,
            text: Text::load(&vb, &config, dtype)?,
            tokenizer,
            config,
            info,
            device: device.clone(),
            priors: Mutex::new(HashMap::new()),
        };
        // The weights were uploaded and converted on this thread's stream (on a GPU, candle's
        // per-thread default stream): finished before another thread (the runner's prefix
        // thread) reads them, since nothing else orders its stream after this one's.
        device.synchronize()?;
        Ok(model)
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The tokenizer (context = `text_config.max_position_embeddings`).
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// Position embedding used for a patch grid `(gh, gw)`: `(1 + gh·gw, D)`.
    pub fn pos_embed(&self, grid: (usize, usize)) -> Result<Tensor> {
        self.vision.pos_embed(grid)
    }

    /// The outputs of vision blocks 1..L−1 (the prefix's per-layer tokens), each
    /// `(B, 1 + gh·gw, D)`, for `crops: (B, 3, H, W)`. For inspection and tests; the pipeline
    /// uses [`Backbone::prefix`].
    pub fn hidden_states(&self, crops: &Tensor) -> Result<Vec<Tensor>> {
        self.vision.hidden_states(crops)
    }

    /// The text tower run on the full 77-token context (reference for the shortened runs of
    /// [`Backbone::encode_text`]; slower, same result): `(P, E)` L2-normalised.
    pub fn encode_text_full_context(&self, prompts: &[String]) -> Result<Tensor> {
        let seqs = self.tokenize(prompts)?;
        self.text.encode_ids(&seqs, Some(self.text.context))
    }

    fn tokenize(&self, prompts: &[String]) -> Result<Vec<Vec<u32>>> {
        prompts.iter().map(|p| self.tokenizer.encode(p)).collect()
    }

    fn prior(&self, grid: (usize, usize)) -> Result<Tensor> {
        let mut cache = self
            .priors
            .lock()
            .map_err(|_| ClipError::Invalid("NACLIP prior cache poisoned".into()))?;
        if let Some(p) = cache.get(&grid) {
            return Ok(p.clone());
        }
        let p = attention::gaussian_prior(grid, attention::NACLIP_SIGMA, &self.device)?;
        // Cached for every thread: on a GPU each thread has its own stream (candle's per-thread
        // default stream) and nothing orders another thread's reads after this upload.
        self.device.synchronize()?;
        cache.insert(grid, p.clone());
        Ok(p)
    }

    fn last(&self) -> &crate::block::Block {
        // `validate` guarantees at least one layer.
        &self.vision.layers[self.vision.layers.len() - 1]
    }
}

/// A candle error about a weights file as the message of [`ClipError::Weights`], which names the
/// file itself: without candle's backtrace and without candle's own `path: "..."` prefix.
fn weights_msg(e: candle_core::Error) -> String {
    match segsweep_core::without_backtrace(e) {
        candle_core::Error::WithPath { inner, .. } => inner.to_string(),
        other => other.to_string(),
    }
}

fn check_dtype(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(ClipError::Invalid(format!(
            "dtype {other:?} is not supported (f32, f16, bf16)"
        ))),
    }
}

fn base_info(c: &ClipConfig, device: &Device, dtype: DType) -> BackboneInfo {
    let v = &c.vision_config;
    BackboneInfo {
        model_id: String::new(),
        file_hash: String::new(),
        weights: WeightsKind::Real,
        patch_size: v.patch_size,
        image_size: v.image_size,
        width: v.hidden_size,
        embed_dim: c.projection_dim,
        layers: v.num_hidden_layers,
        heads: v.num_attention_heads,
        mean: CLIP_MEAN,
        std: CLIP_STD,
        dtype: dtype.as_str().to_string(),
        device: match device.location() {
            DeviceLocation::Cpu => "cpu".to_string(),
            DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        },
    }
}

impl Backbone for ClipModel {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn prefix(&self, crops: &Tensor, needs: &Needs) -> segsweep_core::Result<PrefixOut> {
        Ok(self.vision.prefix(crops, needs)?)
    }

    fn last_block(&self) -> &dyn LastBlock {
        self.last()
    }

    fn builtin_attention(
        &self,
        name: &str,
        x: &Tensor,
        grid: (usize, usize),
    ) -> segsweep_core::Result<Tensor> {
        let b = self.last();
        match name {
            "vanilla" => attention::vanilla(b, x),
            "sclip" => attention::sclip(b, x),
            "naclip" => attention::naclip_with_prior(b, x, &self.prior(grid)?),
            "maskclip" => attention::maskclip(b, x),
            other => Err(ClipError::Invalid(format!(
                "unknown attention strategy `{other}`; built-in strategies: {}",
                attention::BUILTIN.join(", ")
            ))
            .into()),
        }
    }

    fn builtin_attention_names(&self) -> &'static [&'static str] {
        attention::BUILTIN
    }

    fn head(&self, tokens: &Tensor, grid: (usize, usize)) -> segsweep_core::Result<Tensor> {
        Ok(self.vision.head(tokens, grid)?)
    }

    fn encode_text(&self, prompts: &[String]) -> segsweep_core::Result<Tensor> {
        let seqs = self.tokenize(prompts)?;
        Ok(self.text.encode_ids(&seqs, None)?)
    }
}

/// ImageNet's mean on the 0..=1 scale (what LoftUp's CLIP featurizer was trained with).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's std on the 0..=1 scale.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl ClipModel {
    /// Normalise input crops with other statistics (e.g. ImageNet's, on which LoftUp's CLIP
    /// features were trained). [`Backbone::info`] reports them, and the pipeline normalises crops
    /// with what `info()` reports, so plugins that de-normalise stay correct.
    pub fn with_input_normalisation(mut self, mean: [f32; 3], std: [f32; 3]) -> Self {
        self.info.mean = mean;
        self.info.std = std;
        self
    }
}

#[cfg(test)]
mod fused_tests {
    //! The whole tiny model with the fused GPU ops (`segsweep_kernels::block`, forced onto the CPU
    //! through their element-by-element transliterations) against candle's composed ops: the
    //! prefix with recorded attention and q/k/v, every built-in last-block strategy, the head
    //! and the text tower, on non-square crops.

    use std::collections::BTreeSet;

    use candle_core::{DType, Device, Tensor};
    use segsweep_core::{Backbone, Needs};

    use super::ClipModel;
    use crate::attention;
    use segsweep_kernels as fused;

    /// Everything the fused ops touch, in f32.
    fn outputs(m: &ClipModel, crops: &Tensor, dt: DType) -> Vec<(String, Tensor)> {
        let crops = crops.to_dtype(dt).unwrap();
        let needs = Needs {
            attn_probs: BTreeSet::from([3]),
            qkv: BTreeSet::from([5]),
        };
        let p = m.prefix(&crops, &needs).unwrap();
        let b = m.last_block();
        let x = &p.tokens;
        let mut out = vec![
            ("tokens".to_string(), x.clone()),
            ("probs3".into(), p.attn_probs[&3].clone()),
        ];
        let (q, k, v) = &p.qkv[&5];
        out.extend([("q5".into(), q.clone()), ("k5".into(), k.clone())]);
        out.push(("v5".into(), v.clone()));
        for (name, y) in [
            ("vanilla", attention::vanilla(b, x)),
            ("sclip", attention::sclip(b, x)),
            ("naclip", attention::naclip(b, x, p.grid, 5.0)),
            ("maskclip", attention::maskclip(b, x)),
        ] {
            let y = y.unwrap();
            out.push((format!("head({name})"), m.head(&y, p.grid).unwrap()));
            out.push((name.into(), y));
        }
        let text = m.encode_text(&["a cat".into(), "two dogs".into()]).unwrap();
        out.push(("text".into(), text));
        out.into_iter()
            .map(|(n, t)| (n, t.to_dtype(DType::F32).unwrap()))
            .collect()
    }

    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        let s = b.abs().unwrap().flatten_all().unwrap();
        let d = d.max(0).unwrap().to_scalar::<f32>().unwrap();
        d / s.max(0).unwrap().to_scalar::<f32>().unwrap().max(1e-12)
    }

    #[test]
    fn fused_ops_compute_the_same_model_as_the_composed_ops() {
        let load = |dt| ClipModel::load("builtin:tiny-random", &Device::Cpu, dt).unwrap();
        // Non-square crops: a 3×5 patch grid.
        let crops = Tensor::randn(0f32, 1.0, (2, 3, 48, 80), &Device::Cpu).unwrap();
        let m = load(DType::F32);
        let f32_ref = outputs(&m, &crops, DType::F32);
        // f32: the same function up to summation order.
        let fused32 = fused::forced(|| outputs(&m, &crops, DType::F32));
        for ((n, a), (_, b)) in fused32.iter().zip(&f32_ref) {
            assert!(rel(a, b) <= 1e-5, "f32 {n}: {}", rel(a, b));
        }
        // f16: the fused ops round once per op where the composed ops round after each of
        // theirs, so they are at least about as close to the f32 model.
        let m = load(DType::F16);
        let composed16 = outputs(&m, &crops, DType::F16);
        let fused16 = fused::forced(|| outputs(&m, &crops, DType::F16));
        for (((n, f), (_, c)), (_, r)) in fused16.iter().zip(&composed16).zip(&f32_ref) {
            let (ef, ec) = (rel(f, r), rel(c, r));
            assert!(
                ef <= 1.5 * ec + 2e-3,
                "f16 {n}: fused {ef} vs composed {ec}"
            );
        }
    }
}
