//! The parameters of the `resclip` plugin and ResCLIP's per-dataset presets.

use segsweep_core::{CoreError, ParamDefault, ParamSpec, ParamType, Params, Result};

use crate::sfr::PathRounding;

/// One dataset's settings from ResCLIP's `configs/cfg_*.py` (methods.md §2 table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// The preset name, as given to the `preset` parameter.
    pub name: &'static str,
    /// AdaThr: coarse pixels below this max probability fall back to query 0.
    pub temp_thd: f64,
    /// RCS weights [τ, λ].
    pub rcs: [f64; 2],
    /// SFR weights [τ, λ].
    pub sfr: [f64; 2],
    /// `[inference] prob_thd` of the same config (not a plugin parameter).
    pub prob_thd: f64,
    /// Whether the config sets whole-image inference (`slide_crop=0`); otherwise slide 224/112.
    pub whole: bool,
    /// `[dataset] short_side` of the same config.
    pub short_side: usize,
}

/// ResCLIP's eight dataset configs. Every config also uses logit_scale 40 and σ = 5.
pub const PRESETS: &[Preset] = &[
    preset("voc21", 0.50, [2.0, 0.3], [2.2, 0.7], 0.1, true, 336),
    preset("voc20", 0.10, [2.0, 0.6], [2.1, 0.6], 0.0, true, 336),
    preset("context60", 0.30, [2.0, 0.3], [1.8, 0.7], 0.1, false, 336),
    preset("context59", 0.25, [2.0, 0.4], [1.8, 0.7], 0.0, false, 336),
    preset("coco_object", 0.11, [2.0, 0.4], [1.8, 0.7], 0.1, false, 336),
    preset("coco_stuff", 0.11, [2.0, 0.4], [1.8, 0.7], 0.0, false, 336),
    preset("cityscapes", 0.10, [2.0, 0.2], [2.1, 0.6], 0.0, false, 560),
    preset("ade20k", 0.25, [2.0, 0.3], [2.1, 0.7], 0.0, false, 336),
];

const fn preset(
    name: &'static str,
    temp_thd: f64,
    rcs: [f64; 2],
    sfr: [f64; 2],
    prob_thd: f64,
    whole: bool,
    short_side: usize,
) -> Preset {
    Preset {
        name,
        temp_thd,
        rcs,
        sfr,
        prob_thd,
        whole,
        short_side,
    }
}

const PRESET_NAMES: &[&str] = &[
    "voc21",
    "voc20",
    "context60",
    "context59",
    "coco_object",
    "coco_stuff",
    "cityscapes",
    "ade20k",
];

const WEIGHT: ParamType = ParamType::Float {
    min: 0.0,
    max: 10.0,
};
const FRACTION: ParamType = ParamType::Float { min: 0.0, max: 1.0 };

/// Schema of the `resclip` plugin.
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "preset",
        ty: ParamType::Choice(PRESET_NAMES),
        default: ParamDefault::Str("voc21"),
        doc: "ResCLIP dataset config that fills tau_rcs, lambda_rcs, tau_sfr, lambda_sfr and \
              temp_thd where they are not set explicitly (configs/cfg_*.py).",
    },
    ParamSpec {
        name: "sigma",
        ty: ParamType::Float {
            min: 0.01,
            max: 100.0,
        },
        default: ParamDefault::Float(5.0),
        doc: "σ in patches of NACLIP's Gaussian prior Ω and of SFR's 1-D row smoothing \
              (ResCLIP: 5 for every dataset).",
    },
    ParamSpec {
        name: "rcs",
        ty: ParamType::Bool,
        default: ParamDefault::Bool(true),
        doc: "Residual cross-correlation self-attention: mix in the mean attention of layers 6–9.",
    },
    ParamSpec {
        name: "sfr",
        ty: ParamType::Bool,
        default: ParamDefault::Bool(true),
        doc: "Semantic feedback refinement: coarse pass, patch labels, A_sfr injected into the \
              final pass.",
    },
    ParamSpec {
        name: "tau_rcs",
        ty: WEIGHT,
        default: ParamDefault::None,
        doc: "τ_rcs, the scale of the RCS mix after the softmax (preset: 2.0).",
    },
    ParamSpec {
        name: "lambda_rcs",
        ty: FRACTION,
        default: ParamDefault::None,
        doc: "λ_rcs, the share of the layers-6–9 attention in the RCS mix (preset: 0.2–0.6).",
    },
    ParamSpec {
        name: "tau_sfr",
        ty: WEIGHT,
        default: ParamDefault::None,
        doc: "τ_sfr, the scale of the SFR mix before the softmax (preset: 1.8–2.2).",
    },
    ParamSpec {
        name: "lambda_sfr",
        ty: FRACTION,
        default: ParamDefault::None,
        doc: "λ_sfr, the share of A_sfr in the SFR mix (preset: 0.6–0.7).",
    },
    ParamSpec {
        name: "temp_thd",
        ty: FRACTION,
        default: ParamDefault::None,
        doc: "AdaThr: coarse pixels whose max query probability is below this get query 0 \
              (preset: 0.10–0.50).",
    },
    ParamSpec {
        name: "sfr_logit_scale",
        ty: ParamType::Float {
            min: 0.0,
            max: 1000.0,
        },
        default: ParamDefault::Float(40.0),
        doc: "Multiplier on the coarse pass's cosine logits before its softmax over queries \
              (ResCLIP passes its logit_scale, 40 in every config).",
    },
    ParamSpec {
        name: "path_rounding",
        ty: ParamType::Choice(&["eager", "fused"]),
        default: ParamDefault::Str("eager"),
        doc: "How the SFR path test rounds sample points: `eager` (torch eager / CPU: two \
              roundings, half to even) or `fused` (TorchScript's fused CUDA kernel: fma, half \
              away from zero).",
    },
];

/// A weight pair (τ, λ) of one mix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub tau: f64,
    pub lambda: f64,
}

/// SFR settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SfrConfig {
    pub mix: Mix,
    pub temp_thd: f64,
    pub logit_scale: f64,
    pub rounding: PathRounding,
}

/// The resolved configuration of one `resclip` instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResClipConfig {
    /// σ of Ω and of the SFR smoothing, in patches.
    pub sigma: f64,
    /// RCS weights, `None` when RCS is off.
    pub rcs: Option<Mix>,
    /// SFR settings, `None` when SFR is off.
    pub sfr: Option<SfrConfig>,
}

impl ResClipConfig {
    /// The published method with a dataset preset (RCS and SFR on, σ 5, eager rounding).
    pub fn preset(name: &str) -> Result<ResClipConfig> {
        let p = find_preset(name)?;
        Ok(ResClipConfig {
            sigma: 5.0,
            rcs: Some(Mix {
                tau: p.rcs[0],
                lambda: p.rcs[1],
            }),
            sfr: Some(SfrConfig {
                mix: Mix {
                    tau: p.sfr[0],
                    lambda: p.sfr[1],
                },
                temp_thd: p.temp_thd,
                logit_scale: 40.0,
                rounding: PathRounding::Eager,
            }),
        })
    }

    /// Resolve validated parameters: explicit values override the preset's.
    pub fn from_params(p: &Params) -> Result<ResClipConfig> {
        let preset = find_preset(p.str("preset")?)?;
        let or = |key: &str, v: f64| -> Result<f64> { Ok(p.opt_f64(key)?.unwrap_or(v)) };
        let rcs = p.bool("rcs")?.then_some(()).map(|_| -> Result<Mix> {
            Ok(Mix {
                tau: or("tau_rcs", preset.rcs[0])?,
                lambda: or("lambda_rcs", preset.rcs[1])?,
            })
        });
        let sfr = p.bool("sfr")?.then_some(()).map(|_| -> Result<SfrConfig> {
            Ok(SfrConfig {
                mix: Mix {
                    tau: or("tau_sfr", preset.sfr[0])?,
                    lambda: or("lambda_sfr", preset.sfr[1])?,
                },
                temp_thd: or("temp_thd", preset.temp_thd)?,
                logit_scale: p.f64("sfr_logit_scale")?,
                rounding: PathRounding::parse(p.str("path_rounding")?)?,
            })
        });
        Ok(ResClipConfig {
            sigma: p.f64("sigma")?,
            rcs: rcs.transpose()?,
            sfr: sfr.transpose()?,
        })
    }
}

/// Look a preset up by name.
pub fn find_preset(name: &str) -> Result<&'static Preset> {
    PRESETS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| CoreError::Param {
            plugin: "resclip".into(),
            key: "preset".into(),
            msg: format!("unknown preset `{name}`"),
            hint: Some(format!("one of {}", PRESET_NAMES.join(", "))),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn resolve(s: &str) -> Result<ResClipConfig> {
        let t: toml::Table = s.parse().unwrap();
        let raw: BTreeMap<String, toml::Value> = t.into_iter().collect();
        ResClipConfig::from_params(&Params::resolve("resclip", PARAMS, &raw)?)
    }

    #[test]
    fn names_match_presets() {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        assert_eq!(names, PRESET_NAMES);
    }

    #[test]
    fn default_is_voc21_and_explicit_values_override() {
        let c = resolve("").unwrap();
        assert_eq!(c, ResClipConfig::preset("voc21").unwrap());
        assert_eq!(
            c.rcs.unwrap(),
            Mix {
                tau: 2.0,
                lambda: 0.3
            }
        );
        let s = c.sfr.unwrap();
        assert_eq!((s.mix.tau, s.mix.lambda, s.temp_thd), (2.2, 0.7, 0.5));

        let c = resolve("preset = \"ade20k\"\nlambda_rcs = 0.5\ntemp_thd = 0.045").unwrap();
        assert_eq!(
            c.rcs.unwrap(),
            Mix {
                tau: 2.0,
                lambda: 0.5
            }
        );
        let s = c.sfr.unwrap();
        assert_eq!((s.mix.tau, s.mix.lambda, s.temp_thd), (2.1, 0.7, 0.045));
    }

    #[test]
    fn rcs_and_sfr_switch_off_independently() {
        let c = resolve("rcs = false").unwrap();
        assert!(c.rcs.is_none() && c.sfr.is_some());
        let c = resolve("sfr = false\npath_rounding = \"fused\"").unwrap();
        assert!(c.rcs.is_some() && c.sfr.is_none());
        let c = resolve("path_rounding = \"fused\"").unwrap();
        assert_eq!(c.sfr.unwrap().rounding, PathRounding::Fused);
        assert!(resolve("preset = \"voc\"").is_err());
        assert!(resolve("lambda_sfr = 1.5").is_err());
    }
}
