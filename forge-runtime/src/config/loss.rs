use schemars::{JsonSchema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::registered::{self, Section};
use crate::loss::registry;

/// The policy loss: a registered loss by `name`, with its own parameters as sibling keys.
///
/// ```yaml
/// loss:
///   name: grpo
///   clip_low: 0.2
///   clip_high: 0.28
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LossConfig {
    /// Registered name of the loss (built-in: grpo, dapo, cispo, gspo, sapo; or a
    /// `#[forge::loss]` function from `code`).
    pub name: String,
    /// Token aggregation; unset: the loss's own default.
    pub aggregation: Option<Aggregation>,
    /// The loss's own parameters, checked against its parameter schema.
    pub params: Map<String, Value>,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            name: "grpo".into(),
            aggregation: None,
            params: Map::new(),
        }
    }
}

/// How per-token losses are reduced to the batch loss. The normaliser is computed over the whole
/// optimiser batch, so the result does not change with gradient accumulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Sum over all unmasked tokens of the batch, divided by their count (DAPO).
    TokenMean,
    /// Mean over each sequence's unmasked tokens, then mean over sequences (GRPO paper, GSPO).
    SequenceMean,
    /// Sum over unmasked tokens divided by a constant, sequences x `sampling.max_tokens`
    /// (Dr. GRPO): no length bias.
    FixedHorizon,
}

impl Aggregation {
    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenMean => "token_mean",
            Self::SequenceMean => "sequence_mean",
            Self::FixedHorizon => "fixed_horizon",
        }
    }
}

impl Section for LossConfig {
    const DESCRIPTION: &'static str =
        "The policy loss: a registered loss by `name`, with its own parameters as sibling keys.";
    const WHAT: &'static str = "loss";
    const GENERIC_KEYS: &'static [&'static str] = &["name", "aggregation"];

    fn from_parts(
        name: String,
        mut generic: Map<String, Value>,
        params: Map<String, Value>,
    ) -> Result<Self, String> {
        let aggregation = match generic.remove("aggregation") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v).map_err(|e| format!("`aggregation`: {e}"))?),
        };
        Ok(Self {
            name,
            aggregation,
            params,
        })
    }

    fn to_parts(&self) -> (String, Map<String, Value>, Map<String, Value>) {
        let mut generic = Map::new();
        if let Some(a) = self.aggregation {
            generic.insert("aggregation".into(), Value::String(a.as_str().into()));
        }
        (self.name.clone(), generic, self.params.clone())
    }

    fn generic_properties(generator: &mut SchemaGenerator) -> Map<String, Value> {
        let mut props = Map::new();
        let mut aggregation = generator.subschema_for::<Aggregation>();
        aggregation.insert(
            "description".into(),
            "How per-token losses are reduced; unset: the loss's own default.".into(),
        );
        props.insert("aggregation".into(), aggregation.to_value());
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

registered::impl_section_traits!(LossConfig);
