//! Config sections naming a registered item (a loss, a reward) whose own parameters sit beside the
//! name: `{name: grpo, clip_low: 0.2}`. The schema is built from the registry, so every built-in's
//! parameters get completion and checking, and unknown names (user code) stay open.

use schemars::{Schema, SchemaGenerator};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serializer};
use serde_json::{Map, Value};

/// One registered item, as the schema sees it.
pub(crate) struct Entry {
    pub name: &'static str,
    pub summary: &'static str,
    pub params_schema: fn() -> Schema,
}

/// A config section of the `{name, generic keys..., params...}` shape.
pub(crate) trait Section: Sized {
    /// The section's schema description.
    const DESCRIPTION: &'static str;
    /// What the items are called in messages ("loss").
    const WHAT: &'static str;
    /// Keys every item accepts (`name` first); everything else is a parameter.
    const GENERIC_KEYS: &'static [&'static str];
    fn from_parts(
        name: String,
        generic: Map<String, Value>,
        params: Map<String, Value>,
    ) -> Result<Self, String>;
    fn to_parts(&self) -> (String, Map<String, Value>, Map<String, Value>);
    fn generic_properties(generator: &mut SchemaGenerator) -> Map<String, Value>;
    fn entries() -> Vec<Entry>;
}

pub(crate) fn serialize<T: Section, S: Serializer>(section: &T, s: S) -> Result<S::Ok, S::Error> {
    let (name, generic, params) = section.to_parts();
    let mut map = s.serialize_map(Some(1 + generic.len() + params.len()))?;
    map.serialize_entry("name", &name)?;
    for (k, v) in generic.iter().chain(params.iter()) {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

pub(crate) fn deserialize<'de, T: Section, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let mut map = Map::<String, Value>::deserialize(d)?;
    let name = match map.remove("name") {
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(D::Error::custom(format!(
                "`name` must be a string, found {other}"
            )));
        }
        None => return Err(D::Error::custom(format!("a {} needs a `name`", T::WHAT))),
    };
    let mut generic = Map::new();
    for key in &T::GENERIC_KEYS[1..] {
        if let Some(v) = map.remove(*key) {
            generic.insert((*key).to_string(), v);
        }
    }
    T::from_parts(name, generic, map).map_err(D::Error::custom)
}

/// `{type: object, properties: {name, generic...}, required: [name], allOf: [if name == X then
/// X's parameters only]}`. Names outside the registry are accepted here and checked against the
/// registry of the built binary, which includes user code.
pub(crate) fn schema<T: Section>(generator: &mut SchemaGenerator) -> Schema {
    let entries = T::entries();
    let generic = T::generic_properties(generator);

    let mut choices: Vec<Value> = entries
        .iter()
        .map(|e| serde_json::json!({ "const": e.name, "description": e.summary }))
        .collect();
    choices.push(serde_json::json!({ "type": "string", "description": format!("A {} registered by user code.", T::WHAT) }));
    let mut properties = Map::new();
    properties.insert(
        "name".into(),
        serde_json::json!({
            "description": format!("Registered name of the {}.", T::WHAT),
            "type": "string",
            "anyOf": choices,
        }),
    );
    properties.extend(generic.clone());

    let branches: Vec<Value> = entries
        .iter()
        .map(|e| {
            let params = (e.params_schema)().to_value();
            let mut props = params
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            props.insert("name".into(), Value::Bool(true));
            for key in generic.keys() {
                props.insert(key.clone(), Value::Bool(true));
            }
            serde_json::json!({
                "if": { "properties": { "name": { "const": e.name } }, "required": ["name"] },
                "then": { "properties": props, "additionalProperties": false },
            })
        })
        .collect();

    let mut schema = Map::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), Value::Object(properties));
    schema.insert("required".into(), serde_json::json!(["name"]));
    if !branches.is_empty() {
        schema.insert("allOf".into(), Value::Array(branches));
    }
    Schema::from(schema)
}

/// `Serialize`, `Deserialize` and `JsonSchema` for a [`Section`], through the functions above.
macro_rules! impl_section_traits {
    ($ty:ident) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::config::registered::serialize(self, s)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::config::registered::deserialize(d)
            }
        }

        impl ::schemars::JsonSchema for $ty {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(generator: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                let mut schema = $crate::config::registered::schema::<Self>(generator);
                schema.insert(
                    "description".into(),
                    <Self as $crate::config::registered::Section>::DESCRIPTION.into(),
                );
                schema
            }
        }
    };
}
pub(crate) use impl_section_traits;
