//! Typed, documented plugin parameters, validated before any work starts.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{CoreError, Result};

/// The type and allowed range of one plugin parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    /// A float in `[min, max]` (inclusive).
    Float { min: f64, max: f64 },
    /// An integer in `[min, max]` (inclusive).
    Int { min: i64, max: i64 },
    /// `true` or `false`.
    Bool,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A free string (e.g. a path or a repo id).
    Str,
    /// A list of integers, each in `[min, max]`.
    IntList { min: i64, max: i64 },
    /// A list of floats, each in `[min, max]`.
    FloatList { min: f64, max: f64 },
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Float { min, max } => write!(f, "float in [{min}, {max}]"),
            ParamType::Int { min, max } => write!(f, "int in [{min}, {max}]"),
            ParamType::Bool => write!(f, "bool"),
            ParamType::Choice(c) => write!(f, "one of {}", c.join(" | ")),
            ParamType::Str => write!(f, "string"),
            ParamType::IntList { min, max } => write!(f, "list of int in [{min}, {max}]"),
            ParamType::FloatList { min, max } => write!(f, "list of float in [{min}, {max}]"),
        }
    }
}

/// The default of a parameter, in a form that can live in a `const` record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamDefault {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(&'static str),
    IntList(&'static [i64]),
    FloatList(&'static [f64]),
    /// Optional: absent unless the spec sets it (the plugin decides what absence means).
    None,
}

impl ParamDefault {
    fn value(&self) -> Option<ParamValue> {
        Some(match self {
            ParamDefault::Float(v) => ParamValue::Float(*v),
            ParamDefault::Int(v) => ParamValue::Int(*v),
            ParamDefault::Bool(v) => ParamValue::Bool(*v),
            ParamDefault::Str(v) => ParamValue::Str((*v).to_string()),
            ParamDefault::IntList(v) => ParamValue::IntList(v.to_vec()),
            ParamDefault::FloatList(v) => ParamValue::FloatList(v.to_vec()),
            ParamDefault::None => return None,
        })
    }
}

impl ParamSpec {
    /// Whether the default passes the checks a spec's value gets (type and range): a plugin
    /// whose default does not is refused when the registry is built, not at every use.
    pub fn check_default(&self) -> std::result::Result<(), String> {
        let v = match self.default {
            ParamDefault::Float(x) => toml::Value::Float(x),
            ParamDefault::Int(i) => toml::Value::Integer(i),
            ParamDefault::Bool(b) => toml::Value::Boolean(b),
            ParamDefault::Str(s) => toml::Value::String(s.to_string()),
            ParamDefault::IntList(l) => {
                toml::Value::Array(l.iter().map(|&i| toml::Value::Integer(i)).collect())
            }
            ParamDefault::FloatList(l) => {
                toml::Value::Array(l.iter().map(|&x| toml::Value::Float(x)).collect())
            }
            ParamDefault::None => return Ok(()),
        };
        convert(self, &v).map(|_| ())
    }
}

impl fmt::Display for ParamDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            Some(v) => write!(f, "{v}"),
            None => write!(f, "(unset)"),
        }
    }
}

/// One documented parameter of a plugin.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// Key as written in the spec (`[[pipeline]]` table or `plugin.key` in a sweep).
    pub name: &'static str,
    pub ty: ParamType,
    pub default: ParamDefault,
    /// One or two sentences: meaning, unit, and where the default comes from.
    pub doc: &'static str,
}

/// A resolved parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
    IntList(Vec<i64>),
    FloatList(Vec<f64>),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Str(v) => write!(f, "\"{v}\""),
            ParamValue::IntList(v) => write!(f, "{v:?}"),
            ParamValue::FloatList(v) => write!(f, "{v:?}"),
        }
    }
}

impl ParamValue {
    /// The TOML form of this value (used for resolved configs and hashing).
    pub fn to_toml(&self) -> toml::Value {
        match self {
            ParamValue::Float(v) => toml::Value::Float(*v),
            ParamValue::Int(v) => toml::Value::Integer(*v),
            ParamValue::Bool(v) => toml::Value::Boolean(*v),
            ParamValue::Str(v) => toml::Value::String(v.clone()),
            ParamValue::IntList(v) => {
                toml::Value::Array(v.iter().map(|x| toml::Value::Integer(*x)).collect())
            }
            ParamValue::FloatList(v) => {
                toml::Value::Array(v.iter().map(|x| toml::Value::Float(*x)).collect())
            }
        }
    }
}

/// The validated parameters of one plugin instance: every declared key, defaults filled in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    plugin: String,
    values: BTreeMap<String, ParamValue>,
}

impl Params {
    /// Validate raw TOML values against a schema. Unknown keys, wrong types and out-of-range
    /// values are errors that name the plugin and the key; absent keys take their defaults.
    pub fn resolve(
        plugin: &str,
        schema: &[ParamSpec],
        raw: &BTreeMap<String, toml::Value>,
    ) -> Result<Params> {
        let err = |key: &str, msg: String, hint: Option<String>| CoreError::Param {
            plugin: plugin.to_string(),
            key: key.to_string(),
            msg,
            hint,
        };
        for key in raw.keys() {
            if !schema.iter().any(|p| p.name == key) {
                let names: Vec<&str> = schema.iter().map(|p| p.name).collect();
                let hint = match crate::registry::nearest(key, names.iter().copied()) {
                    Some(n) => {
                        format!("did you mean `{n}`? known parameters: {}", names.join(", "))
                    }
                    None if names.is_empty() => "this plugin takes no parameters".to_string(),
                    None => format!("known parameters: {}", names.join(", ")),
                };
                return Err(err(key, "unknown parameter".into(), Some(hint)));
            }
        }
        let mut values = BTreeMap::new();
        for spec in schema {
            let v = match raw.get(spec.name) {
                Some(v) => convert(spec, v).map_err(|m| {
                    err(
                        spec.name,
                        m,
                        Some(format!("expected {} (default {})", spec.ty, spec.default)),
                    )
                })?,
                None => match spec.default.value() {
                    Some(v) => v,
                    None => continue,
                },
            };
            values.insert(spec.name.to_string(), v);
        }
        Ok(Params {
            plugin: plugin.to_string(),
            values,
        })
    }

    /// The plugin these parameters belong to.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// All resolved values, sorted by key.
    pub fn values(&self) -> &BTreeMap<String, ParamValue> {
        &self.values
    }

    fn missing(&self, key: &str, ty: &str) -> CoreError {
        CoreError::Param {
            plugin: self.plugin.clone(),
            key: key.to_string(),
            msg: format!("no {ty} value (a plugin read a key its schema does not declare)"),
            hint: None,
        }
    }

    /// An optional value: `None` where the schema default is [`ParamDefault::None`] and unset.
    pub fn get(&self, key: &str) -> Option<&ParamValue> {
        self.values.get(key)
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        match self.values.get(key) {
            Some(ParamValue::Float(v)) => Ok(*v),
            Some(ParamValue::Int(v)) => Ok(*v as f64),
            _ => Err(self.missing(key, "float")),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.values.get(key) {
            None => Ok(None),
            Some(_) => self.f64(key).map(Some),
        }
    }

    pub fn i64(&self, key: &str) -> Result<i64> {
        match self.values.get(key) {
            Some(ParamValue::Int(v)) => Ok(*v),
            _ => Err(self.missing(key, "int")),
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.i64(key)?;
        usize::try_from(v).map_err(|_| self.missing(key, "non-negative int"))
    }

    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.values.get(key) {
            Some(ParamValue::Bool(v)) => Ok(*v),
            _ => Err(self.missing(key, "bool")),
        }
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        match self.values.get(key) {
            Some(ParamValue::Str(v)) => Ok(v),
            _ => Err(self.missing(key, "string")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Option<&str> {
        match self.values.get(key) {
            Some(ParamValue::Str(v)) => Some(v),
            _ => None,
        }
    }

    pub fn int_list(&self, key: &str) -> Result<&[i64]> {
        match self.values.get(key) {
            Some(ParamValue::IntList(v)) => Ok(v),
            _ => Err(self.missing(key, "int list")),
        }
    }

    pub fn float_list(&self, key: &str) -> Result<&[f64]> {
        match self.values.get(key) {
            Some(ParamValue::FloatList(v)) => Ok(v),
            _ => Err(self.missing(key, "float list")),
        }
    }

    /// The resolved values as a TOML table (for resolved configs and content hashes).
    pub fn to_toml(&self) -> toml::Table {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), v.to_toml()))
            .collect()
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    v.type_str()
}

fn convert(spec: &ParamSpec, v: &toml::Value) -> std::result::Result<ParamValue, String> {
    let wrong = || format!("wrong type: got {} `{v}`", type_name(v));
    match spec.ty {
        ParamType::Float { min, max } => {
            let x = match v {
                toml::Value::Float(x) => *x,
                toml::Value::Integer(i) => *i as f64,
                _ => return Err(wrong()),
            };
            if !(x.is_finite() && x >= min && x <= max) {
                return Err(format!("{x} is out of range [{min}, {max}]"));
            }
            Ok(ParamValue::Float(x))
        }
        ParamType::Int { min, max } => {
            let toml::Value::Integer(x) = v else {
                return Err(wrong());
            };
            if *x < min || *x > max {
                return Err(format!("{x} is out of range [{min}, {max}]"));
            }
            Ok(ParamValue::Int(*x))
        }
        ParamType::Bool => match v {
            toml::Value::Boolean(b) => Ok(ParamValue::Bool(*b)),
            _ => Err(wrong()),
        },
        ParamType::Choice(choices) => match v {
            toml::Value::String(s) if choices.contains(&s.as_str()) => {
                Ok(ParamValue::Str(s.clone()))
            }
            toml::Value::String(s) => Err(format!(
                "`{s}` is not one of {}{}",
                choices
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                choices
                    .iter()
                    .copied()
                    .find(|c| c.eq_ignore_ascii_case(s))
                    .or_else(|| crate::registry::nearest(s, choices.iter().copied()))
                    .map(|c| format!(" (did you mean \"{c}\"?)"))
                    .unwrap_or_default()
            )),
            _ => Err(wrong()),
        },
        ParamType::Str => match v {
            toml::Value::String(s) => Ok(ParamValue::Str(s.clone())),
            _ => Err(wrong()),
        },
        ParamType::IntList { min, max } => {
            let toml::Value::Array(items) = v else {
                return Err(wrong());
            };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let toml::Value::Integer(x) = item else {
                    return Err(format!("list item `{item}` is not an integer"));
                };
                if *x < min || *x > max {
                    return Err(format!("list item {x} is out of range [{min}, {max}]"));
                }
                out.push(*x);
            }
            Ok(ParamValue::IntList(out))
        }
        ParamType::FloatList { min, max } => {
            let toml::Value::Array(items) = v else {
                return Err(wrong());
            };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let x = match item {
                    toml::Value::Float(x) => *x,
                    toml::Value::Integer(i) => *i as f64,
                    _ => return Err(format!("list item `{item}` is not a number")),
                };
                if !(x >= min && x <= max) {
                    return Err(format!("list item {x} is out of range [{min}, {max}]"));
                }
                out.push(x);
            }
            Ok(ParamValue::FloatList(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &[ParamSpec] = &[
        ParamSpec {
            name: "temperature",
            ty: ParamType::Float {
                min: 1e-6,
                max: 10.0,
            },
            default: ParamDefault::Float(0.05),
            doc: "softmax temperature",
        },
        ParamSpec {
            name: "steps",
            ty: ParamType::Int { min: 0, max: 100 },
            default: ParamDefault::Int(10),
            doc: "iterations",
        },
        ParamSpec {
            name: "variant",
            ty: ParamType::Choice(&["phase2a", "paper"]),
            default: ParamDefault::Str("phase2a"),
            doc: "which method",
        },
        ParamSpec {
            name: "dilations",
            ty: ParamType::IntList { min: 1, max: 64 },
            default: ParamDefault::IntList(&[8, 16]),
            doc: "dilations",
        },
        ParamSpec {
            name: "sigma",
            ty: ParamType::Float {
                min: 0.0,
                max: 100.0,
            },
            default: ParamDefault::None,
            doc: "optional",
        },
    ];

    fn raw(s: &str) -> BTreeMap<String, toml::Value> {
        let t: toml::Table = s.parse().unwrap();
        t.into_iter().collect()
    }

    #[test]
    fn defaults_fill_in_and_optional_stays_unset() {
        let p = Params::resolve("x", SCHEMA, &raw("")).unwrap();
        assert_eq!(p.f64("temperature").unwrap(), 0.05);
        assert_eq!(p.usize("steps").unwrap(), 10);
        assert_eq!(p.str("variant").unwrap(), "phase2a");
        assert_eq!(p.int_list("dilations").unwrap(), &[8, 16]);
        assert_eq!(p.opt_f64("sigma").unwrap(), None);
    }

    #[test]
    fn integer_is_accepted_for_float() {
        let p = Params::resolve("x", SCHEMA, &raw("temperature = 1")).unwrap();
        assert_eq!(p.f64("temperature").unwrap(), 1.0);
    }

    #[test]
    fn errors_name_plugin_key_and_hint() {
        let e = Params::resolve("x", SCHEMA, &raw("temprature = 0.1")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("plugin `x`") && m.contains("`temprature`"),
            "{m}"
        );
        assert!(m.contains("did you mean `temperature`"), "{m}");

        let m = Params::resolve("x", SCHEMA, &raw("temperature = 50.0"))
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("out of range") && m.contains("temperature"),
            "{m}"
        );

        let m = Params::resolve("x", SCHEMA, &raw("steps = \"many\""))
            .unwrap_err()
            .to_string();
        assert!(m.contains("wrong type") && m.contains("steps"), "{m}");

        let m = Params::resolve("x", SCHEMA, &raw("variant = \"nope\""))
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("\"paper\"") && !m.contains("did you mean"),
            "{m}"
        );
        for (typo, meant) in [
            ("Paper", "paper"),
            ("PHASE2A", "phase2a"),
            ("papr", "paper"),
        ] {
            let m = Params::resolve("x", SCHEMA, &raw(&format!("variant = \"{typo}\"")))
                .unwrap_err()
                .to_string();
            assert!(m.contains(&format!("did you mean \"{meant}\"")), "{m}");
        }

        let m = Params::resolve("x", SCHEMA, &raw("dilations = [0, 8]"))
            .unwrap_err()
            .to_string();
        assert!(m.contains("list item 0"), "{m}");
    }
}
