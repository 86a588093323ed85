//! The experiment JSON Schema (generated from the config types, losses' and rewards' parameters
//! included), and checking a document against it with located, human-worded errors.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::json_schema::{self, Violation};
use super::overrides::describe;
use super::{Diagnostic, Experiment, SourceMap};

/// The schema's `$id`-less title line, used by editors.
const TITLE: &str = "Forge experiment";

/// The JSON Schema of experiment files, with every loss and reward registered in this binary.
///
/// `forge schema` writes it to `schemas/experiment.schema.json`; a test keeps that file in sync.
pub fn json_schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<Experiment>().to_value();
    if let Some(object) = schema.as_object_mut() {
        object.insert("title".into(), TITLE.into());
    }
    schema
}

/// The schema as written to `schemas/experiment.schema.json`: pretty JSON with a final newline.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// The schema, generated once per process.
fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(json_schema)
}

/// Checks `instance` against the schema; every violation becomes a located diagnostic.
pub(crate) fn check(instance: &Value, map: &SourceMap) -> Vec<Diagnostic> {
    let schema = schema();
    let mut out = Vec::new();
    for error in json_schema::validate(schema, instance) {
        let pointer = error.pointer.as_str();
        let at = display_path(pointer);
        let value_origin = map.value(pointer).cloned();
        let within = if at.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in `{at}`")
        };
        let found = &error.instance;
        match &error.violation {
            Violation::AdditionalProperties(unexpected) => {
                let known = property_names_at(schema, instance, pointer);
                for key in unexpected {
                    let child = format!("{pointer}/{}", super::source::escape_segment(key));
                    let origin = map
                        .key(&child)
                        .map(super::Origin::File)
                        .or_else(|| map.value(&child).cloned());
                    out.push(
                        Diagnostic::error(format!("unknown key `{key}` {within}"), origin)
                            .with_hint(did_you_mean(key, &known)),
                    );
                }
            }
            Violation::Required(key) => {
                let description = property_description(schema, instance, pointer, key);
                out.push(
                    Diagnostic::error(format!("missing key `{key}` {within}"), value_origin)
                        .with_hint(description.map(|d| format!("`{key}`: {d}"))),
                );
            }
            Violation::Type(types) => {
                let expected = types
                    .iter()
                    .map(|t| type_name(t))
                    .collect::<Vec<_>>()
                    .join(" or ");
                out.push(Diagnostic::error(
                    format!(
                        "`{at}` must be {expected}, found {} `{}`",
                        describe(found),
                        short(found)
                    ),
                    value_origin,
                ));
            }
            Violation::Enum(options) => {
                let choices: Vec<String> = options
                    .iter()
                    .filter_map(|o| o.as_str().map(str::to_string))
                    .collect();
                out.push(choice_error(&at, &choices, found, value_origin));
            }
            Violation::Bound(keyword, limit) => {
                let relation = match *keyword {
                    "minimum" => "at least",
                    "maximum" => "at most",
                    "exclusiveMinimum" => "greater than",
                    _ => "less than",
                };
                let description = field_description(schema, instance, pointer);
                out.push(
                    Diagnostic::error(
                        format!("`{at}` must be {relation} {limit}, found {}", short(found)),
                        value_origin,
                    )
                    .with_hint(description.map(|d| format!("`{at}`: {d}"))),
                );
            }
            Violation::NoBranch | Violation::ManyBranches
                if !choices_at(schema, instance, pointer).is_empty() =>
            {
                // Documented enums become `oneOf: [{const, description}]`: word them as enums.
                let choices = choices_at(schema, instance, pointer);
                out.push(choice_error(&at, &choices, found, value_origin));
            }
            violation => {
                let subject = if at.is_empty() {
                    "the experiment".to_string()
                } else {
                    format!("`{at}`")
                };
                let description = field_description(schema, instance, pointer);
                out.push(
                    Diagnostic::error(
                        format!("{subject} {violation}, found `{}`", short(found)),
                        value_origin,
                    )
                    .with_hint(description.map(|d| format!("`{at}`: {d}"))),
                );
            }
        }
    }
    out
}

/// "`backend` must be one of cpu, cuda, wgpu; found `cdua`", with a suggestion.
fn choice_error(
    at: &str,
    choices: &[String],
    found: &Value,
    origin: Option<super::Origin>,
) -> Diagnostic {
    let hint = found.as_str().and_then(|f| did_you_mean(f, choices));
    Diagnostic::error(
        format!(
            "`{at}` must be one of {}; found `{}`",
            choices.join(", "),
            short(found)
        ),
        origin,
    )
    .with_hint(hint)
}

/// `/rewards/0/weight` -> `rewards[0].weight`.
pub(crate) fn display_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

fn type_name(t: &str) -> String {
    match t {
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "string" => "a string".into(),
        "boolean" => "a boolean (true or false)".into(),
        "array" => "a list".into(),
        "object" => "a mapping".into(),
        "null" => "null".into(),
        other => other.into(),
    }
}

/// The value, shortened for a message.
fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

/// "did you mean `x`?" for the closest candidate, or the list of candidates when none is close.
pub(crate) fn did_you_mean(found: &str, candidates: &[String]) -> Option<String> {
    let best = candidates
        .iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&found.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, c)) if score >= 0.8 => Some(format!("did you mean `{c}`?")),
        _ if !candidates.is_empty() && candidates.len() <= 30 => {
            Some(format!("expected one of: {}", candidates.join(", ")))
        }
        _ => None,
    }
}

/// Follows `$ref`s to `#/$defs/...`.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#"))
        {
            Some(pointer) => match root.pointer(pointer) {
                Some(target) => schema = target,
                None => break,
            },
            None => break,
        }
    }
    schema
}

/// The object schemas that apply to the instance at `pointer` (following refs, `anyOf` branches
/// and the loss/reward `if name == X then ...` branches).
fn schemas_at<'a>(root: &'a Value, instance: &Value, pointer: &str) -> Vec<&'a Value> {
    let mut current = vec![root];
    let mut node = Some(instance);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        let mut next = Vec::new();
        for schema in expand(root, current, node) {
            if let Some(s) = schema.get("properties").and_then(|p| p.get(&segment)) {
                next.push(s);
            } else if let Some(items) = schema.get("items") {
                next.push(items);
            } else if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object())
            {
                next.push(extra);
            }
        }
        node = node.and_then(|n| match n {
            Value::Object(o) => o.get(&segment),
            Value::Array(a) => segment.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        });
        current = next;
    }
    expand(root, current, node)
}

fn expand<'a>(root: &'a Value, schemas: Vec<&'a Value>, node: Option<&Value>) -> Vec<&'a Value> {
    let mut out = Vec::new();
    let mut stack = schemas;
    while let Some(s) = stack.pop() {
        let s = resolve(root, s);
        out.push(s);
        for key in ["anyOf", "oneOf", "allOf"] {
            for branch in s.get(key).and_then(Value::as_array).into_iter().flatten() {
                let applies = match (branch.get("if"), node) {
                    (Some(condition), Some(n)) => {
                        let want = condition.pointer("/properties/name/const");
                        want.is_some() && n.get("name") == want
                    }
                    (Some(_), None) => false,
                    _ => true,
                };
                if applies {
                    stack.push(branch.get("then").unwrap_or(branch));
                }
            }
        }
    }
    out
}

/// The allowed values at `pointer` when its schema is a choice of constants.
fn choices_at(root: &Value, instance: &Value, pointer: &str) -> Vec<String> {
    for schema in schemas_at(root, instance, pointer) {
        let Some(branches) = schema.get("oneOf").and_then(Value::as_array) else {
            continue;
        };
        let consts: Vec<String> = branches
            .iter()
            .filter_map(|b| {
                resolve(root, b)
                    .get("const")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        if !consts.is_empty() && consts.len() == branches.len() {
            return consts;
        }
    }
    Vec::new()
}

/// Keys accepted at `pointer`.
fn property_names_at(root: &Value, instance: &Value, pointer: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for schema in schemas_at(root, instance, pointer) {
        for key in schema
            .get("properties")
            .and_then(Value::as_object)
            .map(Map::keys)
            .into_iter()
            .flatten()
        {
            if !names.contains(key) {
                names.push(key.clone());
            }
        }
    }
    names
}

fn field_description(root: &Value, instance: &Value, pointer: &str) -> Option<String> {
    schemas_at(root, instance, pointer)
        .into_iter()
        .find_map(|s| s.get("description").and_then(Value::as_str))
        .map(|d| d.lines().next().unwrap_or(d).to_string())
}

fn property_description(
    root: &Value,
    instance: &Value,
    pointer: &str,
    key: &str,
) -> Option<String> {
    field_description(
        root,
        instance,
        &format!("{pointer}/{}", super::source::escape_segment(key)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_every_section_and_builtin_loss_parameters() {
        let schema = json_schema();
        let text = schema.to_string();
        for needle in [
            "\"training\"",
            "\"sampling\"",
            "\"clip_high\"",
            "\"dual_clip_c\"",
            "\"tau_neg\"",
            "\"exact_match\"",
        ] {
            assert!(text.contains(needle), "schema lacks {needle}");
        }
    }

    #[test]
    fn did_you_mean_finds_close_keys() {
        let keys = ["lr".to_string(), "steps".into(), "warmup_steps".into()];
        assert_eq!(
            did_you_mean("step", &keys).as_deref(),
            Some("did you mean `steps`?")
        );
        assert_eq!(
            did_you_mean("warmup_step", &keys).as_deref(),
            Some("did you mean `warmup_steps`?")
        );
        assert!(did_you_mean("zzzz", &keys).is_some_and(|h| h.starts_with("expected one of")));
    }

    #[test]
    fn display_paths_read_like_yaml() {
        assert_eq!(display_path("/rewards/0/weight"), "rewards[0].weight");
        assert_eq!(display_path("/training/lr"), "training.lr");
        assert_eq!(display_path(""), "");
    }
}
