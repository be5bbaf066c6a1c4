//! Step 2 of reading a spec: expand the sweep and validate every configuration into a
//! [`Config`] before any weights load.
//!
//! Expansion order is deterministic: variants (in spec order) × grid (keys sorted, last key
//! fastest) × zip rows × list rows. Each configuration is the spec tree with its overrides
//! applied, validated like a spec of its own, and hashed over its fully resolved settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use segsweep_core::{registry, InferConfig, Mode, Params, PluginSpec, Stage};
use sha2::{Digest, Sha256};

use crate::error::{Result, RunnerError};
use crate::memory::MemoryPlan;
use crate::spec::{DatasetSection, LoadedSpec, ModelSection, RawSpec, SECTIONS};

/// Built-in last-block strategies of the CLIP backbone.
pub const ATTENTIONS: [&str; 4] = ["vanilla", "sclip", "naclip", "maskclip"];

/// One refiner of a configuration, validated.
#[derive(Debug, Clone)]
pub struct Step {
    /// The entry's id (default: the plugin name); sweep paths address `id.param`.
    pub id: String,
    pub plugin: &'static PluginSpec,
    pub params: Params,
}

/// One fully resolved configuration of a sweep.
#[derive(Debug, Clone)]
pub struct Config {
    /// Variant name (empty when the spec has no variants).
    pub variant: String,
    /// The swept values that made this configuration, in sweep order.
    pub swept: Vec<(String, toml::Value)>,
    pub model: ModelSection,
    pub dataset: DatasetSection,
    /// `experiment.seed`: it picks a random subset and generates the synthetic set, so it is
    /// part of the hash whenever it does either.
    pub seed: u64,
    pub inference: InferConfig,
    pub pipeline: Vec<Step>,
    /// The resolved settings as TOML (saved as `configs/<hash>.toml`).
    pub resolved: String,
    /// First 12 hex digits of the SHA-256 of `resolved`.
    pub hash: String,
    /// This configuration as a spec without `[sweep]`: the spec's tables with the variant's
    /// pipeline selection and every sweep, variant and `--set` value applied (what `predict
    /// --spec --config` starts from).
    pub spec_tree: toml::Table,
}

impl Config {
    /// A short human label: variant plus swept values.
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = vec![self.variant.clone()];
        parts.extend(self.swept.iter().map(|(k, v)| format!("{k}={v}")));
        parts.retain(|p| !p.is_empty());
        if parts.is_empty() {
            "default".into()
        } else {
            parts.join(" ")
        }
    }
}

/// The validated experiment: every configuration, in run order.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub spec: LoadedSpec,
    pub configs: Vec<Config>,
    /// The validated memory budget and spill settings of `[experiment]`.
    pub memory: MemoryPlan,
}

type Overrides = Vec<(String, toml::Value)>;

/// Expand and validate. `pipeline_sets` are `--set` values addressing pipeline entries.
pub fn expand(spec: LoadedSpec, sets: &[(String, toml::Value)]) -> Result<Experiment> {
    let file = spec.file();
    let raw = &spec.raw;
    let memory = MemoryPlan::resolve(&raw.experiment, &file)?;
    check_dir_name(&raw.experiment.name).map_err(|msg| {
        RunnerError::spec(
            &file,
            "experiment.name",
            msg,
            Some("results go to <output_dir>/<name>/<run-id>/; use letters, digits, `-`, `_`, `.` or `+` (set the parent with experiment.output_dir)".into()),
        )
    })?;
    let out = &raw.experiment.output_dir;
    let bad_out = if out.as_os_str().is_empty() {
        Some("is empty".to_string())
    } else if out.exists() && !out.is_dir() {
        Some(format!("{} exists and is not a directory", out.display()))
    } else {
        None
    };
    if let Some(msg) = bad_out {
        return Err(RunnerError::spec(
            &file,
            "experiment.output_dir",
            msg,
            Some("name a directory (results go to <output_dir>/<name>/<run-id>/), or leave it out for `results`".into()),
        ));
    }
    // The plugin names as written, before any sweep refers to them: a misspelled one gets its
    // did-you-mean here rather than a "not a pipeline entry" from a sweep key. Parameters are
    // checked per configuration, after `--set` and the sweep have applied theirs (a bad value
    // in the file that `--set` replaces is no error).
    check_pipeline_structure(&raw.pipeline, &file)?;
    let mut base = spec.tree.clone();
    base.remove("sweep");
    // --set on pipeline entries (section sets were layered by figment already).
    let mut set_origins: Vec<(String, String)> = Vec::new();
    for (key, value) in sets {
        let section = key.split('.').next().unwrap_or("");
        if !SECTIONS[..4].contains(&section) {
            apply(&mut base, key, value, &file, "--set")?;
            set_origins.push((key.clone(), format!("--set {key}")));
        }
    }
    let variants: Vec<(String, Option<Vec<String>>, Overrides)> = if raw.sweep.variants.is_empty() {
        vec![(String::new(), None, vec![])]
    } else {
        raw.sweep
            .variants
            .iter()
            .map(|v| {
                let set = v.set.iter().map(|(k, x)| (k.clone(), x.clone())).collect();
                (v.name.clone(), v.pipeline.clone(), set)
            })
            .collect()
    };
    let mut seen_names = BTreeMap::new();
    if raw.sweep.variants.iter().any(|v| v.name.trim().is_empty()) {
        return Err(RunnerError::spec(
            &file,
            "sweep.variants",
            "a variant has an empty name",
            Some("name every variant (`name = \"baseline\"`): the name labels its rows in the tables and charts, and `baseline` refers to it".into()),
        ));
    }
    for (name, _, _) in &variants {
        if seen_names.insert(name.clone(), ()).is_some() {
            return Err(RunnerError::spec(
                &file,
                "sweep.variants",
                format!("variant `{name}` is defined twice"),
                Some("give every variant a distinct name".into()),
            ));
        }
    }
    if let Some(b) = &raw.sweep.baseline {
        let names: Vec<&str> = raw.sweep.variants.iter().map(|v| v.name.as_str()).collect();
        if !names.contains(&b.as_str()) {
            let near = segsweep_core::registry::nearest(b, names.iter().copied());
            return Err(RunnerError::spec(
                &file,
                "sweep.baseline",
                format!(
                    "`{b}` is not a variant{}",
                    near.map(|n| format!(" (did you mean `{n}`?)"))
                        .unwrap_or_default()
                ),
                Some(format!(
                    "the delta chart compares against a [[sweep.variants]] name; variants: {}",
                    if raw.sweep.variants.is_empty() {
                        "(none)".into()
                    } else {
                        names.join(", ")
                    }
                )),
            ));
        }
    }
    // A key set twice where one silently wins is an error: a --set (or environment value) on a
    // swept key, or a variant's `set` on a key the grid, zip or list also sweeps.
    let swept_keys: Vec<(&str, String)> = raw
        .sweep
        .grid
        .keys()
        .map(|k| ("sweep.grid", k.clone()))
        .chain(raw.sweep.zip.keys().map(|k| ("sweep.zip", k.clone())))
        .chain(
            raw.sweep
                .list
                .iter()
                .flat_map(|m| m.keys().map(|k| ("sweep.list", k.clone()))),
        )
        .collect();
    // The spec's keys set from outside: --set and SEGSWEEP_<SECTION>__<KEY> variables.
    let env_keys: Vec<String> = crate::spec::env_spec_keys()
        .into_iter()
        .map(|(_, key)| key)
        .collect();
    let outside: Vec<&str> = sets
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(env_keys.iter().map(String::as_str))
        .collect();
    for key in &outside {
        if let Some((table, _)) = swept_keys.iter().find(|(_, k)| k == key) {
            return Err(RunnerError::spec(
                &file,
                table.to_string(),
                format!("`{key}` is set on the command line or by a SEGSWEEP_* variable and swept by [{table}]; the sweep would win"),
                Some("remove the --set (or unset the variable), or the key from the sweep".into()),
            ));
        }
    }
    for (i, (table, key)) in swept_keys.iter().enumerate() {
        if let Some((other, _)) = swept_keys[..i].iter().find(|(t, k)| k == key && t != table) {
            return Err(RunnerError::spec(
                &file,
                table.to_string(),
                format!("`{key}` is swept by both [{other}] and [{table}]"),
                Some("sweep a key in one place: [sweep.grid] for a product, [sweep.zip] for lists that advance together, [[sweep.list]] for explicit rows".into()),
            ));
        }
    }
    for (vname, _, vset) in &variants {
        for (key, _) in vset {
            if outside.contains(&key.as_str()) {
                return Err(RunnerError::spec(
                    &file,
                    format!("sweep.variants.{vname}.set"),
                    format!("`{key}` is set on the command line or by a SEGSWEEP_* variable and by variant `{vname}`; the variant would win"),
                    Some("remove the --set (or unset the variable), or the key from the variant's `set`".into()),
                ));
            }
            if let Some((table, _)) = swept_keys.iter().find(|(_, k)| k == key) {
                return Err(RunnerError::spec(
                    &file,
                    format!("sweep.variants.{vname}.set"),
                    format!("`{key}` is set by variant `{vname}` and swept by [{table}]; the sweep would win"),
                    Some("set it in one place only".into()),
                ));
            }
        }
    }
    // Every swept or variant-set key must address a section or an entry of the spec's
    // pipeline (checked against the whole pipeline, before variants switch entries off).
    let base_ids = pipeline_ids(&base);
    let set_keys = variants.iter().flat_map(|(vname, _, vset)| {
        vset.iter()
            .map(move |(k, _)| (format!("sweep.variants.{vname}.set"), k.clone()))
    });
    for (table, key) in swept_keys
        .iter()
        .map(|(t, k)| (t.to_string(), k.clone()))
        .chain(set_keys)
    {
        if let Some((head, rest)) = key.split_once('.') {
            // [experiment] holds run-wide settings (where results go, the memory budget, the
            // caches) read once per run, so a per-configuration value would be ignored; only
            // the seed selects data per configuration.
            if head == "experiment" && rest != "seed" {
                return Err(RunnerError::spec(
                    &file,
                    format!("{table} `{key}`"),
                    format!("`{key}` applies to the whole run, so it cannot differ between configurations"),
                    Some(format!("set it in [experiment] or with --set {key}=...; of [experiment], only `experiment.seed` can be swept")),
                ));
            }
            if !SECTIONS[..4].contains(&head) && !base_ids.iter().any(|i| i == head) {
                return Err(unknown_head(
                    &base,
                    head,
                    rest,
                    &file,
                    &format!("{table} `{key}`"),
                ));
            }
        }
    }
    let grid = grid_rows(&raw.sweep.grid, &file)?;
    let zip = zip_rows(&raw.sweep.zip, &file)?;
    let list: Vec<Overrides> = if raw.sweep.list.is_empty() {
        vec![vec![]]
    } else {
        raw.sweep
            .list
            .iter()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .collect()
    };

    let mut configs: Vec<Config> = Vec::new();
    for (vname, vpipe, vset) in &variants {
        for g in &grid {
            for z in &zip {
                for l in &list {
                    let mut tree = base.clone();
                    if let Some(ids) = vpipe {
                        select_pipeline(&mut tree, ids, vname, &file)?;
                    }
                    // Where each overridden key came from, for errors about its value.
                    let mut origins = set_origins.clone();
                    let key = format!("sweep.variants.{vname}.set");
                    for (k, v) in vset {
                        apply(&mut tree, k, v, &file, &key)?;
                        origins.push((k.clone(), format!("{key} `{k}`")));
                    }
                    // A swept key of a pipeline entry that this variant switches off does not
                    // apply to it (the `baseline` row of an ablation has no cliptrase
                    // temperature); such rows collapse into one below.
                    let live = pipeline_ids(&tree);
                    let all_ids = pipeline_ids(&base);
                    let mut swept: Overrides = Vec::new();
                    let mut not_applicable = false;
                    // Nor does the built-in attention apply where an attention-stage plugin
                    // (resclip) replaces the last block's attention.
                    let replaced = replaces_attention(&tree);
                    for (k, v) in g.iter().chain(z).chain(l) {
                        let head = k.split('.').next().unwrap_or("");
                        if replaced && k == "inference.attention" {
                            // Not applied here, but a mistyped value is still an error (where
                            // every configuration has the plugin, it is never applied at all).
                            if !v.as_str().is_some_and(|a| ATTENTIONS.contains(&a)) {
                                return Err(RunnerError::spec(
                                    &file,
                                    format!("sweep `{k}`"),
                                    format!("`{v}` is not a built-in attention"),
                                    Some(format!("one of: {}", ATTENTIONS.join(", "))),
                                ));
                            }
                            not_applicable = true;
                            continue;
                        }
                        if all_ids.iter().any(|i| i == head) && !live.iter().any(|i| i == head) {
                            not_applicable = true;
                            continue;
                        }
                        apply(&mut tree, k, v, &file, &format!("sweep `{k}`"))?;
                        swept.push((k.clone(), v.clone()));
                        origins.push((k.clone(), format!("sweep `{k}` = {v}")));
                    }
                    let config = resolve(&tree, vname, swept, &file, &origins)?;
                    let same = configs.iter().find(|c| c.hash == config.hash);
                    if not_applicable && same.is_some_and(|c| c.variant == config.variant) {
                        continue;
                    }
                    if let Some(dup) = same {
                        return Err(RunnerError::spec(
                            &file,
                            "sweep",
                            format!(
                                "configurations `{}` and `{}` resolve to identical settings (hash {})",
                                dup.label(),
                                config.label(),
                                config.hash
                            ),
                            Some("a sweep must not contain duplicates: remove the repeated values or variants".into()),
                        ));
                    }
                    configs.push(config);
                }
            }
        }
    }
    if configs.is_empty() {
        return Err(RunnerError::spec(
            &file,
            "sweep",
            "the sweep expands to no configuration",
            Some("a grid or zip list is empty; give each swept key at least one value".into()),
        ));
    }
    Ok(Experiment {
        spec,
        configs,
        memory,
    })
}

fn grid_rows(grid: &BTreeMap<String, Vec<toml::Value>>, file: &str) -> Result<Vec<Overrides>> {
    let mut rows: Vec<Overrides> = vec![vec![]];
    for (k, vals) in grid {
        if vals.is_empty() {
            return Err(RunnerError::spec(
                file,
                format!("sweep.grid.\"{k}\""),
                "empty list: the sweep would expand to nothing",
                Some("give at least one value, or remove the key".into()),
            ));
        }
        check_distinct(vals, file, &format!("sweep.grid.\"{k}\""))?;
        rows = rows
            .into_iter()
            .flat_map(|r| {
                vals.iter().map(move |v| {
                    let mut r = r.clone();
                    r.push((k.clone(), v.clone()));
                    r
                })
            })
            .collect();
    }
    Ok(rows)
}

fn zip_rows(zip: &BTreeMap<String, Vec<toml::Value>>, file: &str) -> Result<Vec<Overrides>> {
    let Some(n) = zip.values().next().map(Vec::len) else {
        return Ok(vec![vec![]]);
    };
    if n == 0 {
        return Err(RunnerError::spec(
            file,
            "sweep.zip",
            "empty lists: the sweep would expand to nothing",
            Some("give each zipped key at least one value (the lists advance together and must be equally long), or remove [sweep.zip]".into()),
        ));
    }
    if let Some((k, v)) = zip.iter().find(|(_, v)| v.len() != n) {
        let lens: Vec<String> = zip
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.len()))
            .collect();
        return Err(RunnerError::spec(
            file,
            format!("sweep.zip.\"{k}\""),
            format!(
                "has {} values but the zip lists must all have the same length ({})",
                v.len(),
                lens.join(", ")
            ),
            Some("zip advances all lists together; use [sweep.grid] for a product".into()),
        ));
    }
    Ok((0..n)
        .map(|i| zip.iter().map(|(k, v)| (k.clone(), v[i].clone())).collect())
        .collect())
}

fn check_distinct(vals: &[toml::Value], file: &str, key: &str) -> Result<()> {
    for (i, a) in vals.iter().enumerate() {
        if vals[..i].contains(a) {
            return Err(RunnerError::spec(
                file,
                key,
                format!("value {a} appears twice"),
                Some("a sweep must not contain duplicate configurations".into()),
            ));
        }
    }
    Ok(())
}

fn entry_id(entry: &toml::Table) -> Option<String> {
    entry
        .get("id")
        .or_else(|| entry.get("plugin"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

fn pipeline_ids(tree: &toml::Table) -> Vec<String> {
    tree.get("pipeline")
        .and_then(|p| p.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_table().and_then(entry_id))
                .collect()
        })
        .unwrap_or_default()
}

fn select_pipeline(
    tree: &mut toml::Table,
    ids: &[String],
    variant: &str,
    file: &str,
) -> Result<()> {
    let known = pipeline_ids(tree);
    if let Some(bad) = ids.iter().find(|i| !known.contains(i)) {
        return Err(RunnerError::spec(
            file,
            format!("sweep.variants.{variant}.pipeline"),
            format!("`{bad}` is not a pipeline entry"),
            Some(format!(
                "pipeline entries: {}",
                if known.is_empty() {
                    "(none)".into()
                } else {
                    known.join(", ")
                }
            )),
        ));
    }
    if let Some(toml::Value::Array(entries)) = tree.get_mut("pipeline") {
        entries.retain(|e| {
            e.as_table()
                .and_then(entry_id)
                .is_some_and(|id| ids.contains(&id))
        });
    }
    Ok(())
}

/// Set a dotted path (`inference.prob_thd`, `cliptrase.correlation_temperature`) in the tree.
fn apply(
    tree: &mut toml::Table,
    path: &str,
    value: &toml::Value,
    file: &str,
    origin: &str,
) -> Result<()> {
    let (head, rest) = path.split_once('.').ok_or_else(|| {
        RunnerError::spec(
            file,
            origin,
            format!("`{path}` is not a dotted path"),
            Some("write SECTION.KEY (e.g. inference.prob_thd) or PIPELINE_ID.PARAM (e.g. cliptrase.correlation_temperature)".into()),
        )
    })?;
    if SECTIONS[..4].contains(&head) {
        let mut table = tree
            .entry(head.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let parts: Vec<&str> = rest.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            let t = table.as_table_mut().ok_or_else(|| {
                RunnerError::spec(
                    file,
                    origin,
                    format!("`{path}` crosses a non-table value"),
                    None,
                )
            })?;
            table = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
        }
        let t = table.as_table_mut().ok_or_else(|| {
            RunnerError::spec(
                file,
                origin,
                format!("`{path}` crosses a non-table value"),
                None,
            )
        })?;
        t.insert(parts[parts.len() - 1].to_string(), value.clone());
        return Ok(());
    }
    let entries = match tree.get_mut("pipeline") {
        Some(toml::Value::Array(a)) => a,
        _ => &mut Vec::new(),
    };
    let entry = entries
        .iter_mut()
        .filter_map(|e| e.as_table_mut())
        .find(|e| entry_id(e).as_deref() == Some(head));
    match entry {
        Some(e) => {
            if rest == "plugin" || rest == "id" {
                return Err(RunnerError::spec(file, origin, "the plugin and id of an entry cannot be swept".to_string(), Some("use [[sweep.variants]] with `pipeline = [...]` to switch entries on and off".into())));
            }
            e.insert(rest.to_string(), value.clone());
            Ok(())
        }
        None => Err(unknown_head(tree, head, rest, file, origin)),
    }
}

/// Whether `tree`'s pipeline has a registered plugin of stage `attention` (which replaces the
/// last block's attention, so `inference.attention` does not apply).
fn replaces_attention(tree: &toml::Table) -> bool {
    let Ok(reg) = registry() else {
        return false;
    };
    tree.get("pipeline")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("plugin").and_then(|p| p.as_str()))
        .any(|name| reg.get(name).is_ok_and(|p| p.stage == Stage::Attention))
}

/// `head.rest` where `head` is neither a section nor a pipeline entry of `tree`: the error,
/// suggesting the id of an entry whose plugin is called `head`, or the nearest section or id.
fn unknown_head(
    tree: &toml::Table,
    head: &str,
    rest: &str,
    file: &str,
    origin: &str,
) -> RunnerError {
    let ids = pipeline_ids(tree);
    let by_plugin = tree
        .get("pipeline")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_table())
        .find(|e| e.get("plugin").and_then(|p| p.as_str()) == Some(head))
        .and_then(entry_id);
    let suggestion = match by_plugin {
        Some(id) => format!("did you mean `{id}.{rest}`? Keys address a pipeline entry by its id (`{id}`), not by its plugin's name; "),
        None => segsweep_core::registry::nearest(
            head,
            SECTIONS[..4].iter().copied().chain(ids.iter().map(String::as_str)),
        )
        .map(|n| format!("did you mean `{n}.{rest}`? "))
        .unwrap_or_default(),
    };
    RunnerError::spec(
        file,
        origin,
        format!("`{head}` is neither a section nor a pipeline entry of this configuration"),
        Some(format!(
            "{suggestion}sections: {}; pipeline entries: {} (an entry switched off by a variant cannot be set)",
            SECTIONS[..4].join(", "),
            if ids.is_empty() { "(none)".into() } else { ids.join(", ") }
        )),
    )
}

/// Validate one configuration tree into a [`Config`].
/// `origins`: (key, where its value was set) for keys that sweeps, variants or `--set`
/// override, so an error about such a value points there rather than at the pipeline entry.
fn resolve(
    tree: &toml::Table,
    variant: &str,
    swept: Overrides,
    file: &str,
    origins: &[(String, String)],
) -> Result<Config> {
    let raw: RawSpec =
        toml::Value::Table(tree.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                RunnerError::spec(
                    file,
                    format!("(configuration `{}` after sweep overrides)", swept_label(variant, &swept)),
                    e.message().to_string(),
                    Some(format!(
                        "{}a key set by [sweep] (grid, zip, list or a variant's `set`) is unknown or its value has the wrong type; section keys are listed in README.md's spec reference",
                        if e.message().starts_with("unknown field `short_side`")
                            && swept.iter().any(|(k, _)| k == "inference.short_side")
                        {
                            // The resolved settings' name for it; a spec sets it per dataset.
                            "sweep `dataset.short_side` instead: the short side is set in [dataset]; ".to_string()
                        } else {
                            unknown_field_suggestion(e.message())
                                .map(|n| format!("did you mean `{n}`? "))
                                .unwrap_or_default()
                        }
                    )),
                )
            })?;
    let inference = resolve_inference(&raw, file)?;
    let pipeline = resolve_pipeline(&raw.pipeline, file, origins)?;
    check_model(&raw.model, file)?;
    check_dataset(&raw.dataset, file)?;

    // Canonical resolved settings: everything that can change a number, nothing that cannot
    // (names, descriptions, output paths).
    let mut doc = toml::Table::new();
    let mut model_doc = toml::Value::try_from(&raw.model).map_err(|e| internal(file, e))?;
    normalise_paths(&mut model_doc, &["source"]);
    doc.insert("model".into(), model_doc);
    let mut dataset_doc = dataset_identity(&raw.dataset, file)?;
    let d = &raw.dataset;
    if d.name == "synthetic" || (d.subset == "random" && d.num_samples.is_some()) {
        if let Some(t) = dataset_doc.as_table_mut() {
            // A u64 seed beyond TOML's integer range is kept as text.
            let seed = i64::try_from(raw.experiment.seed)
                .map(toml::Value::Integer)
                .unwrap_or_else(|_| toml::Value::String(raw.experiment.seed.to_string()));
            t.insert("seed".into(), seed);
        }
    }
    doc.insert("dataset".into(), dataset_doc);
    let mut inference_doc = toml::Value::try_from(&inference).map_err(|e| internal(file, e))?;
    if let Some(t) = inference_doc.as_table_mut() {
        // The settings are f32: write each as the shortest decimal that is that f32 (0.1, not
        // 0.10000000149011612), so configs/<hash>.toml reads as the spec was written.
        for (_, v) in t.iter_mut() {
            if let toml::Value::Float(x) = v {
                *x = (*x as f32).to_string().parse().unwrap_or(*x);
            }
        }
        // An attention-stage plugin (resclip) replaces the last block's attention: the
        // built-in `attention` then changes no number, so it is not part of the hash.
        if pipeline.iter().any(|s| s.plugin.stage == Stage::Attention) {
            t.remove("attention");
        }
    }
    doc.insert("inference".into(), inference_doc);
    let steps: Vec<toml::Value> = pipeline
        .iter()
        .map(|s| {
            let mut t = s.params.to_toml();
            t.insert("plugin".into(), toml::Value::String(s.plugin.name.into()));
            // The code's version: results of older plugin code are not resumed.
            t.insert(
                "plugin_version".into(),
                toml::Value::Integer(i64::from(s.plugin.version)),
            );
            t.insert("id".into(), toml::Value::String(s.id.clone()));
            toml::Value::Table(t)
        })
        .collect();
    doc.insert("pipeline".into(), toml::Value::Array(steps));
    let resolved = toml::to_string(&doc).map_err(|e| internal(file, e))?;
    let hash = hex12(&Sha256::digest(resolved.as_bytes()));
    let mut spec_tree = tree.clone();
    spec_tree.remove("sweep");
    Ok(Config {
        variant: variant.to_string(),
        swept,
        model: raw.model,
        dataset: raw.dataset,
        seed: raw.experiment.seed,
        inference,
        pipeline,
        resolved,
        hash,
        spec_tree,
    })
}

/// The `[dataset]` part of the hashed settings: the section as written, less `short_side`
/// (resolved into `inference.short_side`, so an explicit default hashes like no value), plus
/// the SHA-256 of every class file it names, so editing a class file is a new configuration
/// rather than a stale "already finished" one.
fn dataset_identity(d: &DatasetSection, file: &str) -> Result<toml::Value> {
    let mut value = toml::Value::try_from(d).map_err(|e| internal(file, e))?;
    let Some(t) = value.as_table_mut() else {
        return Err(internal(file, "[dataset] is not a table"));
    };
    t.remove("short_side");
    // A registered benchmark is named by `name`; where it is installed is like `--data-dir`
    // (a moved dataset is not a new configuration). A custom dataset keeps its root: there the
    // directory is what identifies the data.
    t.remove("root");
    normalise_paths(&mut value, &["classes"]);
    if let Some(custom) = value.get_mut("custom") {
        normalise_paths(
            custom,
            &["root", "image_dir", "label_dir", "split_file", "classes"],
        );
    }
    let Some(t) = value.as_table_mut() else {
        return Err(internal(file, "[dataset] is not a table"));
    };
    // A class file that cannot be read here (validating a spec on another machine, `predict
    // --spec` with its own --classes) leaves the path alone in the hash: a run reads the file
    // before any work and fails there, naming it.
    let digest = |path: &std::path::Path| {
        std::fs::read(path)
            .ok()
            .map(|bytes| toml::Value::String(format!("{:x}", Sha256::digest(&bytes))))
    };
    if let Some(sha) = d.classes.as_deref().and_then(digest) {
        t.insert("classes_sha256".into(), sha);
    }
    if let Some(sha) = d
        .custom
        .as_ref()
        .and_then(|c| digest(&c.root.join(&c.classes)))
    {
        if let Some(toml::Value::Table(custom)) = t.get_mut("custom") {
            custom.insert("classes_sha256".into(), sha);
        }
    }
    Ok(value)
}

/// Write the path strings at `keys` of table `v` in one lexical form, so spellings of one path
/// (`./m`, `m/`, `a//m`) hash alike: `.` components and repeated or trailing separators are
/// dropped; `..` and symlinks are kept (resolving them would need the file system, and an
/// absolute path in the hash would differ between machines). Hub ids and `builtin:` names
/// pass through unchanged.
fn normalise_paths(v: &mut toml::Value, keys: &[&str]) {
    let Some(t) = v.as_table_mut() else { return };
    for key in keys {
        if let Some(toml::Value::String(s)) = t.get_mut(*key) {
            let clean: PathBuf = Path::new(s.as_str())
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            let clean = clean.to_string_lossy();
            if !clean.is_empty() {
                *s = clean.into_owned();
            }
        }
    }
}

/// An experiment name or run id must stay one directory level under its parent: non-empty,
/// not `.` or `..`, and made of letters, digits, `-`, `_`, `.` and `+` only.
pub fn check_dir_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("`{name}` is not a directory name"));
    }
    match name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '+')))
    {
        Some(c) => Err(format!(
            "`{name}` contains `{c}`, which would leave or escape the results directory"
        )),
        None => Ok(()),
    }
}

/// The nearest known name for serde's "unknown field `x`, expected one of `a`, `b`, ..." text.
fn unknown_field_suggestion(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    segsweep_core::registry::nearest(name, known.into_iter()).map(str::to_string)
}

/// `variant k=v, ...` for error messages about one configuration.
fn swept_label(variant: &str, swept: &Overrides) -> String {
    let kv: Vec<String> = swept.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match (variant.is_empty(), kv.is_empty()) {
        (true, true) => "default".into(),
        (true, false) => kv.join(", "),
        (false, true) => variant.into(),
        (false, false) => format!("{variant} {}", kv.join(", ")),
    }
}

fn internal(file: &str, e: impl std::fmt::Display) -> RunnerError {
    RunnerError::spec(file, "(internal)", e.to_string(), None)
}

pub(crate) fn hex12(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Dataset SCLIP defaults < `[dataset] short_side` < `[inference]`.
fn resolve_inference(raw: &RawSpec, file: &str) -> Result<InferConfig> {
    let mut cfg = InferConfig::default();
    match segsweep_data::dataset_spec(&raw.dataset.name).ok() {
        Some(spec) => spec.defaults.apply(&mut cfg),
        None => cfg.short_side = Some(224),
    }
    if let Some(s) = raw.dataset.short_side {
        cfg.short_side = Some(s);
    }
    let i = &raw.inference;
    let bad = |key: &str, msg: String, hint: &str| {
        RunnerError::spec(
            file,
            format!("inference.{key}"),
            msg,
            Some(hint.to_string()),
        )
    };
    if let Some(m) = &i.mode {
        cfg.mode = match m.as_str() {
            "slide" => Mode::Slide,
            "whole" => Mode::Whole,
            other => {
                return Err(bad(
                    "mode",
                    format!("`{other}` is not a mode"),
                    "use \"slide\" or \"whole\"",
                ))
            }
        };
    }
    if let Some(c) = i.crop {
        cfg.crop = c;
    }
    if let Some(s) = i.stride {
        cfg.stride = s;
    }
    if cfg.crop < 16 {
        return Err(bad(
            "crop",
            format!("crop {} is smaller than one 16-pixel patch", cfg.crop),
            "crop ≥ 16 (SCLIP: 224)",
        ));
    }
    if cfg.stride == 0 || cfg.stride > cfg.crop {
        return Err(bad(
            "stride",
            format!("crop {} / stride {} is invalid", cfg.crop, cfg.stride),
            "crop ≥ 16 and 0 < stride ≤ crop (SCLIP: 224 / 112)",
        ));
    }
    // A value in `lo..=hi` (or `(0, hi]` when `lo_open`), else an error naming the key.
    let checked = |key: &str, v: f64, lo: f64, hi: f64, lo_open: bool, hint: &str| {
        let ok = if lo_open { v > lo } else { v >= lo } && v <= hi;
        if ok {
            Ok(v as f32)
        } else {
            let open = if lo_open { "(" } else { "[" };
            Err(bad(
                key,
                format!("{v} is out of range {open}{lo}, {hi}]"),
                hint,
            ))
        }
    };
    if let Some(v) = i.logit_scale {
        let hint = "SCLIP uses 40 (VOC21: 65, Context60/COCO-Object: 50)";
        cfg.logit_scale = checked("logit_scale", v, 0.0, 1000.0, true, hint)?;
    }
    if let Some(v) = i.prob_thd {
        let hint = "a probability threshold; 0 switches it off";
        cfg.prob_thd = checked("prob_thd", v, 0.0, 1.0, false, hint)?;
    }
    if let Some(v) = i.area_thd {
        let hint = "a share of foreground pixels, e.g. 0.1";
        cfg.area_thd = Some(checked("area_thd", v, 0.0, 1.0, false, hint)?);
    }
    if let Some(a) = &i.attention {
        if !ATTENTIONS.contains(&a.as_str()) {
            return Err(bad("attention", format!("`{a}` is not a built-in attention"), &format!("one of {}; method-specific attention (resclip, cliptrase paper) comes from a pipeline plugin", ATTENTIONS.join(", "))));
        }
        cfg.attention = a.clone();
    }
    if let Some(b) = i.batch_size {
        if b == 0 || b > 4096 {
            return Err(bad(
                "batch_size",
                format!("{b} is out of range [1, 4096]"),
                "crops per backbone batch, e.g. 8",
            ));
        }
        cfg.batch_size = b;
    }
    Ok(cfg)
}

/// The pipeline's plugins are registered and its ids addressable and distinct (what sweep keys
/// and `--set` need); parameters are left to [`resolve_pipeline`] per configuration.
fn check_pipeline_structure(entries: &[toml::Table], file: &str) -> Result<()> {
    pipeline_steps(entries, file, &[], false).map(|_| ())
}

fn resolve_pipeline(
    entries: &[toml::Table],
    file: &str,
    origins: &[(String, String)],
) -> Result<Vec<Step>> {
    pipeline_steps(entries, file, origins, true)
}

/// [`resolve_pipeline`], or with `params` false only its structural checks (no steps).
fn pipeline_steps(
    entries: &[toml::Table],
    file: &str,
    origins: &[(String, String)],
    params: bool,
) -> Result<Vec<Step>> {
    let reg = registry()?;
    let mut steps: Vec<Step> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("pipeline[{i}]");
        let name = entry
            .get("plugin")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                let msg = match entry.get("plugin") {
                    Some(v) => format!("`plugin = {v}` is not a plugin name (a string)"),
                    None => "missing `plugin = \"name\"`".into(),
                };
                RunnerError::spec(
                    file,
                    format!("{key}.plugin"),
                    msg,
                    Some(format!("registered plugins: {}", reg.names().join(", "))),
                )
            })?;
        let plugin = reg.get(name).map_err(|e| {
            RunnerError::spec(
                file,
                format!("{key}.plugin"),
                e.to_string(),
                Some("`segsweep plugins` lists them with their parameters".into()),
            )
        })?;
        let id = entry_id(entry).unwrap_or_else(|| name.to_string());
        let addressable = !id.is_empty()
            && !SECTIONS.contains(&id.as_str())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !addressable {
            return Err(RunnerError::spec(
                file,
                format!("{key}.id"),
                format!("`{id}` cannot name a pipeline entry"),
                Some(format!(
                    "an id is what `--set ID.PARAM=...` and sweeps address: letters, digits, `-` and `_`, not a section name ({})",
                    SECTIONS.join(", ")
                )),
            ));
        }
        if ids.contains(&id) {
            return Err(RunnerError::spec(
                file,
                format!("{key}.id"),
                format!("pipeline id `{id}` is used twice"),
                Some("give a repeated plugin a distinct `id = \"...\"`".into()),
            ));
        }
        ids.push(id.clone());
        if !params {
            continue;
        }
        // Per configuration the entries are those its variant keeps, so an index would not be
        // the file's: name the entry by its id (checked above to be unique in the file).
        let key = format!("pipeline entry `{id}`");
        let params_raw: BTreeMap<String, toml::Value> = entry
            .iter()
            .filter(|(k, _)| *k != "plugin" && *k != "id")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let before: Vec<(&str, Stage)> = steps
            .iter()
            .map(|s| (s.plugin.name, s.plugin.stage))
            .collect();
        let params = plugin
            .resolve_at(&params_raw, &segsweep_core::PipelinePos { before: &before })
            .map_err(|e| match e {
                // The key, the message and the hint apart (the hint printed last), and the
                // origin of an overridden value rather than the entry that does not hold it.
                segsweep_core::CoreError::Param {
                    key: param,
                    msg,
                    hint,
                    ..
                } => {
                    let full = format!("{id}.{param}");
                    // A rule over several parameters (a plugin's `check`) may fail on another
                    // overridden value of this entry: name those too.
                    let prefix = format!("{id}.");
                    let mut others: Vec<&str> = origins
                        .iter()
                        .filter(|(k, _)| k.starts_with(&prefix) && *k != full)
                        .map(|(_, o)| o.as_str())
                        .collect();
                    others.dedup();
                    let with = if others.is_empty() {
                        String::new()
                    } else {
                        format!("; with {}", others.join(", "))
                    };
                    let origin = origins
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == full)
                        .map(|(_, o)| format!("{o} ({key}{with})"))
                        .unwrap_or_else(|| {
                            if with.is_empty() {
                                key.clone()
                            } else {
                                format!("{key} ({})", with.trim_start_matches("; "))
                            }
                        });
                    RunnerError::spec(
                        file,
                        origin,
                        format!("plugin `{}`, parameter `{param}`: {msg}", plugin.name),
                        hint,
                    )
                }
                other => RunnerError::spec(file, key.clone(), other.to_string(), None),
            })?;
        if let Some(prev) = steps.last() {
            if plugin.stage < prev.plugin.stage {
                return Err(RunnerError::spec(
                    file,
                    &key,
                    format!(
                        "`{}` ({} stage) is listed after `{}` ({} stage), against the data flow",
                        id,
                        plugin.stage.describe(),
                        prev.id,
                        prev.plugin.stage.describe()
                    ),
                    Some("order: attention → features → dense logits → labels".into()),
                ));
            }
            if plugin.stage == Stage::Attention && prev.plugin.stage == Stage::Attention {
                return Err(RunnerError::spec(
                    file,
                    &key,
                    format!(
                        "`{}` and `{}` both replace the last-block attention; only one can",
                        prev.id, id
                    ),
                    None,
                ));
            }
        }
        steps.push(Step { id, plugin, params });
    }
    Ok(steps)
}

fn check_model(m: &ModelSection, file: &str) -> Result<()> {
    if let Some(repo) = m.source.strip_prefix("hf:") {
        if !segsweep_clip::source::looks_like_repo_id(repo) {
            return Err(RunnerError::spec(
                file,
                "model.source",
                format!(
                    "`{}`: `hf:` must be followed by a Hugging Face repo id",
                    m.source
                ),
                Some("write hf:org/name, e.g. hf:openai/clip-vit-base-patch16".into()),
            ));
        }
    }
    if !["f32", "f16", "bf16"].contains(&m.dtype.as_str()) {
        return Err(RunnerError::spec(
            file,
            "model.dtype",
            format!("`{}` is not a dtype", m.dtype),
            Some("use \"f32\", \"f16\" or \"bf16\"".into()),
        ));
    }
    // One spelling per device (`cuda:1`, not `cuda:01` or `cuda:+1`): records and hashes
    // compare device names as text.
    let ok = m.device == "cpu"
        || m.device.strip_prefix("cuda:").is_some_and(|n| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
        });
    if !ok {
        return Err(RunnerError::spec(
            file,
            "model.device",
            format!("`{}` is not a device", m.device),
            Some("use \"cpu\" or \"cuda:0\"".into()),
        ));
    }
    if !["clip", "imagenet"].contains(&m.normalisation.as_str()) {
        return Err(RunnerError::spec(
            file,
            "model.normalisation",
            format!("`{}` is not a normalisation", m.normalisation),
            Some("use \"clip\" or \"imagenet\"".into()),
        ));
    }
    if m.source.trim().is_empty() {
        return Err(RunnerError::spec(
            file,
            "model.source",
            "empty",
            Some("a Hugging Face repo id, a local directory or builtin:tiny-random".into()),
        ));
    }
    Ok(())
}

fn check_dataset(d: &DatasetSection, file: &str) -> Result<()> {
    let known = segsweep_data::dataset_names();
    let ok =
        d.name == "synthetic" || d.name == "custom" || segsweep_data::dataset_spec(&d.name).is_ok();
    if !ok {
        let mut all: Vec<&str> = known.iter().map(String::as_str).collect();
        all.push("custom"); // `synthetic` is in `dataset_names()` already
        let near = segsweep_core::registry::nearest(&d.name, all.iter().copied());
        return Err(RunnerError::spec(
            file,
            "dataset.name",
            format!(
                "unknown dataset `{}`{}",
                d.name,
                near.map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default()
            ),
            Some(format!("known: {}", all.join(", "))),
        ));
    }
    if d.name == "custom" && d.custom.is_none() {
        return Err(RunnerError::spec(
            file,
            "dataset.custom",
            "missing for `name = \"custom\"`",
            Some("add a [dataset.custom] table with root and classes".into()),
        ));
    }
    if d.split != "val" {
        return Err(RunnerError::spec(
            file,
            "dataset.split",
            format!("`{}` has no registered layout", d.split),
            Some("only \"val\" is supported; use a custom dataset for other splits".into()),
        ));
    }
    if !["first", "random"].contains(&d.subset.as_str()) {
        return Err(RunnerError::spec(
            file,
            "dataset.subset",
            format!("`{}` is not a subset mode", d.subset),
            Some("use \"first\" or \"random\"".into()),
        ));
    }
    if d.num_samples == Some(0) {
        return Err(RunnerError::spec(
            file,
            "dataset.num_samples",
            "0 samples",
            Some("omit it to use every sample".into()),
        ));
    }
    if let Some(s) = d.short_side {
        if !(16..=4096).contains(&s) {
            return Err(RunnerError::spec(
                file,
                "dataset.short_side",
                format!("{s} pixels is outside 16..=4096"),
                Some("SCLIP resizes the short side to 336 (COCO-Stuff 448, Cityscapes 560); omit it for the dataset's default".into()),
            ));
        }
    }
    if d.name == "synthetic" && d.synthetic_images == 0 {
        return Err(RunnerError::spec(
            file,
            "dataset.synthetic_images",
            "0 images",
            Some("generate at least one image (default 6)".into()),
        ));
    }
    Ok(())
}
