//! CRF parameters: the two published presets, the plugin's parameter schema, and the resolution
//! of spec values (a preset plus per-field overrides) into [`CrfParams`].
//!
//! Paper symbols (Krähenbühl & Koltun 2011, eq. 3): the appearance (bilateral) kernel has weight
//! w⁽¹⁾ = `bilateral_compat`, position scale θα = `bilateral_sxy` and colour scale θβ =
//! `bilateral_srgb`; the smoothness (Gaussian) kernel has weight w⁽²⁾ = `gauss_compat` and scale
//! θγ = `gauss_sxy`. The keys follow pydensecrf's argument names because that is what people copy
//! their values from.

use std::fmt;
use std::str::FromStr;

use segsweep_core::{ParamDefault, ParamSpec, ParamType, Params};

use crate::error::{CrfError, Result};

/// A published parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// pydensecrf's `examples/inference.py`: Gaussian sxy 3, compat 3; bilateral sxy 80, srgb 13,
    /// compat 10; 5 iterations.
    Pydensecrf,
    /// DeepLab-v2 (and STEGO, kazuto1011/deeplab-pytorch `crf.py`): Gaussian sxy 1, compat 3;
    /// bilateral sxy 67, srgb 3, compat 4; 10 iterations.
    Deeplab,
}

impl Preset {
    /// Names as written in specs and on the command line.
    pub const NAMES: &'static [&'static str] = &["pydensecrf", "deeplab"];

    pub fn name(&self) -> &'static str {
        match self {
            Preset::Pydensecrf => "pydensecrf",
            Preset::Deeplab => "deeplab",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = CrfError;

    fn from_str(s: &str) -> Result<Preset> {
        match s {
            "pydensecrf" => Ok(Preset::Pydensecrf),
            "deeplab" => Ok(Preset::Deeplab),
            _ => Err(CrfError::Param {
                key: "preset".into(),
                msg: format!("unknown preset `{s}`; known: {}", Preset::NAMES.join(", ")),
            }),
        }
    }
}

/// Everything the mean-field inference needs besides the image and the probabilities.
///
/// Kernels are added in pydensecrf's usual order, Gaussian first, then bilateral; a kernel whose
/// compat is 0 is skipped (that changes no value: `x − (−0·k) = x`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrfParams {
    /// Mean-field iterations (0 returns the clipped, renormalised input).
    pub iterations: usize,
    /// Gaussian (smoothness) kernel position scale θγ, in pixels.
    pub gauss_sxy: f32,
    /// Gaussian kernel weight w⁽²⁾ (Potts compatibility).
    pub gauss_compat: f32,
    /// Bilateral (appearance) kernel position scale θα, in pixels.
    pub bilateral_sxy: f32,
    /// Bilateral kernel colour scale θβ, in 0..255 intensity units.
    pub bilateral_srgb: f32,
    /// Bilateral kernel weight w⁽¹⁾ (Potts compatibility).
    pub bilateral_compat: f32,
}

impl CrfParams {
    /// The values of a published preset.
    pub fn preset(p: Preset) -> CrfParams {
        match p {
            Preset::Pydensecrf => CrfParams {
                iterations: 5,
                gauss_sxy: 3.0,
                gauss_compat: 3.0,
                bilateral_sxy: 80.0,
                bilateral_srgb: 13.0,
                bilateral_compat: 10.0,
            },
            Preset::Deeplab => CrfParams {
                iterations: 10,
                gauss_sxy: 1.0,
                gauss_compat: 3.0,
                bilateral_sxy: 67.0,
                bilateral_srgb: 3.0,
                bilateral_compat: 4.0,
            },
        }
    }

    /// Check ranges (the same as the plugin schema); errors name the field.
    pub fn validate(&self) -> Result<()> {
        let scales = [
            ("gauss_sxy", self.gauss_sxy),
            ("bilateral_sxy", self.bilateral_sxy),
            ("bilateral_srgb", self.bilateral_srgb),
        ];
        for (key, v) in scales {
            if !(v.is_finite() && (SCALE_MIN as f32..=SCALE_MAX as f32).contains(&v)) {
                return Err(CrfError::Param {
                    key: key.into(),
                    msg: format!("{v} is out of range [{SCALE_MIN}, {SCALE_MAX}]"),
                });
            }
        }
        for (key, v) in [
            ("gauss_compat", self.gauss_compat),
            ("bilateral_compat", self.bilateral_compat),
        ] {
            if !(v.is_finite() && (0.0..=COMPAT_MAX as f32).contains(&v)) {
                return Err(CrfError::Param {
                    key: key.into(),
                    msg: format!("{v} is out of range [0, {COMPAT_MAX}]"),
                });
            }
        }
        if self.iterations > ITER_MAX as usize {
            return Err(CrfError::Param {
                key: "iterations".into(),
                msg: format!("{} is out of range [0, {ITER_MAX}]", self.iterations),
            });
        }
        Ok(())
    }

    /// Resolve validated plugin parameters: the preset, then every key the spec sets.
    pub fn from_params(p: &Params) -> Result<CrfParams> {
        let preset: Preset = p.str("preset").map_err(CrfError::core)?.parse()?;
        let mut c = CrfParams::preset(preset);
        if p.get("iterations").is_some() {
            c.iterations = p.usize("iterations").map_err(CrfError::core)?;
        }
        let set = |key: &str, field: &mut f32| -> Result<()> {
            if let Some(v) = p.opt_f64(key).map_err(CrfError::core)? {
                *field = v as f32;
            }
            Ok(())
        };
        set("gauss_sxy", &mut c.gauss_sxy)?;
        set("gauss_compat", &mut c.gauss_compat)?;
        set("bilateral_sxy", &mut c.bilateral_sxy)?;
        set("bilateral_srgb", &mut c.bilateral_srgb)?;
        set("bilateral_compat", &mut c.bilateral_compat)?;
        c.validate()?;
        Ok(c)
    }
}

impl Default for CrfParams {
    /// The `pydensecrf` preset.
    fn default() -> Self {
        CrfParams::preset(Preset::Pydensecrf)
    }
}

// Scales below 0.01 px would put lattice coordinates beyond f32's exact integer range on large
// images; above 10⁴ the kernel is flat over any image.
const SCALE_MIN: f64 = 0.01;
const SCALE_MAX: f64 = 1e4;
const COMPAT_MAX: f64 = 1e3;
const ITER_MAX: i64 = 200;

/// The `densecrf` plugin's parameters. Every kernel field defaults to "from the preset".
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "preset",
        ty: ParamType::Choice(Preset::NAMES),
        default: ParamDefault::Str("pydensecrf"),
        doc: "Base parameter set: `pydensecrf` (examples/inference.py: 3/3, 80/13/10, 5 iterations) \
              or `deeplab` (DeepLab-v2: 1/3, 67/3/4, 10 iterations). Keys below override it.",
    },
    ParamSpec {
        name: "iterations",
        ty: ParamType::Int { min: 0, max: ITER_MAX },
        default: ParamDefault::None,
        doc: "Mean-field iterations (default: from the preset, 5 or 10).",
    },
    ParamSpec {
        name: "gauss_sxy",
        ty: ParamType::Float { min: SCALE_MIN, max: SCALE_MAX },
        default: ParamDefault::None,
        doc: "Smoothness kernel position scale θγ in pixels (default: from the preset, 3 or 1).",
    },
    ParamSpec {
        name: "gauss_compat",
        ty: ParamType::Float { min: 0.0, max: COMPAT_MAX },
        default: ParamDefault::None,
        doc: "Smoothness kernel weight w⁽²⁾, Potts (default: from the preset, 3); 0 disables it.",
    },
    ParamSpec {
        name: "bilateral_sxy",
        ty: ParamType::Float { min: SCALE_MIN, max: SCALE_MAX },
        default: ParamDefault::None,
        doc: "Appearance kernel position scale θα in pixels (default: from the preset, 80 or 67).",
    },
    ParamSpec {
        name: "bilateral_srgb",
        ty: ParamType::Float { min: SCALE_MIN, max: SCALE_MAX },
        default: ParamDefault::None,
        doc: "Appearance kernel colour scale θβ on the 0..255 scale (default: from the preset, 13 or 3).",
    },
    ParamSpec {
        name: "bilateral_compat",
        ty: ParamType::Float { min: 0.0, max: COMPAT_MAX },
        default: ParamDefault::None,
        doc: "Appearance kernel weight w⁽¹⁾, Potts (default: from the preset, 10 or 4); 0 disables it.",
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn resolve(pairs: &[(&str, toml::Value)]) -> segsweep_core::Result<Params> {
        let raw: BTreeMap<String, toml::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Params::resolve("densecrf", PARAMS, &raw)
    }

    #[test]
    fn presets_resolve_and_fields_override() {
        let p = resolve(&[]).unwrap();
        assert_eq!(
            CrfParams::from_params(&p).unwrap(),
            CrfParams::preset(Preset::Pydensecrf)
        );

        let p = resolve(&[
            ("preset", toml::Value::String("deeplab".into())),
            ("iterations", toml::Value::Integer(2)),
            ("bilateral_srgb", toml::Value::Float(5.5)),
            ("gauss_compat", toml::Value::Integer(0)),
        ])
        .unwrap();
        let c = CrfParams::from_params(&p).unwrap();
        let want = CrfParams {
            iterations: 2,
            bilateral_srgb: 5.5,
            gauss_compat: 0.0,
            ..CrfParams::preset(Preset::Deeplab)
        };
        assert_eq!(c, want);
    }

    #[test]
    fn out_of_range_values_are_rejected_with_the_key() {
        let e = resolve(&[("bilateral_sxy", toml::Value::Float(0.0))]).unwrap_err();
        assert!(e.to_string().contains("bilateral_sxy"), "{e}");
        let e = resolve(&[("preset", toml::Value::String("crfasrnn".into()))]).unwrap_err();
        assert!(e.to_string().contains("preset"), "{e}");
        let bad = CrfParams {
            gauss_sxy: f32::NAN,
            ..CrfParams::default()
        };
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().contains("gauss_sxy"), "{e}");
        assert!("nope".parse::<Preset>().is_err());
        assert_eq!("deeplab".parse::<Preset>().unwrap(), Preset::Deeplab);
    }
}
