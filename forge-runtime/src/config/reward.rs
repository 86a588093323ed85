use schemars::SchemaGenerator;
use serde_json::{Map, Value};

use super::registered::{self, Section};
use crate::reward::registry;

/// One reward function: a registered reward by `name`, its weight in the episode's total, and its
/// own parameters as sibling keys.
///
/// ```yaml
/// rewards:
///   - name: exact_match
///     weight: 1.0
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RewardConfig {
    /// Registered name of the reward (built-in, or a `#[forge::reward]` function from `code`).
    pub name: String,
    /// Weight of this reward in the episode's total reward.
    pub weight: f64,
    /// Seconds a single scoring may take before it is abandoned and scored `fallback`.
    pub timeout_s: f64,
    /// Score given when the reward function panics or times out (counted in the metrics).
    pub fallback: f64,
    /// The reward's own parameters, checked against its parameter schema.
    pub params: Map<String, Value>,
}

const DEFAULT_WEIGHT: f64 = 1.0;
const DEFAULT_TIMEOUT_S: f64 = 10.0;
const DEFAULT_FALLBACK: f64 = 0.0;

impl Section for RewardConfig {
    const DESCRIPTION: &'static str = "A reward function by registered `name`, its `weight`, and its own parameters as sibling keys.";
    const WHAT: &'static str = "reward";
    const GENERIC_KEYS: &'static [&'static str] = &["name", "weight", "timeout_s", "fallback"];

    fn from_parts(
        name: String,
        mut generic: Map<String, Value>,
        params: Map<String, Value>,
    ) -> Result<Self, String> {
        let mut number = |key: &str, default: f64| match generic.remove(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("`{key}` must be a number, found {v}")),
        };
        Ok(Self {
            name,
            weight: number("weight", DEFAULT_WEIGHT)?,
            timeout_s: number("timeout_s", DEFAULT_TIMEOUT_S)?,
            fallback: number("fallback", DEFAULT_FALLBACK)?,
            params,
        })
    }

    fn to_parts(&self) -> (String, Map<String, Value>, Map<String, Value>) {
        let mut generic = Map::new();
        generic.insert("weight".into(), self.weight.into());
        generic.insert("timeout_s".into(), self.timeout_s.into());
        generic.insert("fallback".into(), self.fallback.into());
        (self.name.clone(), generic, self.params.clone())
    }

    fn generic_properties(_: &mut SchemaGenerator) -> Map<String, Value> {
        let number = |description: &str, default: f64, min: Option<f64>| {
            let mut s = Map::new();
            s.insert("type".into(), "number".into());
            s.insert("description".into(), description.into());
            s.insert("default".into(), default.into());
            if let Some(min) = min {
                s.insert("exclusiveMinimum".into(), min.into());
            }
            Value::Object(s)
        };
        let mut props = Map::new();
        props.insert(
            "weight".into(),
            number(
                "Weight of this reward in the episode's total reward.",
                DEFAULT_WEIGHT,
                None,
            ),
        );
        props.insert(
            "timeout_s".into(),
            number(
                "Seconds a single scoring may take before it is abandoned and scored `fallback`.",
                DEFAULT_TIMEOUT_S,
                Some(0.0),
            ),
        );
        props.insert(
            "fallback".into(),
            number(
                "Score given when the reward function panics or times out (counted in the metrics).",
                DEFAULT_FALLBACK,
                None,
            ),
        );
        props
    }

    fn entries() -> Vec<registered::Entry> {
        registry::all()
            .map(|r| registered::Entry {
                name: r.name,
                summary: r.summary,
                params_schema: r.params_schema,
            })
            .collect()
    }
}

registered::impl_section_traits!(RewardConfig);
