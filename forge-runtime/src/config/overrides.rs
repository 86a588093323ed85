//! Command-line overrides: `--set training.lr=1e-5`, and the torchforge style
//! `--trainer.procs 4` (a service name at the front means `services.<name>`).

use serde_json::{Map, Value};

use super::SourceMap;
use super::source::{self, escape_segment};

/// Top-level names that `--<name>.key value` maps under `services`.
const SERVICE_SHORTHANDS: &[&str] = &["generator", "trainer", "ref_model", "reward"];

/// One override of a config value.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The override as the user wrote it, for messages.
    pub text: String,
    /// Keys (and list indices) from the root.
    pub path: Vec<String>,
    /// The new value (its text parsed as YAML: `3`, `true`, `[a, b]`, `{x: 1}`).
    pub value: Value,
}

/// An override that cannot be understood or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("override `{text}`: {reason}")]
pub struct OverrideError {
    /// The override as the user wrote it.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Override {
    /// Parses `key.path=value` (the argument of `--set`).
    pub fn parse_set(arg: &str) -> Result<Self, OverrideError> {
        let text = format!("--set {arg}");
        let Some((path, value)) = arg.split_once('=') else {
            return Err(OverrideError {
                text,
                reason: "expected `key.path=value`".into(),
            });
        };
        Self::new(text, path, value, false)
    }

    /// Parses `--key.path value` (torchforge style); `flag` is without the leading `--`.
    pub fn parse_flag(flag: &str, value: &str) -> Result<Self, OverrideError> {
        Self::new(format!("--{flag} {value}"), flag, value, true)
    }

    fn new(
        text: String,
        path: &str,
        value: &str,
        service_shorthand: bool,
    ) -> Result<Self, OverrideError> {
        let mut segments: Vec<String> = path.split('.').map(str::to_string).collect();
        if let Some(bad) = segments
            .iter()
            .find(|s| s.is_empty() || s.trim() != s.as_str())
        {
            let reason = if bad.is_empty() {
                format!("`{path}` has an empty key")
            } else {
                format!("key `{bad}` has surrounding spaces")
            };
            return Err(OverrideError { text, reason });
        }
        if service_shorthand && SERVICE_SHORTHANDS.contains(&segments[0].as_str()) {
            segments.insert(0, "services".into());
        }
        let value = match source::parse(value) {
            Ok((v, _)) => v,
            Err(errors) => {
                let reason = errors.first().map_or_else(
                    || "not valid YAML".to_string(),
                    |e| format!("the value is not valid YAML: {}", e.message),
                );
                return Err(OverrideError { text, reason });
            }
        };
        Ok(Self {
            text,
            path: segments,
            value,
        })
    }

    /// The JSON pointer of the overridden value.
    pub fn pointer(&self) -> String {
        self.path
            .iter()
            .map(|s| format!("/{}", escape_segment(s)))
            .collect()
    }

    /// Sets the value in `root`, creating missing mappings on the way, and records the origin.
    pub(crate) fn apply(&self, root: &mut Value, map: &mut SourceMap) -> Result<(), OverrideError> {
        let mut node = root;
        let mut walked = Vec::new();
        for (i, key) in self.path.iter().enumerate() {
            let last = i + 1 == self.path.len();
            if node.is_null() {
                *node = Value::Object(Map::new());
            }
            let error = |reason: String| OverrideError {
                text: self.text.clone(),
                reason,
            };
            node = match node {
                Value::Object(object) => {
                    if last {
                        object.insert(key.clone(), self.value.clone());
                        break;
                    }
                    object.entry(key.clone()).or_insert(Value::Null)
                }
                Value::Array(items) => {
                    let len = items.len();
                    let index: usize = key.parse().map_err(|_| {
                        error(format!(
                            "`{}` is a list: expected an index, found `{key}`",
                            walked.join(".")
                        ))
                    })?;
                    let slot = items.get_mut(index).ok_or_else(|| {
                        error(format!(
                            "`{}` has {len} items: index {index} is out of range",
                            walked.join(".")
                        ))
                    })?;
                    if last {
                        *slot = self.value.clone();
                        break;
                    }
                    slot
                }
                other => {
                    return Err(error(format!(
                        "`{}` is {}, not a mapping: cannot set `{key}` inside it",
                        walked.join("."),
                        describe(other)
                    )));
                }
            };
            walked.push(key.clone());
        }
        map.set_override(&self.pointer(), &self.text);
        Ok(())
    }
}

/// "a number", "a string", ... for messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Splits torchforge-style `--a.b value` / `--a.b=value` flags out of `args` (a flag with a dot in
/// its name is never one of Forge's own), returning the rest and the overrides.
pub fn extract_dotted_flags(
    args: Vec<String>,
) -> (Vec<String>, Vec<Result<Override, OverrideError>>) {
    let mut rest = Vec::new();
    let mut overrides = Vec::new();
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg
            .strip_prefix("--")
            .filter(|f| f.split('=').next().is_some_and(|k| k.contains('.')))
        else {
            rest.push(arg);
            continue;
        };
        if let Some((key, value)) = flag.split_once('=') {
            overrides.push(Override::parse_flag(key, value));
        } else if let Some(value) = iter.next() {
            overrides.push(Override::parse_flag(flag, &value));
        } else {
            overrides.push(Err(OverrideError {
                text: arg.clone(),
                reason: "missing value".into(),
            }));
        }
    }
    (rest, overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_parses_typed_yaml_values() {
        let o = Override::parse_set("training.lr=1e-5").expect("valid");
        assert_eq!(o.path, ["training", "lr"]);
        assert_eq!(o.value, serde_json::json!(1e-5));
        let o = Override::parse_set("sampling.stop=[\"\\n\\n\", END]").expect("valid");
        assert_eq!(o.value, serde_json::json!(["\n\n", "END"]));
        assert!(Override::parse_set("training.lr").is_err());
        assert!(Override::parse_set("training..lr=1").is_err());
    }

    #[test]
    fn service_flags_map_under_services() {
        let (rest, overrides) = extract_dotted_flags(
            [
                "validate",
                "x.yaml",
                "--trainer.procs",
                "4",
                "--training.lr=2e-6",
                "--json",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert_eq!(rest, ["validate", "x.yaml", "--json"]);
        let overrides: Vec<_> = overrides.into_iter().map(|o| o.expect("valid")).collect();
        assert_eq!(overrides[0].pointer(), "/services/trainer/procs");
        assert_eq!(overrides[0].value, serde_json::json!(4));
        assert_eq!(overrides[1].pointer(), "/training/lr");
    }

    #[test]
    fn apply_creates_sections_and_indexes_lists() {
        let mut root = serde_json::json!({"rewards": [{"name": "a"}], "training": {"lr": 1.0}});
        let mut map = SourceMap::default();
        Override::parse_set("sampling.n=4")
            .and_then(|o| o.apply(&mut root, &mut map))
            .expect("applies");
        Override::parse_set("rewards.0.weight=2")
            .and_then(|o| o.apply(&mut root, &mut map))
            .expect("applies");
        assert_eq!(root["sampling"]["n"], 4);
        assert_eq!(root["rewards"][0]["weight"], 2);
        let err =
            Override::parse_set("rewards.5.weight=2").and_then(|o| o.apply(&mut root, &mut map));
        assert!(err.expect_err("out of range").reason.contains("index 5"));
        let err = Override::parse_set("training.lr.x=2").and_then(|o| o.apply(&mut root, &mut map));
        assert!(err.expect_err("scalar").reason.contains("not a mapping"));
        assert!(
            matches!(map.value("/sampling/n"), Some(super::super::Origin::Override(t)) if t == "--set sampling.n=4")
        );
    }
}
