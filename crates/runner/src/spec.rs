//! Step 1 of reading a spec: the raw TOML sections as written, layered with figment
//! (built-in defaults < spec file < `SEGSWEEP_*` environment < `--set key=value`).
//!
//! Every field documents its unit and default. `deny_unknown_fields` everywhere, so a typo is an
//! error with the key's path instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunnerError};

/// The sections a spec may have (the `[[pipeline]]` array and `[sweep]` included).
pub const SECTIONS: [&str; 6] = [
    "experiment",
    "model",
    "dataset",
    "inference",
    "pipeline",
    "sweep",
];

/// `[experiment]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentSection {
    /// Name; results go to `<output_dir>/<name>/<run-id>/` (default `experiment`).
    pub name: String,
    /// Free text, copied into the run directory with the spec.
    pub description: String,
    /// Seed for random dataset subsets (default 0).
    pub seed: u64,
    /// Root of all results (default `results`).
    pub output_dir: PathBuf,
    /// Save a prediction overlay PNG per image and configuration (default false).
    pub save_visualisations: bool,
    /// At most this many images per configuration get an overlay (default 20).
    pub max_visualisations: usize,
    /// MiB (2^20 bytes) of intermediates the runner may hold per image: the shared backbone
    /// prefix and one shared dense-logits map (default 1024). Over it, the prefix is dropped
    /// and recomputed, or spilled (see `spill`). 0 keeps nothing for later configurations.
    pub memory_budget_mb: u64,
    /// What to do with a prefix over the budget: `none` (default: drop and recompute, results
    /// identical), `f32` (scratch file, identical) or `f16` (scratch file, close results).
    pub spill: String,
    /// Directory for spill scratch files (default `<run dir>/cache`).
    pub spill_dir: Option<PathBuf>,
    /// Keep every image's backbone prefix on disk across runs and reuse it: `none` (default),
    /// `f32` (results identical to computing it) or `f16` (half the disk, close results).
    pub feature_cache: String,
    /// Directory of the feature cache (default `<output_dir>/.cache/features`).
    pub feature_cache_dir: Option<PathBuf>,
    /// Samples decoded ahead of inference, in parallel on a background thread (default: one per
    /// CPU thread, from 2 to 32). 0 decodes each sample on the runner's thread when it is reached; at most
    /// 4096. Only speed and memory (one decoded image and label each) depend on it.
    pub load_ahead: Option<usize>,
}

impl Default for ExperimentSection {
    fn default() -> Self {
        ExperimentSection {
            name: "experiment".into(),
            description: String::new(),
            seed: 0,
            output_dir: "results".into(),
            save_visualisations: false,
            max_visualisations: 20,
            memory_budget_mb: 1024,
            spill: "none".into(),
            spill_dir: None,
            feature_cache: "none".into(),
            feature_cache_dir: None,
            load_ahead: None,
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Hugging Face repo id, local directory (config.json + model.safetensors) or
    /// `builtin:tiny-random` (default `openai/clip-vit-base-patch16`).
    pub source: String,
    /// `f32` (default), `f16` or `bf16`.
    pub dtype: String,
    /// `cpu` (default) or `cuda:N` (needs a build with `--features cuda`).
    pub device: String,
    /// Input statistics: `clip` (default, CLIP's mean/std) or `imagenet` (what LoftUp's CLIP
    /// features were trained with).
    pub normalisation: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            source: "openai/clip-vit-base-patch16".into(),
            dtype: "f32".into(),
            device: "cpu".into(),
            normalisation: "clip".into(),
        }
    }
}

/// `[dataset]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetSection {
    /// A registered benchmark (`voc21`, `voc20`, `context60`, `context59`, `coco-stuff164k`,
    /// `coco-object`, `ade20k`, `cityscapes`), `synthetic`, or `custom` (then `[dataset.custom]`).
    pub name: String,
    /// Dataset root; default `data/<mmseg layout root>` (e.g. `data/VOCdevkit/VOC2012`).
    pub root: Option<PathBuf>,
    /// Split; only `val` has a registered layout (default `val`).
    pub split: String,
    /// Use only this many samples (default: all).
    pub num_samples: Option<usize>,
    /// `first` (the first N in split order, as the old `--num-samples`) or `random` (a subset
    /// seeded with `experiment.seed`). Default `first`.
    pub subset: String,
    /// Class-name file overriding the dataset's (SCLIP format).
    pub classes: Option<PathBuf>,
    /// Resize so the short side is this many pixels; default: the dataset's SCLIP setting
    /// (336; COCO-Stuff 448, Cityscapes 560; synthetic/custom: 224).
    pub short_side: Option<usize>,
    /// Skip unreadable or mismatched files with a warning instead of stopping (default false).
    pub skip_bad: bool,
    /// Number of generated images for `synthetic` (default 6).
    pub synthetic_images: usize,
    /// The custom dataset, when `name = "custom"`.
    pub custom: Option<segsweep_data::CustomConfig>,
}

impl Default for DatasetSection {
    fn default() -> Self {
        DatasetSection {
            name: "synthetic".into(),
            root: None,
            split: "val".into(),
            num_samples: None,
            subset: "first".into(),
            classes: None,
            short_side: None,
            skip_bad: false,
            synthetic_images: 6,
            custom: None,
        }
    }
}

/// `[inference]`: every field defaults to the dataset's SCLIP setting, then to SCLIP's global
/// defaults (slide 224/112, logit_scale 40, prob_thd 0, no area_thd, `sclip` attention).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceSection {
    /// `slide` or `whole`.
    pub mode: Option<String>,
    /// Window size in pixels.
    pub crop: Option<usize>,
    /// Window stride in pixels.
    pub stride: Option<usize>,
    /// Multiplier on cosine logits before the softmax.
    pub logit_scale: Option<f64>,
    /// Pixels whose max class probability is below this become background (class 0).
    pub prob_thd: Option<f64>,
    /// Foreground classes covering at most this share of foreground pixels are dropped.
    pub area_thd: Option<f64>,
    /// Built-in last-block strategy: `vanilla`, `sclip`, `naclip` or `maskclip`.
    pub attention: Option<String>,
    /// Crops per backbone batch (default 8).
    pub batch_size: Option<usize>,
}

/// One `[[sweep.variants]]` entry: a named ablation row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSection {
    /// Name shown in tables and charts (`baseline`, `+cliptrase`, ...).
    pub name: String,
    /// Pipeline entries (by id) switched on in this variant, in pipeline order; default: all.
    #[serde(default)]
    pub pipeline: Option<Vec<String>>,
    /// Values overridden in this variant, by dotted path.
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
}

/// `[sweep]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepSection {
    /// Cartesian product over dotted parameter paths.
    pub grid: BTreeMap<String, Vec<toml::Value>>,
    /// Lists that advance together (all the same length).
    pub zip: BTreeMap<String, Vec<toml::Value>>,
    /// Explicit configurations, each a table of dotted paths → values.
    pub list: Vec<BTreeMap<String, toml::Value>>,
    /// Named variants; the ablation table is variants × grid × zip × list.
    pub variants: Vec<VariantSection>,
    /// Variant the delta chart compares against (default `baseline` if present).
    pub baseline: Option<String>,
}

/// A whole spec as written, after layering.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpec {
    pub experiment: ExperimentSection,
    pub model: ModelSection,
    pub dataset: DatasetSection,
    pub inference: InferenceSection,
    /// Ordered refiners: `plugin = "name"`, optional `id` (default: the plugin name), then the
    /// plugin's parameters.
    pub pipeline: Vec<toml::Table>,
    pub sweep: SweepSection,
}

/// A spec file read from disk: its text (saved with the results) and the layered tree.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub path: PathBuf,
    pub text: String,
    /// The layered settings as one TOML table (sweeps are applied to this tree).
    pub tree: toml::Table,
    pub raw: RawSpec,
}

impl LoadedSpec {
    /// The file name used in error messages.
    pub fn file(&self) -> String {
        self.path.display().to_string()
    }
}

/// Parse a `--set key=value` argument: the value is TOML (`0.1`, `"paper"`, `[8, 16]`); a bare
/// word that is not valid TOML is taken as a string.
pub fn parse_set(arg: &str) -> Result<(String, toml::Value)> {
    let (key, value) = arg.split_once('=').ok_or_else(|| {
        RunnerError::spec(
            "--set",
            arg,
            "expected KEY=VALUE",
            Some("e.g. --set inference.prob_thd=0.1 or --set cliptrase.variant=paper".into()),
        )
    })?;
    let key = key.trim().to_string();
    let value = value.trim();
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key, parsed))
}

/// The `SEGSWEEP_<SECTION>__<KEY>` variables of the environment, as (variable, dotted key in
/// lower case): `SEGSWEEP_INFERENCE__PROB_THD` → `inference.prob_thd`, as figment reads them.
pub(crate) fn env_spec_keys() -> Vec<(String, String)> {
    std::env::vars()
        .filter_map(|(var, _)| {
            let (section, key) = var.strip_prefix("SEGSWEEP_")?.split_once("__")?;
            let dotted = format!("{section}.{}", key.replace("__", ".")).to_ascii_lowercase();
            Some((var.clone(), dotted))
        })
        .collect()
}

/// Read and layer a spec: defaults < file < `SEGSWEEP_<SECTION>__<KEY>` environment < `sets`
/// whose first segment is a section (`inference.prob_thd=0.1`). Sets addressing a pipeline entry
/// (`cliptrase.correlation_temperature=0.1`) are applied by [`crate::sweep::expand`].
pub fn load(path: &Path, sets: &[(String, toml::Value)]) -> Result<LoadedSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| RunnerError::Io {
        path: path.to_path_buf(),
        cause: e,
        hint: Some("pass the path of an experiment spec, e.g. experiments/demo.toml".into()),
    })?;
    load_text(path, text, sets)
}

/// [`load`] on spec text already in memory; `path` labels errors and results.
pub fn load_text(path: &Path, text: String, sets: &[(String, toml::Value)]) -> Result<LoadedSpec> {
    let file = path.display().to_string();
    // Parse once with toml 1.x first: its syntax errors carry line, column and a snippet.
    let table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            return Err(RunnerError::spec(
                &file,
                "(syntax)",
                format!("malformed TOML: {e}"),
                Some("check quoting and brackets; dotted sweep keys must be quoted".into()),
            ))
        }
    };
    // A [dataset.custom] table is read only with name = "custom"; for any other dataset its
    // missing fields would be reported as if they mattered.
    let dataset = table.get("dataset").and_then(|d| d.as_table());
    let name = sets
        .iter()
        .rev()
        .find(|(k, _)| k == "dataset.name")
        .and_then(|(_, v)| v.as_str())
        .or_else(|| dataset.and_then(|d| d.get("name")).and_then(|n| n.as_str()));
    if dataset.is_some_and(|d| d.contains_key("custom")) && name != Some("custom") {
        return Err(RunnerError::spec(
            &file,
            "dataset.custom",
            format!(
                "a [dataset.custom] table with dataset name `{}`",
                name.unwrap_or("(none)")
            ),
            Some("set [dataset] name = \"custom\" to use it, or remove the table".into()),
        ));
    }
    // `SEGSWEEP_<SECTION>__<KEY>` for a section that is not layered from the environment (a
    // typo, a pipeline entry, [sweep]) would be ignored silently: name it instead.
    // One underscore where two are needed (`SEGSWEEP_INFERENCE_PROB_THD`) is a likely slip.
    if let Some(var) = std::env::vars().map(|(v, _)| v).find(|v| {
        v.strip_prefix("SEGSWEEP_").is_some_and(|rest| {
            !rest.contains("__")
                && SECTIONS[..4].iter().any(|s| {
                    rest.len() > s.len() + 1
                        && rest[..s.len()].eq_ignore_ascii_case(s)
                        && rest.as_bytes()[s.len()] == b'_'
                })
        })
    }) {
        return Err(RunnerError::spec(
            &format!("{file} (via SEGSWEEP_* environment)"),
            &var,
            "a spec key needs two underscores between section and key",
            Some(format!(
                "write SEGSWEEP_<SECTION>__<KEY>, e.g. {}",
                var.replacen('_', "__", 2)
                    .replacen("SEGSWEEP__", "SEGSWEEP_", 1)
            )),
        ));
    }
    if let Some((var, section)) = env_spec_keys().into_iter().find_map(|(var, key)| {
        let section = key.split('.').next().unwrap_or("").to_string();
        (!SECTIONS[..4].contains(&section.as_str())).then_some((var, section))
    }) {
        let near = segsweep_core::registry::nearest(&section, SECTIONS[..4].iter().copied());
        return Err(RunnerError::spec(
            &format!("{file} (via SEGSWEEP_* environment)"),
            var,
            format!(
                "`{section}` is not a section the environment can set{}",
                near.map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default()
            ),
            Some(format!(
                "SEGSWEEP_<SECTION>__<KEY> sets {}; use --set for pipeline entries and the sweep, or unset the variable",
                SECTIONS[..4].join(", ")
            )),
        ));
    }
    let mut fig = Figment::from(Serialized::defaults(RawSpec::default()))
        .merge(Toml::string(&text))
        .merge(
            Env::prefixed("SEGSWEEP_")
                .split("__")
                // figment filters before it lower-cases the key, so compare without case:
                // `SEGSWEEP_INFERENCE__PROB_THD` arrives here as `INFERENCE.PROB_THD`.
                .filter(|k| {
                    let section = k.as_str().split('.').next().unwrap_or("");
                    SECTIONS[..4]
                        .iter()
                        .any(|s| section.eq_ignore_ascii_case(s))
                }),
        );
    for (key, value) in sets {
        let section = key.split('.').next().unwrap_or("");
        if SECTIONS[..4].contains(&section) {
            fig = fig.merge(Serialized::default(key, SetValue(value)));
        }
    }
    let raw: RawSpec = fig.extract().map_err(|e| figment_error(&file, e))?;
    // The tree sweeps are applied to: the layered spec serialised back (unset options vanish).
    let tree = match toml::Value::try_from(&raw) {
        Ok(toml::Value::Table(t)) => t,
        Ok(_) | Err(_) => {
            return Err(RunnerError::spec(
                &file,
                "(top level)",
                "a value does not fit TOML (integers must be at most 9223372036854775807)",
                Some("check large numbers in the spec, --set and SEGSWEEP_* variables".into()),
            ))
        }
    };
    Ok(LoadedSpec {
        path: path.to_path_buf(),
        text,
        tree,
        raw,
    })
}

/// A `--set` value, as its own type: figment names a provider by its value's type, so an error
/// about this value can say it came from `--set`.
#[derive(Serialize)]
#[serde(transparent)]
struct SetValue<'a>(&'a toml::Value);

fn figment_error(file: &str, err: figment::Error) -> RunnerError {
    let err = err
        .into_iter()
        .next()
        .unwrap_or_else(|| figment::Error::from("unknown error".to_string()));
    let key = if err.path.is_empty() {
        "(top level)".to_string()
    } else {
        err.path.join(".")
    };
    let source = match err.metadata.as_ref().map(|m| m.name.to_string()) {
        Some(n) if n.contains("environment") => format!("{file} (via SEGSWEEP_* environment)"),
        Some(n) if n.contains("SetValue") => format!("{file} (via --set)"),
        _ => file.to_string(),
    };
    use figment::error::{Actual, Kind};
    let hint = match &err.kind {
        // The resolved settings (configs/<hash>.toml, the README) speak of
        // `inference.short_side`, but a spec sets it per dataset.
        Kind::UnknownField(name, _) if name == "short_side" && key.starts_with("inference") => {
            Some("the short side is set in [dataset] (`dataset.short_side`, or `--set dataset.short_side=N`); configs/<hash>.toml shows the value resolved into [inference]".to_string())
        }
        Kind::UnknownField(name, expected) => {
            let near = segsweep_core::registry::nearest(name, expected.iter().copied());
            Some(format!(
                "{}known keys here: {}",
                near.map(|n| format!("did you mean `{n}`? "))
                    .unwrap_or_default(),
                expected.join(", ")
            ))
        }
        Kind::InvalidValue(Actual::Signed(n), _) if *n < 0 => Some(format!(
            "`{key}` is a count or size: give a non-negative integer"
        )),
        // `pamr.steps = [1, 2]` under [sweep.grid] is a nested table in TOML: sweep keys
        // hold a dot and must be quoted.
        Kind::InvalidType(Actual::Map, _)
            if ["sweep.grid.", "sweep.zip.", "sweep.list."]
                .iter()
                .any(|p| key.starts_with(p)) =>
        {
            let name = key.splitn(3, '.').nth(2).unwrap_or("id");
            Some(format!(
                "quote dotted sweep keys: `\"{name}.PARAM\" = [...]`; unquoted, TOML reads `{name}.PARAM` as a table `{name}`"
            ))
        }
        Kind::InvalidType(..) | Kind::InvalidValue(..) => {
            Some("see the spec reference in README.md for each key's type".into())
        }
        Kind::MissingField(name) => Some(format!(
            "add `{name} = ...` here (see the spec reference in README.md)"
        )),
        _ => None,
    };
    let msg = match &err.kind {
        // figment's text repeats the known keys with garbled quoting; the hint lists them.
        Kind::UnknownField(name, _) => format!("unknown key `{name}`"),
        // serde names the Rust type a section deserialises into; a user wrote a table.
        Kind::InvalidType(actual, expected) if expected.starts_with("struct ") => {
            format!("invalid type: found {actual}, expected a table of keys (`[{key}]`)")
        }
        other => other.to_string(),
    };
    RunnerError::spec(&source, key, msg, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_parse_as_toml_or_fall_back_to_string() {
        assert_eq!(
            parse_set("inference.prob_thd=0.1").unwrap(),
            ("inference.prob_thd".into(), toml::Value::Float(0.1))
        );
        assert_eq!(
            parse_set("cliptrase.variant=paper").unwrap().1,
            toml::Value::String("paper".into())
        );
        assert!(parse_set("novalue").is_err());
    }
}
