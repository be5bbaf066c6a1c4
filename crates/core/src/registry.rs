//! The plugin registry: `const` records submitted with [`register_plugin!`](crate::register_plugin).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::error::{CoreError, Result};
use crate::params::{ParamSpec, Params};
use crate::stage::{Refiner, Stage};

/// Everything segsweep knows about a plugin before building it.
///
/// Submit one per plugin crate with [`register_plugin!`](crate::register_plugin). A binary must
/// name every plugin crate (`use segsweep_plugin_pamr as _;`), or the linker drops it and its
/// record never reaches the registry (inventory issue #50).
pub struct PluginSpec {
    /// Unique name used in specs (`plugin = "pamr"`), lower-case with dashes.
    pub name: &'static str,
    /// What the plugin computes, as a number: bump it whenever a change to the code changes
    /// its output for the same parameters. It is part of every configuration's hash, so a
    /// sweep re-run after the change computes new results instead of resuming the old ones
    /// (the hash covers parameters, not code). Start at 1.
    pub version: u32,
    /// One line for `segsweep plugins`.
    pub summary: &'static str,
    /// Longer documentation: the paper, what is computed, variants and deviations.
    pub doc: &'static str,
    /// Where in the data flow the plugin runs.
    pub stage: Stage,
    /// Declared parameters; spec values are validated against them before anything runs.
    pub params: &'static [ParamSpec],
    /// Checks the schema cannot express (a parameter that only one variant reads, an empty
    /// list, two parameters that exclude each other, a plugin that must come before others of
    /// its pipeline). It must be cheap and touch no files or weights:
    /// [`PluginSpec::resolve_at`] runs it, so `segsweep validate` reports these mistakes before
    /// a sweep starts rather than when the configuration's turn comes. Plugins whose `build`
    /// only parses parameters pass `|p, _| build_fn(p).map(drop)`; `|_, _| Ok(())` if the
    /// schema says everything.
    pub check: fn(&Params, &PipelinePos) -> Result<()>,
    /// Build the plugin from validated parameters (may load files, e.g. a checkpoint).
    pub build: fn(&Params) -> Result<Box<dyn Refiner>>,
}

/// Where an entry sits in its pipeline, for [`PluginSpec::check`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PipelinePos<'a> {
    /// The entries before this one, in order: (plugin name, stage).
    pub before: &'a [(&'a str, Stage)],
}

impl PluginSpec {
    /// Validate raw spec values against this plugin's schema, then run its [`check`](Self::check)
    /// as the first entry of a pipeline.
    pub fn resolve(&self, raw: &BTreeMap<String, toml::Value>) -> Result<Params> {
        self.resolve_at(raw, &PipelinePos::default())
    }

    /// [`PluginSpec::resolve`] for an entry at `pos` of a pipeline.
    pub fn resolve_at(
        &self,
        raw: &BTreeMap<String, toml::Value>,
        pos: &PipelinePos,
    ) -> Result<Params> {
        let params = Params::resolve(self.name, self.params, raw)?;
        (self.check)(&params, pos)?;
        Ok(params)
    }

    /// Validate and build in one step.
    pub fn instantiate(&self, raw: &BTreeMap<String, toml::Value>) -> Result<Box<dyn Refiner>> {
        let params = self.resolve(raw)?;
        (self.build)(&params)
    }
}

impl std::fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSpec")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("stage", &self.stage)
            .finish()
    }
}

inventory::collect!(PluginSpec);

/// Register a plugin. Use once per plugin crate, at module level:
///
/// ```ignore
/// segsweep_core::register_plugin!(segsweep_core::PluginSpec {
///     name: "pamr",
///     version: 1,
///     summary: "pixel-adaptive mask refinement",
///     doc: "...",
///     stage: segsweep_core::Stage::DenseLogits,
///     params: PARAMS,
///     check: |p, _| Pamr::from_params(p).map(drop),
///     build: |p| Ok(Box::new(Pamr::from_params(p)?)),
/// });
/// ```
#[macro_export]
macro_rules! register_plugin {
    ($spec:expr) => {
        $crate::inventory::submit! { $spec }
    };
}

/// The sorted map of registered plugins, built once per process.
#[derive(Debug)]
pub struct Registry {
    map: BTreeMap<&'static str, &'static PluginSpec>,
}

/// Keys a pipeline entry uses itself (and the hash adds), so no plugin parameter may take them.
pub const RESERVED_PARAM_NAMES: [&str; 3] = ["plugin", "id", "plugin_version"];

impl Registry {
    fn build() -> Result<Registry> {
        Self::from_specs(inventory::iter::<PluginSpec>)
    }

    /// The registry of `specs`: refuses two plugins with one name, and a parameter named like
    /// a pipeline entry's own keys ([`RESERVED_PARAM_NAMES`]), which a spec could never set.
    pub fn from_specs(specs: impl IntoIterator<Item = &'static PluginSpec>) -> Result<Registry> {
        let mut map = BTreeMap::new();
        for spec in specs {
            if let Some(p) = spec
                .params
                .iter()
                .find(|p| RESERVED_PARAM_NAMES.contains(&p.name))
            {
                return Err(CoreError::Msg(format!(
                    "plugin `{}` declares a parameter `{}`, a key every pipeline entry uses \
                     itself ({}) (hint: rename the parameter in the plugin's ParamSpec list)",
                    spec.name,
                    p.name,
                    RESERVED_PARAM_NAMES.join(", ")
                )));
            }
            for p in spec.params {
                p.check_default().map_err(|msg| {
                    CoreError::Msg(format!(
                        "plugin `{}`: the default of parameter `{}` ({}) does not fit its own type {}: {msg} (hint: fix the default in the plugin's ParamSpec list)",
                        spec.name, p.name, p.default, p.ty
                    ))
                })?;
            }
            if map.insert(spec.name, spec).is_some() {
                return Err(CoreError::DuplicatePlugin(spec.name.to_string()));
            }
        }
        Ok(Registry { map })
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.map.keys().copied().collect()
    }

    /// All plugins, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &'static PluginSpec> + '_ {
        self.map.values().copied()
    }

    /// Look a plugin up; an unknown name lists the known ones and the nearest match.
    pub fn get(&self, name: &str) -> Result<&'static PluginSpec> {
        self.map
            .get(name)
            .copied()
            .ok_or_else(|| CoreError::UnknownPlugin {
                name: name.to_string(),
                known: self.names().iter().map(|s| s.to_string()).collect(),
                nearest: nearest(name, self.map.keys().copied()).map(str::to_string),
            })
    }
}

/// The process-wide registry. Fails if two plugins share a name.
pub fn registry() -> Result<&'static Registry> {
    static REG: OnceLock<std::result::Result<Registry, String>> = OnceLock::new();
    match REG.get_or_init(|| Registry::build().map_err(|e| e.to_string())) {
        Ok(r) => Ok(r),
        Err(msg) => Err(CoreError::Msg(msg.clone())),
    }
}

/// The candidate closest to `name` by edit distance, if it is plausibly a typo.
pub fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        // Compared without case: `PAMR` is `pamr` mistyped, not 4 edits from it.
        .map(|c| (levenshtein(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 2).max(2))
        .min()
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::params::{ParamDefault, ParamType};

    const ID_PARAM: &[ParamSpec] = &[ParamSpec {
        name: "id",
        ty: ParamType::Int { min: 0, max: 9 },
        default: ParamDefault::Int(0),
        doc: "",
    }];
    static BAD: PluginSpec = PluginSpec {
        name: "bad",
        version: 1,
        summary: "",
        doc: "",
        stage: Stage::Labels,
        params: ID_PARAM,
        check: |_, _| Ok(()),
        build: |_| Err(CoreError::Msg("unused".into())),
    };
    static GOOD: PluginSpec = PluginSpec {
        name: "good",
        params: &[],
        ..BAD
    };

    #[test]
    fn a_parameter_named_like_an_entry_key_or_a_repeated_name_is_refused() {
        let err = Registry::from_specs([&BAD]).unwrap_err().to_string();
        assert!(err.contains("`bad`") && err.contains("`id`"), "{err}");
        let err = Registry::from_specs([&GOOD, &GOOD])
            .unwrap_err()
            .to_string();
        assert!(err.contains("good"), "{err}");
        assert_eq!(Registry::from_specs([&GOOD]).unwrap().names(), ["good"]);
    }

    const OUT_OF_RANGE: &[ParamSpec] = &[ParamSpec {
        name: "layer",
        ty: ParamType::Int { min: 1, max: 4 },
        default: ParamDefault::Int(9),
        doc: "",
    }];
    const WRONG_TYPE: &[ParamSpec] = &[ParamSpec {
        name: "layer",
        ty: ParamType::Int { min: 1, max: 12 },
        default: ParamDefault::Float(8.0),
        doc: "",
    }];
    static RANGE: PluginSpec = PluginSpec {
        name: "range",
        params: OUT_OF_RANGE,
        ..BAD
    };
    static TYPE: PluginSpec = PluginSpec {
        name: "type",
        params: WRONG_TYPE,
        ..BAD
    };

    /// A default outside its range or of another type was shown as is, and failed every spec
    /// that used the plugin with a misleading "a plugin read a key its schema does not declare".
    #[test]
    fn a_default_that_does_not_fit_its_type_is_refused() {
        for spec in [&RANGE, &TYPE] {
            let err = Registry::from_specs([spec]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("plugin `{}`", spec.name))
                    && err.contains("default of parameter `layer`"),
                "{err}"
            );
        }
    }

    #[test]
    fn nearest_finds_typos_only() {
        let names = ["cliptrase", "clip-rc", "pamr", "densecrf"];
        assert_eq!(
            nearest("cliptrace", names.iter().copied()),
            Some("cliptrase")
        );
        assert_eq!(
            nearest("dense-crf", names.iter().copied()),
            Some("densecrf")
        );
        assert_eq!(nearest("zzzzzzzzzzzz", names.iter().copied()), None);
        // Case is not a typo's worth of distance.
        assert_eq!(nearest("PAMR", names.iter().copied()), Some("pamr"));
    }
}
