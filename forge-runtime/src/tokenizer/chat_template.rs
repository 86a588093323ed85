//! Jinja chat templates rendered the way Hugging Face `transformers` renders them.
//!
//! `transformers` compiles a model's `chat_template` in a Jinja2 `ImmutableSandboxedEnvironment` with
//! `trim_blocks=True`, `lstrip_blocks=True` and the `loopcontrols` extension, adds a `tojson` filter
//! (`json.dumps` without HTML escaping), and the globals `raise_exception(message)` and
//! `strftime_now(format)`. [`ChatTemplate`] rebuilds that environment on [minijinja], with Python's
//! string, list and dict methods (`.strip()`, `.split()`, `.items()`, ...) from `minijinja-contrib`.
//! Where minijinja and Jinja2 differ in ways templates notice, Jinja2 wins: `None`, `True`, `False`,
//! floats, lists and dicts print (and convert with `|string`) as Python's `str()` does; strings and
//! dicts pass the `sequence` test and strings the `iterable` test (Llama 3.1's template relies on
//! it); `{% generation %}` blocks (a `transformers` extension) render their contents.
//!
//! Known gaps: templates cannot mutate values (`list.append`, `dict.update`), tuples print as lists
//! (`[('a', 1)]` shows as `[['a', 1]]`), and `strftime_now` formats the current time in UTC rather
//! than local time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, Value};
use serde::Serialize;
use serde_json::Value as JsonValue;

use super::{SpecialTokens, TokenizerError};

/// The name `transformers` gives a model's only chat template, and the one it picks by default among
/// several named templates.
pub const DEFAULT_TEMPLATE_NAME: &str = "default";

/// The named template `transformers` prefers when `tools` are passed.
pub const TOOL_USE_TEMPLATE_NAME: &str = "tool_use";

/// Names the renderer itself binds; passing them as extra arguments is an error, as it is in
/// `transformers` (a duplicate keyword argument).
const RESERVED_ARGUMENTS: [&str; 2] = ["messages", "add_generation_prompt"];

/// One or more compiled chat templates (a model may ship a list of named ones).
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    names: Vec<String>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles a single template, named [`DEFAULT_TEMPLATE_NAME`].
    pub fn new(source: &str) -> Result<Self, TokenizerError> {
        Self::from_named([(DEFAULT_TEMPLATE_NAME.to_owned(), source.to_owned())])
    }

    /// Compiles named templates, as found in a `tokenizer_config.json` whose `chat_template` is a list
    /// of `{"name": ..., "template": ...}` objects. A later template with the same name replaces an
    /// earlier one.
    pub fn from_named(
        templates: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, TokenizerError> {
        let mut env = hf_environment();
        let mut names: Vec<String> = Vec::new();
        for (name, source) in templates {
            let source = rewrite_generation_tags(&source).into_owned();
            env.add_template_owned(name.clone(), source)
                .map_err(|source| TokenizerError::TemplateSyntax {
                    name: name.clone(),
                    source,
                })?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(Self { env, names })
    }

    /// The names of the compiled templates, in the order first given.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether a template named [`DEFAULT_TEMPLATE_NAME`] exists, so that [`ChatTemplate::render`]
    /// has something to render.
    pub fn has_default(&self) -> bool {
        self.has(DEFAULT_TEMPLATE_NAME)
    }

    fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Renders like `transformers`' `apply_chat_template(messages, tokenize=False, ...)`.
    ///
    /// The template sees `messages`, `add_generation_prompt`, `tools` and `documents` (both `None`
    /// unless given in `extra`), the special tokens that are set (`bos_token`, `eos_token`,
    /// `pad_token`, `unk_token`) and every entry of `extra`, which overrides a special token of the
    /// same name. As in `transformers`, the `tool_use` template is picked when `extra` holds non-null
    /// `tools` and such a template exists, and the `default` one otherwise.
    pub fn render<M: Serialize + ?Sized>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
        special_tokens: &SpecialTokens,
        extra: &serde_json::Map<String, JsonValue>,
    ) -> Result<String, TokenizerError> {
        if let Some(name) = RESERVED_ARGUMENTS
            .iter()
            .find(|name| extra.contains_key(**name))
        {
            return Err(TokenizerError::ReservedTemplateArgument((*name).to_owned()));
        }
        let has_tools = extra.get("tools").is_some_and(|tools| !tools.is_null());
        let name = if has_tools && self.has(TOOL_USE_TEMPLATE_NAME) {
            TOOL_USE_TEMPLATE_NAME
        } else if self.has_default() {
            DEFAULT_TEMPLATE_NAME
        } else {
            return Err(TokenizerError::NoDefaultChatTemplate {
                names: self.names.clone(),
            });
        };

        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        for (key, token) in special_tokens.named() {
            if let Some(token) = token {
                ctx.insert(key.to_owned(), Value::from(token));
            }
        }
        ctx.insert("tools".to_owned(), Value::from(()));
        ctx.insert("documents".to_owned(), Value::from(()));
        for (key, value) in extra {
            ctx.insert(key.clone(), Value::from_serialize(value));
        }
        ctx.insert("messages".to_owned(), Value::from_serialize(messages));
        ctx.insert(
            "add_generation_prompt".to_owned(),
            Value::from(add_generation_prompt),
        );

        let template = self
            .env
            .get_template(name)
            .map_err(TokenizerError::TemplateRender)?;
        template
            .render(&ctx)
            .map_err(|err| match raised_message(&err) {
                Some(message) => TokenizerError::TemplateException(message),
                None => TokenizerError::TemplateRender(err),
            })
    }
}

/// The environment `transformers` renders chat templates in.
fn hf_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(python_formatter);
    env.add_filter("tojson", tojson);
    env.add_filter("string", string_filter);
    env.add_test("sequence", is_sequence);
    env.add_test("iterable", is_iterable);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

/// Jinja2's `sequence` test: anything with a length and indexing, strings and dicts included.
fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::String | ValueKind::Bytes | ValueKind::Seq | ValueKind::Map
    )
}

/// Jinja2's `iterable` test: anything `iter()` accepts, strings included.
fn is_iterable(value: &Value) -> bool {
    matches!(value.kind(), ValueKind::String | ValueKind::Bytes) || value.try_iter().is_ok()
}

/// Rewrites `transformers`' `{% generation %}` ... `{% endgeneration %}` tags (which only mark the
/// assistant's tokens for `return_assistant_tokens_mask`) into `{% if true %}` ... `{% endif %}`,
/// which renders the same text and keeps any `-` whitespace control.
fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let after_open = start + 2;
        out.push_str(&rest[..after_open]);
        rest = &rest[after_open..];
        let body = rest.strip_prefix(['-', '+']).unwrap_or(rest);
        let trimmed = body.trim_start();
        let ident_len = trimmed
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(trimmed.len());
        let replacement = match &trimmed[..ident_len] {
            "generation" => "if true",
            "endgeneration" => "endif",
            _ => continue,
        };
        let tail = trimmed[ident_len..].trim_start();
        let tail = tail.strip_prefix(['-', '+']).unwrap_or(tail);
        if !tail.starts_with("%}") {
            continue;
        }
        let ident_start = rest.len() - trimmed.len();
        out.push_str(&rest[..ident_start]);
        out.push_str(replacement);
        rest = &rest[ident_start + ident_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Error source that marks an error raised by the template's `raise_exception`.
#[derive(Debug)]
struct RaisedException(String);

impl fmt::Display for RaisedException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// `raise_exception(message)`: aborts rendering with `message` (Jinja2's `TemplateError`).
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

/// The message of a `raise_exception` call somewhere in `err`'s chain of sources.
fn raised_message(err: &Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return Some(raised.0.clone());
        }
        current = e.source();
    }
    None
}

/// `strftime_now(format)`: the current UTC time formatted like Python's `strftime`.
fn strftime_now(format: &str) -> Result<String, Error> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?
        .as_secs();
    let secs = i64::try_from(secs)
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "system time out of range"))?;
    Ok(strftime_utc(format, secs))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Formats `secs` seconds after the Unix epoch (UTC) with a subset of C's `strftime` directives:
/// `%Y %y %m %d %e %j %b %h %B %a %A %w %H %I %M %S %p %F %T %D %%`, and glibc's `%-d`, `%-m`, `%-H`,
/// `%-I`, `%-M`, `%-S`, `%-j` (no padding). Other directives are kept as written.
pub(crate) fn strftime_utc(format: &str, secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let day_secs = secs.rem_euclid(86_400);
    let (hour, minute, second) = (day_secs / 3600, day_secs % 3600 / 60, day_secs % 60);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday.
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let month_name = MONTHS[(month - 1) as usize];
    let weekday_name = WEEKDAYS[weekday as usize];

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(mut directive) = chars.next() else {
            out.push('%');
            break;
        };
        let pad = if directive == '-' {
            match chars.next() {
                Some(next) => {
                    directive = next;
                    false
                }
                None => {
                    out.push_str("%-");
                    break;
                }
            }
        } else {
            true
        };
        let num = |out: &mut String, value: i64, width: usize| {
            // Writing into a String cannot fail.
            let _ = if pad {
                write!(out, "{value:0width$}")
            } else {
                write!(out, "{value}")
            };
        };
        match directive {
            'Y' => num(&mut out, year, 4),
            'y' => num(&mut out, year.rem_euclid(100), 2),
            'm' => num(&mut out, month, 2),
            'd' => num(&mut out, day, 2),
            'e' => {
                let _ = write!(out, "{day:>2}");
            }
            'j' => num(&mut out, yday, 3),
            'H' => num(&mut out, hour, 2),
            'I' => num(&mut out, hour12, 2),
            'M' => num(&mut out, minute, 2),
            'S' => num(&mut out, second, 2),
            'w' => num(&mut out, weekday, 1),
            'b' | 'h' => out.push_str(&month_name[..3]),
            'B' => out.push_str(month_name),
            'a' => out.push_str(&weekday_name[..3]),
            'A' => out.push_str(weekday_name),
            'p' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            'F' => {
                let _ = write!(out, "{year:04}-{month:02}-{day:02}");
            }
            'T' => {
                let _ = write!(out, "{hour:02}:{minute:02}:{second:02}");
            }
            'D' => {
                let _ = write!(out, "{month:02}/{day:02}/{:02}", year.rem_euclid(100));
            }
            '%' => out.push('%'),
            other => {
                out.push('%');
                if !pad {
                    out.push('-');
                }
                out.push(other);
            }
        }
    }
    out
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Prints values the way Python's `str()` does where it differs from minijinja: `None`, `True`,
/// `False`, floats (`1e+20`), and lists and dicts in `repr` form (`['a', 1]`, `{'k': None}`).
fn python_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Seq | ValueKind::Map => {
            out.write_str(&python_str(value)?)?;
            Ok(())
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// The `string` filter, as Python's `str()`.
fn string_filter(value: &Value) -> Result<Value, Error> {
    match value.kind() {
        ValueKind::String => Ok(value.clone()),
        ValueKind::Undefined => Ok(Value::from("")),
        _ => Ok(Value::from(python_str(value)?)),
    }
}

/// Python's `str()` of a value: strings as they are, everything else as `repr`.
fn python_str(value: &Value) -> Result<String, Error> {
    if let Some(s) = value.as_str() {
        return Ok(s.to_owned());
    }
    let mut text = String::new();
    python_repr(&mut text, value)?;
    Ok(text)
}

/// Appends Python's `repr` of `value` (strings quoted) to `out`.
fn python_repr(out: &mut String, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::String => python_str_repr(out, value.as_str().unwrap_or_default()),
        ValueKind::Number => match f64::try_from(value.clone()) {
            Ok(f) if !value.is_integer() => out.push_str(&python_float_repr(f)),
            _ => write!(out, "{value}")?,
        },
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(out, &item)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(out, &key)?;
                out.push_str(": ");
                python_repr(out, &value.get_item(&key)?)?;
            }
            out.push('}');
        }
        _ => write!(out, "{value}")?,
    }
    Ok(())
}

/// Python's `repr` of a string: single quotes unless the text holds `'` and no `"`.
fn python_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `repr` of a float: the shortest round-trip digits, positional for exponents in
/// `-4..16` (`1.0`, `0.0001`), scientific otherwise (`1e+16`, `1.5e-05`).
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, like Python's repr.
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        if point <= 0 {
            let zeros = "0".repeat(point.unsigned_abs() as usize);
            format!("{sign}0.{zeros}{digits}")
        } else {
            let point = point as usize;
            if digits.len() <= point {
                let zeros = "0".repeat(point - digits.len());
                format!("{sign}{digits}{zeros}.0")
            } else {
                format!("{sign}{}.{}", &digits[..point], &digits[point..])
            }
        }
    } else {
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.unsigned_abs())
    }
}

/// Options of `transformers`' `tojson` filter, the arguments of `json.dumps`.
struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

/// `value | tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)`: like
/// `transformers`' filter, `json.dumps` with those arguments (no HTML escaping, key order kept).
fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > NAMES.len() {
        return Err(Error::from(ErrorKind::TooManyArguments));
    }
    let mut given: [Option<Value>; 4] = Default::default();
    for (slot, arg) in given.iter_mut().zip(args.iter()) {
        *slot = Some(arg.clone());
    }
    for (slot, name) in given.iter_mut().zip(NAMES) {
        if let Some(arg) = kwargs.get::<Option<Value>>(name)? {
            if slot.is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson got multiple values for argument `{name}`"),
                ));
            }
            *slot = Some(arg);
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = given;
    let is_set = |v: &Option<Value>| {
        v.as_ref()
            .is_some_and(|v| !v.is_none() && !v.is_undefined())
    };

    let indent = if is_set(&indent) {
        let indent = indent.unwrap_or_default();
        Some(match indent.as_str() {
            Some(s) => s.to_owned(),
            None => {
                let n = i64::try_from(indent.clone()).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        format!("tojson indent must be an integer or a string, not {indent}"),
                    )
                })?;
                " ".repeat(usize::try_from(n).unwrap_or(0))
            }
        })
    } else {
        None
    };
    let (item_separator, key_separator) = if is_set(&separators) {
        let separators = separators.unwrap_or_default();
        let parts: Vec<String> = separators
            .try_iter()?
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .unwrap_or_default();
        match <[String; 2]>::try_from(parts) {
            Ok([item, key]) => (item, key),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson separators must be two strings (item_separator, key_separator)",
                ));
            }
        }
    } else if indent.is_some() {
        (",".to_owned(), ": ".to_owned())
    } else {
        (", ".to_owned(), ": ".to_owned())
    };
    let options = JsonOptions {
        ensure_ascii: ensure_ascii.is_some_and(|v| v.is_true()),
        indent,
        item_separator,
        key_separator,
        sort_keys: sort_keys.is_some_and(|v| v.is_true()),
    };

    let json = serde_json::to_value(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson cannot serialize value: {e}"),
        )
    })?;
    let mut out = String::new();
    write_json(&mut out, &json, &options, 0);
    Ok(out)
}

/// Appends `value` as Python's `json.dumps` would write it with `options`.
fn write_json(out: &mut String, value: &JsonValue, options: &JsonOptions, depth: usize) {
    match value {
        JsonValue::Null => out.push_str("null"),
        JsonValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        JsonValue::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => out.push_str(&python_float_repr(f)),
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        JsonValue::String(s) => write_json_str(out, s, options.ensure_ascii),
        JsonValue::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&options.item_separator);
                }
                newline_indent(out, options, depth + 1);
                write_json(out, item, options, depth + 1);
            }
            newline_indent(out, options, depth);
            out.push(']');
        }
        JsonValue::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            let mut entries: Vec<(&String, &JsonValue)> = map.iter().collect();
            if options.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&options.item_separator);
                }
                newline_indent(out, options, depth + 1);
                write_json_str(out, key, options.ensure_ascii);
                out.push_str(&options.key_separator);
                write_json(out, item, options, depth + 1);
            }
            newline_indent(out, options, depth);
            out.push('}');
        }
    }
}

fn newline_indent(out: &mut String, options: &JsonOptions, depth: usize) {
    if let Some(indent) = &options.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    }
}

/// Appends a JSON string literal escaped like Python's `json` module.
fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && c as u32 >= 0x7f) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tokenizer::ChatMessage;
    use serde_json::json;

    /// `chat_template` of Qwen/Qwen2.5-*-Instruct's `tokenizer_config.json`, verbatim.
    pub(crate) const QWEN25_TEMPLATE: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

    /// `chat_template` of meta-llama/Llama-3.1-*-Instruct's `tokenizer_config.json`, verbatim.
    pub(crate) const LLAMA31_TEMPLATE: &str = r#"{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }

    fn no_extra() -> serde_json::Map<String, JsonValue> {
        serde_json::Map::new()
    }

    fn extra(value: JsonValue) -> serde_json::Map<String, JsonValue> {
        match value {
            JsonValue::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn qwen_tokens() -> SpecialTokens {
        SpecialTokens {
            eos_token: Some("<|im_end|>".to_owned()),
            pad_token: Some("<|endoftext|>".to_owned()),
            ..SpecialTokens::default()
        }
    }

    fn llama_tokens() -> SpecialTokens {
        SpecialTokens {
            bos_token: Some("<|begin_of_text|>".to_owned()),
            eos_token: Some("<|eot_id|>".to_owned()),
            ..SpecialTokens::default()
        }
    }

    fn render_str(source: &str, ctx: JsonValue) -> Result<String, TokenizerError> {
        let template = ChatTemplate::new(source)?;
        let messages: Vec<ChatMessage> = Vec::new();
        template.render(&messages, false, &SpecialTokens::default(), &extra(ctx))
    }

    #[test]
    fn qwen25_single_user_message_with_generation_prompt() {
        let template = ChatTemplate::new(QWEN25_TEMPLATE).unwrap();
        let out = template
            .render(&[msg("user", "Hi")], true, &qwen_tokens(), &no_extra())
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn qwen25_system_and_multi_turn_without_generation_prompt() {
        let template = ChatTemplate::new(QWEN25_TEMPLATE).unwrap();
        let messages = [
            msg("system", "Be terse."),
            msg("user", "2+2?"),
            msg("assistant", "4"),
            msg("user", "And 3+3?"),
        ];
        let out = template
            .render(&messages, false, &qwen_tokens(), &no_extra())
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        );
    }

    #[test]
    fn qwen25_tools_tool_calls_and_tool_responses() {
        let template = ChatTemplate::new(QWEN25_TEMPLATE).unwrap();
        let messages = json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "°C"}}}
            ]},
            {"role": "tool", "content": "22"},
            {"role": "tool", "content": "sunny"},
        ]);
        let tools = json!({"tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the weather <now>",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}]});
        let out = template
            .render(&messages, true, &qwen_tokens(), &extra(tools))
            .unwrap();
        let expected = concat!(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n",
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n",
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n",
            r#"{"type": "function", "function": {"name": "get_weather", "description": "Get the weather <now>", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}"#,
            "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n",
            "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n",
            "<|im_start|>user\nWeather in Paris?<|im_end|>\n",
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"°C\"}}\n</tool_call><|im_end|>\n",
            "<|im_start|>user\n<tool_response>\n22\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n",
            "<|im_start|>assistant\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn llama31_single_user_message_with_generation_prompt() {
        let template = ChatTemplate::new(LLAMA31_TEMPLATE).unwrap();
        let out = template
            .render(&[msg("user", "Hi")], true, &llama_tokens(), &no_extra())
            .unwrap();
        assert_eq!(
            out,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn llama31_system_message_is_trimmed_and_date_string_is_a_kwarg() {
        let template = ChatTemplate::new(LLAMA31_TEMPLATE).unwrap();
        let messages = [
            msg("system", "  You are terse.\n"),
            msg("user", " Hi "),
            msg("assistant", "Hello."),
        ];
        let out = template
            .render(
                &messages,
                false,
                &llama_tokens(),
                &extra(json!({"date_string": "01 Jan 2025"})),
            )
            .unwrap();
        assert_eq!(
            out,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        );
    }

    #[test]
    fn llama31_tools_in_first_user_message_use_indented_json() {
        let template = ChatTemplate::new(LLAMA31_TEMPLATE).unwrap();
        let tools = json!({"tools": [{"name": "add", "parameters": {"a": "int", "b": []}}]});
        let out = template
            .render(&[msg("user", "1+2")], true, &llama_tokens(), &extra(tools))
            .unwrap();
        let expected = concat!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n",
            "Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>",
            "<|start_header_id|>user<|end_header_id|>\n\n",
            "Given the following functions, please respond with a JSON for a function call ",
            "with its proper arguments that best answers the given prompt.\n\n",
            "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.",
            "Do not use variables.\n\n",
            "{\n    \"name\": \"add\",\n    \"parameters\": {\n        \"a\": \"int\",\n        \"b\": []\n    }\n}\n\n",
            "1+2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn llama31_string_tool_output_is_json_quoted_like_jinja2() {
        // Jinja2 counts strings as iterable, so the real template JSON-quotes string tool output.
        let template = ChatTemplate::new(LLAMA31_TEMPLATE).unwrap();
        let messages = json!([
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1.5}}}]},
            {"role": "tool", "content": "ok \"done\""},
        ]);
        let out = template
            .render(&messages, false, &llama_tokens(), &no_extra())
            .unwrap();
        assert_eq!(
            out,
            concat!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n",
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>",
                "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
                "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"f\", \"parameters\": {\"x\": 1.5}}<|eot_id|>",
                "<|start_header_id|>ipython<|end_header_id|>\n\n\"ok \\\"done\\\"\"<|eot_id|>",
            )
        );
    }

    #[test]
    fn llama31_builtin_tools_reject_and_join() {
        let template = ChatTemplate::new(LLAMA31_TEMPLATE).unwrap();
        let out = template
            .render(
                &[msg("user", "Hi")],
                false,
                &llama_tokens(),
                &extra(
                    json!({"builtin_tools": ["code_interpreter", "brave_search", "wolfram_alpha"]}),
                ),
            )
            .unwrap();
        assert_eq!(
            out,
            concat!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n",
                "Environment: ipython\nTools: brave_search, wolfram_alpha\n\n",
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>",
                "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
            )
        );
    }

    #[test]
    fn raise_exception_carries_the_message() {
        let template = ChatTemplate::new(LLAMA31_TEMPLATE).unwrap();
        let messages = json!([
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "a"}}, {"function": {"name": "b"}}]},
        ]);
        let err = template
            .render(&messages, false, &llama_tokens(), &no_extra())
            .unwrap_err();
        assert!(
            matches!(&err, TokenizerError::TemplateException(m) if m == "This model only supports single tool-calls at once!"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("This model only supports single tool-calls at once!")
        );

        let err =
            render_str("{{ raise_exception('roles must alternate') }}", json!({})).unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let err = ChatTemplate::new("{% if messages %}unclosed").unwrap_err();
        assert!(
            matches!(err, TokenizerError::TemplateSyntax { ref name, .. } if name == "default"),
            "{err:?}"
        );
    }

    #[test]
    fn other_render_errors_are_render_errors() {
        let err = render_str("{{ messages[0].role.nope() }}", json!({})).unwrap_err();
        assert!(matches!(err, TokenizerError::TemplateRender(_)), "{err:?}");
    }

    #[test]
    fn reserved_arguments_are_rejected() {
        let err = render_str("x", json!({"messages": []})).unwrap_err();
        assert!(
            matches!(err, TokenizerError::ReservedTemplateArgument(ref n) if n == "messages"),
            "{err:?}"
        );
    }

    #[test]
    fn environment_variables_and_defaults() {
        let template = ChatTemplate::new(
            "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ unk_token is defined }}|{{ tools is none }}|{{ documents is none }}|{{ add_generation_prompt }}|{{ custom }}|{{ messages | length }}",
        )
        .unwrap();
        let special = SpecialTokens {
            bos_token: Some("<s>".to_owned()),
            eos_token: Some("</s>".to_owned()),
            pad_token: Some("<pad>".to_owned()),
            unk_token: None,
        };
        let out = template
            .render(
                &[msg("user", "a")],
                true,
                &special,
                &extra(json!({"custom": 7, "eos_token": "<eot>"})),
            )
            .unwrap();
        assert_eq!(out, "<s>|<eot>|<pad>|False|True|True|True|7|1");
    }

    #[test]
    fn trim_blocks_lstrip_blocks_and_no_trailing_newline() {
        let out = render_str(
            "{% for x in items %}\n    {% if x %}\n{{ x }}\n    {% endif %}\n{% endfor %}\n",
            json!({"items": [1, 0, 2]}),
        )
        .unwrap();
        assert_eq!(out, "1\n2\n");
        assert_eq!(render_str("{{ 'a' }}\n", json!({})).unwrap(), "a");
    }

    #[test]
    fn loop_controls() {
        let out = render_str(
            "{% for x in items %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
            json!({"items": [1, 2, 3, 4, 5]}),
        )
        .unwrap();
        assert_eq!(out, "13");
    }

    #[test]
    fn python_methods_via_pycompat() {
        let out = render_str(
            "{{ s.strip() }}|{{ s.startswith(' a') }}|{{ s.split(',') | join('+') }}|{{ s.lstrip().upper() }}|{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{{ d.get('z', 'none') }}",
            json!({"s": " a,b ", "d": {"y": 1, "x": 2}}),
        )
        .unwrap();
        assert_eq!(out, "a,b|True| a+b |A,B |y=1;x=2;|none");
    }

    #[test]
    fn python_style_printing() {
        let out = render_str(
            "{{ none }} {{ t }} {{ f }} {{ l }} {{ d }}",
            json!({"t": true, "f": false, "l": ["a", 1, 2.5, null, "it's"], "d": {"k": [true]}}),
        )
        .unwrap();
        assert_eq!(
            out,
            r#"None True False ['a', 1, 2.5, None, "it's"] {'k': [True]}"#
        );
        let out = render_str(
            "{{ x | string }}|{{ 1e20 }}|{{ 0.1 + 0.2 }}|{{ 4 / 2 }}|{{ 'a' ~ none }}",
            json!({"x": [1, "two", null]}),
        )
        .unwrap();
        assert_eq!(out, "[1, 'two', None]|1e+20|0.30000000000000004|2.0|aNone");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let ctx = json!({"v": {"b": "<a&b> é \n \u{1}", "a": [1, 2.0, 1e16, 0.0001, 1.5e-7, null, true], "e": {}, "f": []}});
        let out = render_str("{{ v | tojson }}", ctx.clone()).unwrap();
        assert_eq!(
            out,
            r#"{"b": "<a&b> é \n \u0001", "a": [1, 2.0, 1e+16, 0.0001, 1.5e-07, null, true], "e": {}, "f": []}"#
        );
        let out = render_str("{{ v.a[:2] | tojson(indent=2) }}", ctx.clone()).unwrap();
        assert_eq!(out, "[\n  1,\n  2.0\n]");
        let out = render_str(
            "{{ v | tojson(sort_keys=true, separators=(',', ':')) }}",
            json!({"v": {"b": 1, "a": [1, 2]}}),
        )
        .unwrap();
        assert_eq!(out, r#"{"a":[1,2],"b":1}"#);
        let out = render_str("{{ v | tojson(ensure_ascii=true) }}", json!({"v": "é😀"})).unwrap();
        assert_eq!(out, r#""\u00e9\ud83d\ude00""#);
        let out = render_str("{{ v | tojson(indent='\t') }}", json!({"v": {"a": 1}})).unwrap();
        assert_eq!(out, "{\n\t\"a\": 1\n}");
        assert!(render_str("{{ 1 | tojson(bogus=1) }}", json!({})).is_err());
    }

    #[test]
    fn python_float_repr_cases() {
        for (f, expected) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.25e17, "1.25e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-10, "-2.5e-10"),
            (1e100, "1e+100"),
        ] {
            assert_eq!(python_float_repr(f), expected, "{f}");
        }
    }

    #[test]
    fn strftime_formats() {
        // 2024-07-26T13:05:09Z, a Friday, day 208 of a leap year.
        let t = 1_721_999_109;
        assert_eq!(strftime_utc("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(strftime_utc("%Y-%m-%d", t), "2024-07-26");
        assert_eq!(
            strftime_utc("%A %a %B %j %H:%M:%S %I%p %y %e %-d/%-m %% %F %T %Q", t),
            "Friday Fri July 208 13:05:09 01PM 24 26 26/7 % 2024-07-26 13:05:09 %Q"
        );
        assert_eq!(strftime_utc("%Y-%m-%d %H:%M", 0), "1970-01-01 00:00");
        assert_eq!(strftime_utc("%d %b %Y", 951_782_400), "29 Feb 2000");
        assert_eq!(strftime_utc("%Y-%m-%d", -86_400), "1969-12-31");
        // strftime_now renders today's date in the same shape.
        let out = render_str("{{ strftime_now('%Y-%m-%d') }}", json!({})).unwrap();
        assert_eq!(out.len(), 10, "{out}");
        assert!(out.starts_with("20"), "{out}");
    }

    #[test]
    fn generation_tags_are_accepted() {
        let source = "{% for m in messages %}{%- generation -%} {{ m.content }} {%- endgeneration %}{% endfor %}";
        assert_eq!(
            rewrite_generation_tags(source),
            "{% for m in messages %}{%- if true -%} {{ m.content }} {%- endif %}{% endfor %}"
        );
        let template = ChatTemplate::new(source).unwrap();
        let out = template
            .render(
                &[msg("assistant", "x"), msg("assistant", "y")],
                false,
                &SpecialTokens::default(),
                &no_extra(),
            )
            .unwrap();
        assert_eq!(out, "xy");
        // Other uses of the word are left alone.
        let src = "{{ 'generation' }}{% set generation = 1 %}";
        assert_eq!(rewrite_generation_tags(src), src);
    }

    #[test]
    fn named_templates_pick_default_or_tool_use() {
        let template = ChatTemplate::from_named([
            (
                "tool_use".to_owned(),
                "tools:{{ tools | length }}".to_owned(),
            ),
            ("default".to_owned(), "plain".to_owned()),
        ])
        .unwrap();
        assert_eq!(template.names(), ["tool_use", "default"]);
        let messages: [ChatMessage; 0] = [];
        let special = SpecialTokens::default();
        assert_eq!(
            template
                .render(&messages, false, &special, &no_extra())
                .unwrap(),
            "plain"
        );
        assert_eq!(
            template
                .render(&messages, false, &special, &extra(json!({"tools": [1, 2]})))
                .unwrap(),
            "tools:2"
        );
        let only_tools =
            ChatTemplate::from_named([("tool_use".to_owned(), "t".to_owned())]).unwrap();
        assert!(!only_tools.has_default());
        assert!(matches!(
            only_tools.render(&messages, false, &special, &no_extra()),
            Err(TokenizerError::NoDefaultChatTemplate { .. })
        ));
    }
}
