//! Checking a JSON value against the experiment schema (JSON Schema 2020-12, the keywords schemars
//! writes for config types and for the parameter structs of losses and rewards).
//!
//! Written here rather than taken from the `jsonschema` crate, which compiled for 97 s of a two-core
//! fresh build (the CPU demo must finish within ten minutes, build included) for features the
//! generated schemas do not use: remote references, formats, dynamic scopes. What it does beyond
//! plain validation is for the messages: an `anyOf`/`oneOf` that fails reports the errors of the one
//! branch the value was meant for (an `Option<T>` field that is not null reports `T`'s errors).
//!
//! Supported: boolean schemas, `$ref` to the same document, `type`, `enum`, `const`, `properties`,
//! `additionalProperties`, `patternProperties`, `required`, `items`, `prefixItems`, `minItems`,
//! `maxItems`, `uniqueItems`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
//! `multipleOf`, `minLength`, `maxLength`, `pattern`, `allOf`, `anyOf`, `oneOf`, `not`,
//! `if`/`then`/`else`. Annotations (`description`, `default`, `format`...) are ignored, as they
//! are by validators that do not assert formats.

use serde_json::Value;

use super::source::escape_segment;

/// One way the value breaks the schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Violation {
    /// Keys the schema does not allow.
    AdditionalProperties(Vec<String>),
    /// A required key is missing.
    Required(String),
    /// The value's JSON type is not among these (`integer`, `number`, `string`...).
    Type(Vec<String>),
    /// The value is not one of these.
    Enum(Vec<Value>),
    /// The value is not this constant.
    Const(Value),
    /// Numeric bound: `minimum`, `maximum`, `exclusiveMinimum` or `exclusiveMaximum`, with the
    /// limit as the schema writes it.
    Bound(&'static str, serde_json::Number),
    /// Not a multiple of this.
    MultipleOf(f64),
    /// Too short or too long (`minLength`, `maxLength`, `minItems`, `maxItems`).
    Length(&'static str, u64),
    /// The string does not match this regular expression.
    Pattern(String),
    /// A list with repeated items.
    UniqueItems,
    /// None of the `anyOf`/`oneOf` branches matches, and no single branch is the obvious intent.
    NoBranch,
    /// More than one `oneOf` branch matches.
    ManyBranches,
    /// The value matches a `not` schema.
    Not,
    /// The schema itself is broken (a dangling `$ref`, a bad pattern).
    BadSchema(String),
}

/// A violation at a place in the checked value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SchemaError {
    /// JSON pointer to the offending value (`""` for the root).
    pub pointer: String,
    /// The offending value.
    pub instance: Value,
    /// What is wrong.
    pub violation: Violation,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AdditionalProperties(keys) => write!(f, "unknown keys {}", keys.join(", ")),
            Self::Required(key) => write!(f, "missing key `{key}`"),
            Self::Type(types) => write!(f, "must be of type {}", types.join(" or ")),
            Self::Enum(options) => write!(f, "must be one of {}", join_values(options)),
            Self::Const(value) => write!(f, "must be {value}"),
            Self::Bound(keyword, limit) => write!(f, "violates {keyword} {limit}"),
            Self::MultipleOf(step) => write!(f, "must be a multiple of {step}"),
            Self::Length(keyword, limit) => write!(f, "violates {keyword} {limit}"),
            Self::Pattern(pattern) => write!(f, "must match the pattern `{pattern}`"),
            Self::UniqueItems => write!(f, "has repeated items"),
            Self::NoBranch => write!(f, "matches none of the allowed forms"),
            Self::ManyBranches => write!(f, "matches more than one of the allowed forms"),
            Self::Not => write!(f, "has a form that is not allowed"),
            Self::BadSchema(why) => write!(f, "cannot be checked: {why}"),
        }
    }
}

fn join_values(values: &[Value]) -> String {
    values
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every violation of `schema` (a whole document, for `$ref`s) by `instance`, in document order.
pub(crate) fn validate(schema: &Value, instance: &Value) -> Vec<SchemaError> {
    let mut out = Vec::new();
    Checker { root: schema }.check(schema, instance, "", &mut out, 0);
    out
}

struct Checker<'s> {
    root: &'s Value,
}

/// Deeper than any schema Forge generates; stops a self-referencing schema from looping.
const MAX_DEPTH: usize = 64;

impl Checker<'_> {
    fn check(
        &self,
        schema: &Value,
        instance: &Value,
        pointer: &str,
        out: &mut Vec<SchemaError>,
        depth: usize,
    ) {
        let error = |violation| SchemaError {
            pointer: pointer.to_string(),
            instance: instance.clone(),
            violation,
        };
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return out.push(error(Violation::Not)),
            Value::Object(schema) => schema,
            _ => return,
        };
        if depth > MAX_DEPTH {
            return out.push(error(Violation::BadSchema("nested too deeply".into())));
        }
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            match reference
                .strip_prefix('#')
                .and_then(|p| self.root.pointer(p))
            {
                Some(target) => self.check(target, instance, pointer, out, depth + 1),
                None => out.push(error(Violation::BadSchema(format!(
                    "unresolvable `$ref` {reference}"
                )))),
            }
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.is_empty() && !types.iter().any(|t| has_type(instance, t)) {
                // Checking further keywords against a value of the wrong type only repeats this.
                return out.push(error(Violation::Type(
                    types.iter().map(|t| (*t).to_string()).collect(),
                )));
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.iter().any(|o| o == instance)
        {
            out.push(error(Violation::Enum(options.clone())));
        }
        if let Some(constant) = schema.get("const")
            && constant != instance
        {
            out.push(error(Violation::Const(constant.clone())));
        }
        match instance {
            Value::Object(object) => self.check_object(schema, object, pointer, out, depth),
            Value::Array(items) => self.check_array(schema, items, pointer, out, depth),
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    check_number(schema, x, &error, out);
                }
            }
            Value::String(s) => check_string(schema, s, &error, out),
            _ => {}
        }
        for sub in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.check(sub, instance, pointer, out, depth + 1);
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            if let Some(branches) = schema.get(keyword).and_then(Value::as_array) {
                self.check_branches(branches, exactly_one, instance, pointer, out, depth);
            }
        }
        if let Some(not) = schema.get("not")
            && self.is_valid(not, instance, depth)
        {
            out.push(error(Violation::Not));
        }
        if let Some(condition) = schema.get("if") {
            let branch = if self.is_valid(condition, instance, depth) {
                schema.get("then")
            } else {
                schema.get("else")
            };
            if let Some(branch) = branch {
                self.check(branch, instance, pointer, out, depth + 1);
            }
        }
    }

    fn is_valid(&self, schema: &Value, instance: &Value, depth: usize) -> bool {
        let mut errors = Vec::new();
        self.check(schema, instance, "", &mut errors, depth + 1);
        errors.is_empty()
    }

    fn check_object(
        &self,
        schema: &serde_json::Map<String, Value>,
        object: &serde_json::Map<String, Value>,
        pointer: &str,
        out: &mut Vec<SchemaError>,
        depth: usize,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(key) {
                out.push(SchemaError {
                    pointer: pointer.to_string(),
                    instance: Value::Object(object.clone()),
                    violation: Violation::Required(key.to_string()),
                });
            }
        }
        let mut patterns = Vec::new();
        for (pattern, sub) in schema
            .get("patternProperties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            match regex::Regex::new(pattern) {
                Ok(re) => patterns.push((re, sub)),
                Err(e) => out.push(SchemaError {
                    pointer: pointer.to_string(),
                    instance: Value::Object(object.clone()),
                    violation: Violation::BadSchema(format!("pattern `{pattern}`: {e}")),
                }),
            }
        }
        let mut unexpected = Vec::new();
        for (key, value) in object {
            let child = format!("{pointer}/{}", escape_segment(key));
            let mut known = false;
            if let Some(sub) = properties.and_then(|p| p.get(key)) {
                known = true;
                self.check(sub, value, &child, out, depth + 1);
            }
            for (re, sub) in &patterns {
                if re.is_match(key) {
                    known = true;
                    self.check(sub, value, &child, out, depth + 1);
                }
            }
            if known {
                continue;
            }
            match schema.get("additionalProperties") {
                Some(Value::Bool(false)) => unexpected.push(key.clone()),
                Some(extra @ Value::Object(_)) => self.check(extra, value, &child, out, depth + 1),
                _ => {}
            }
        }
        if !unexpected.is_empty() {
            out.push(SchemaError {
                pointer: pointer.to_string(),
                instance: Value::Object(object.clone()),
                violation: Violation::AdditionalProperties(unexpected),
            });
        }
    }

    fn check_array(
        &self,
        schema: &serde_json::Map<String, Value>,
        items: &[Value],
        pointer: &str,
        out: &mut Vec<SchemaError>,
        depth: usize,
    ) {
        let error = |violation| SchemaError {
            pointer: pointer.to_string(),
            instance: Value::Array(items.to_vec()),
            violation,
        };
        let prefix = schema
            .get("prefixItems")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, item) in items.iter().enumerate() {
            let sub = prefix.get(i).or_else(|| schema.get("items"));
            if let Some(sub) = sub {
                self.check(sub, item, &format!("{pointer}/{i}"), out, depth + 1);
            }
        }
        let len = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            out.push(error(Violation::Length("minItems", min)));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            out.push(error(Violation::Length("maxItems", max)));
        }
        if schema.get("uniqueItems") == Some(&Value::Bool(true))
            && items
                .iter()
                .enumerate()
                .any(|(i, a)| items[i + 1..].contains(a))
        {
            out.push(error(Violation::UniqueItems));
        }
    }

    /// `anyOf`/`oneOf`. When no branch matches, the errors of the one branch that accepts the
    /// value's type (the value's evident intent) are clearer than "matches none".
    fn check_branches(
        &self,
        branches: &[Value],
        exactly_one: bool,
        instance: &Value,
        pointer: &str,
        out: &mut Vec<SchemaError>,
        depth: usize,
    ) {
        let results: Vec<Vec<SchemaError>> = branches
            .iter()
            .map(|b| {
                let mut errors = Vec::new();
                self.check(b, instance, pointer, &mut errors, depth + 1);
                errors
            })
            .collect();
        let valid = results.iter().filter(|e| e.is_empty()).count();
        let error = |violation| SchemaError {
            pointer: pointer.to_string(),
            instance: instance.clone(),
            violation,
        };
        if valid == 0 {
            let typed: Vec<&Vec<SchemaError>> = results
                .iter()
                .filter(|errors| {
                    !errors.iter().any(|e| {
                        e.pointer == pointer
                            && matches!(e.violation, Violation::Type(_) | Violation::Const(_))
                    })
                })
                .collect();
            match typed.as_slice() {
                [only] => out.extend(only.iter().cloned()),
                _ => out.push(error(Violation::NoBranch)),
            }
        } else if exactly_one && valid > 1 {
            out.push(error(Violation::ManyBranches));
        }
    }
}

fn has_type(instance: &Value, t: &str) -> bool {
    match t {
        "null" => instance.is_null(),
        "boolean" => instance.is_boolean(),
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "number" => instance.is_number(),
        "integer" => match instance {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|x| x.fract() == 0.0)
            }
            _ => false,
        },
        _ => true,
    }
}

/// Whether a value breaks a numeric limit.
type Violates = fn(f64, f64) -> bool;

fn check_number(
    schema: &serde_json::Map<String, Value>,
    x: f64,
    error: &dyn Fn(Violation) -> SchemaError,
    out: &mut Vec<SchemaError>,
) {
    let bound = |keyword: &'static str| match schema.get(keyword) {
        Some(Value::Number(n)) => n.as_f64().map(|x| (x, n.clone())),
        _ => None,
    };
    let checks: [(&'static str, Violates); 4] = [
        ("minimum", |x, l| x < l),
        ("maximum", |x, l| x > l),
        ("exclusiveMinimum", |x, l| x <= l),
        ("exclusiveMaximum", |x, l| x >= l),
    ];
    for (keyword, violates) in checks {
        if let Some((limit, written)) = bound(keyword)
            && violates(x, limit)
        {
            out.push(error(Violation::Bound(keyword, written)));
        }
    }
    if let Some((step, _)) = bound("multipleOf")
        && step > 0.0
    {
        let q = x / step;
        if (q - q.round()).abs() > 1e-9 * q.abs().max(1.0) {
            out.push(error(Violation::MultipleOf(step)));
        }
    }
}

fn check_string(
    schema: &serde_json::Map<String, Value>,
    s: &str,
    error: &dyn Fn(Violation) -> SchemaError,
    out: &mut Vec<SchemaError>,
) {
    let chars = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        out.push(error(Violation::Length("minLength", min)));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        out.push(error(Violation::Length("maxLength", max)));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => out.push(error(Violation::Pattern(pattern.to_string()))),
            Ok(_) => {}
            Err(e) => out.push(error(Violation::BadSchema(format!(
                "pattern `{pattern}`: {e}"
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn num(x: Value) -> serde_json::Number {
        match x {
            Value::Number(n) => n,
            other => panic!("{other} is not a number"),
        }
    }

    fn violations(schema: Value, instance: Value) -> Vec<(String, Violation)> {
        validate(&schema, &instance)
            .into_iter()
            .map(|e| (e.pointer, e.violation))
            .collect()
    }

    #[test]
    fn objects_report_unknown_missing_and_nested_errors() {
        let schema = json!({
            "type": "object",
            "properties": {
                "lr": {"type": "number", "exclusiveMinimum": 0.0},
                "steps": {"type": "integer", "minimum": 1},
                "name": {"type": "string", "minLength": 1, "pattern": "^[a-z]+$"}
            },
            "required": ["steps"],
            "additionalProperties": false
        });
        assert_eq!(
            violations(schema.clone(), json!({"lr": 0.0, "stepz": 3, "name": "A"})),
            vec![
                (String::new(), Violation::Required("steps".into())),
                (
                    "/lr".into(),
                    Violation::Bound("exclusiveMinimum", num(json!(0.0)))
                ),
                ("/name".into(), Violation::Pattern("^[a-z]+$".into())),
                (
                    String::new(),
                    Violation::AdditionalProperties(vec!["stepz".into()])
                ),
            ]
        );
        assert_eq!(
            violations(schema.clone(), json!({"steps": 2.5})),
            vec![("/steps".into(), Violation::Type(vec!["integer".into()]))]
        );
        assert!(violations(schema, json!({"steps": 3.0, "lr": 1e-5, "name": "ok"})).is_empty());
    }

    #[test]
    fn refs_items_and_enums() {
        let schema = json!({
            "$defs": {"Sink": {"type": "string", "enum": ["console", "jsonl"]}},
            "type": "array",
            "items": {"$ref": "#/$defs/Sink"},
            "uniqueItems": true,
            "maxItems": 2
        });
        assert_eq!(
            violations(schema.clone(), json!(["jsonl", "jsnl"])),
            vec![(
                "/1".into(),
                Violation::Enum(vec![json!("console"), json!("jsonl")])
            )]
        );
        assert_eq!(
            violations(schema.clone(), json!(["jsonl", "jsonl", "console"])),
            vec![
                (String::new(), Violation::Length("maxItems", 2)),
                (String::new(), Violation::UniqueItems)
            ]
        );
        let dangling = json!({"$ref": "#/$defs/Missing"});
        assert!(matches!(
            violations(dangling, json!(1))[0].1,
            Violation::BadSchema(_)
        ));
    }

    /// `Option<T>` is `anyOf: [T, null]`: a wrong `T` reports `T`'s own errors.
    #[test]
    fn a_failed_branch_reports_the_intended_branch() {
        let schema = json!({
            "$defs": {"Eval": {
                "type": "object",
                "properties": {"interval": {"type": "integer", "minimum": 1}},
                "additionalProperties": false
            }},
            "anyOf": [{"$ref": "#/$defs/Eval"}, {"type": "null"}]
        });
        assert!(violations(schema.clone(), Value::Null).is_empty());
        assert_eq!(
            violations(schema.clone(), json!({"interval": 0})),
            vec![(
                "/interval".into(),
                Violation::Bound("minimum", num(json!(1)))
            )]
        );
        let choices = json!({"oneOf": [{"const": "a"}, {"const": "b"}]});
        assert_eq!(
            violations(choices.clone(), json!("c")),
            vec![(String::new(), Violation::NoBranch)]
        );
        assert!(violations(choices, json!("b")).is_empty());
        let overlapping = json!({"oneOf": [{"type": "integer"}, {"type": "number"}]});
        assert_eq!(
            violations(overlapping, json!(3)),
            vec![(String::new(), Violation::ManyBranches)]
        );
    }

    /// The loss and reward parameter blocks: `if name == X then X's parameters`.
    #[test]
    fn conditional_branches_apply_by_name() {
        let schema = json!({
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "allOf": [{
                "if": {"properties": {"name": {"const": "grpo"}}},
                "then": {"properties": {"name": true, "beta": {"type": "number", "maximum": 1.0}},
                         "additionalProperties": false}
            }]
        });
        assert_eq!(
            violations(
                schema.clone(),
                json!({"name": "grpo", "beta": 2, "betta": 1})
            ),
            vec![
                ("/beta".into(), Violation::Bound("maximum", num(json!(1.0)))),
                (
                    String::new(),
                    Violation::AdditionalProperties(vec!["betta".into()])
                )
            ]
        );
        assert!(violations(schema, json!({"name": "dapo", "betta": 1})).is_empty());
        let not = json!({"not": {"type": "null"}});
        assert_eq!(
            violations(not, Value::Null),
            vec![(String::new(), Violation::Not)]
        );
    }

    /// Every keyword the generated experiment schema uses is one this module checks or one that
    /// only annotates: a new keyword from schemars fails here instead of being ignored.
    #[test]
    fn the_experiment_schema_uses_only_known_keywords() {
        const CHECKED: &[&str] = &[
            "$ref",
            "type",
            "enum",
            "const",
            "properties",
            "additionalProperties",
            "patternProperties",
            "required",
            "items",
            "prefixItems",
            "minItems",
            "maxItems",
            "uniqueItems",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
            "minLength",
            "maxLength",
            "pattern",
            "allOf",
            "anyOf",
            "oneOf",
            "not",
            "if",
            "then",
            "else",
        ];
        const ANNOTATIONS: &[&str] = &[
            "$schema",
            "$defs",
            "title",
            "description",
            "default",
            "format",
            "examples",
            "deprecated",
            "readOnly",
            "writeOnly",
        ];
        fn walk(schema: &Value, unknown: &mut Vec<String>) {
            let Value::Object(map) = schema else { return };
            for (key, value) in map {
                if !CHECKED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                    unknown.push(key.clone());
                }
                match key.as_str() {
                    "properties" | "patternProperties" | "$defs" => {
                        for sub in value.as_object().into_iter().flat_map(|m| m.values()) {
                            walk(sub, unknown);
                        }
                    }
                    "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                        for sub in value.as_array().into_iter().flatten() {
                            walk(sub, unknown);
                        }
                    }
                    "items" | "additionalProperties" | "not" | "if" | "then" | "else" => {
                        walk(value, unknown)
                    }
                    _ => {}
                }
            }
        }
        let mut unknown = Vec::new();
        walk(&super::super::json_schema(), &mut unknown);
        assert!(unknown.is_empty(), "unchecked keywords: {unknown:?}");
    }
}
