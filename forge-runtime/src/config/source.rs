//! YAML text -> JSON value, remembering where every value (and every mapping key) came from, so
//! any later error, found by the schema, by serde or by a semantic check, can point at
//! `file:line:col`.
//!
//! Built on saphyr-parser's event stream rather than a ready-made tree so that duplicate keys,
//! anchors and multi-document files are handled here, with positions.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr::ScalarOwned;
use saphyr_parser::{Event, Parser, ScanError};
use serde_json::{Map, Number, Value};

/// A region of the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Byte offset of the start.
    pub start: usize,
    /// Byte offset just past the end.
    pub end: usize,
    /// 1-based line of the start.
    pub line: usize,
    /// 1-based column (in characters) of the start.
    pub col: usize,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The experiment file, at this span.
    File(Span),
    /// A command-line override (its text, e.g. `--set training.lr=1e-5`).
    Override(String),
}

/// Origins of the values and keys of a document, by JSON pointer (`/training/lr`).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    values: HashMap<String, Origin>,
    keys: HashMap<String, Span>,
}

impl SourceMap {
    /// Where the value at `pointer` came from; falls back to the nearest ancestor that has a
    /// recorded origin (a default filled in below a written key points at that key).
    pub fn value(&self, pointer: &str) -> Option<&Origin> {
        let mut p = pointer;
        loop {
            if let Some(o) = self.values.get(p) {
                return Some(o);
            }
            if p.is_empty() {
                return None;
            }
            p = &p[..p.rfind('/').unwrap_or(0)];
        }
    }

    /// The span of the mapping key whose value sits at `pointer`, if written in the file.
    pub fn key(&self, pointer: &str) -> Option<Span> {
        self.keys.get(pointer).copied()
    }

    /// Records that everything at and below `pointer` comes from `origin` (an override).
    pub(crate) fn set_override(&mut self, pointer: &str, text: &str) {
        let below = format!("{pointer}/");
        self.values
            .retain(|p, _| p != pointer && !p.starts_with(&below));
        self.keys
            .retain(|p, _| p != pointer && !p.starts_with(&below));
        self.values
            .insert(pointer.to_string(), Origin::Override(text.to_string()));
    }
}

/// Escapes one JSON-pointer segment (RFC 6901).
pub(crate) fn escape_segment(segment: &str) -> Cow<'_, str> {
    if segment.contains(['~', '/']) {
        Cow::Owned(segment.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(segment)
    }
}

/// A problem in the YAML itself.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

/// Parses `text` as one YAML document into JSON, with its source map. An empty document is an
/// empty mapping's absence: `Value::Null`.
pub(crate) fn parse(text: &str) -> Result<(Value, SourceMap), Vec<SyntaxError>> {
    let mut builder = Builder {
        text,
        offsets: CharOffsets::new(text),
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    let mut root = Value::Null;
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(pair)) => pair,
            Some(Err(e)) => return Err(vec![builder.scan_error(&e)]),
        };
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    let span = builder.span(span);
                    return Err(vec![SyntaxError {
                        span,
                        message: "a second YAML document (`---`) in the experiment file".into(),
                        hint: Some("an experiment is one document: remove the `---` and what follows, or merge them".into()),
                    }]);
                }
            }
            other => {
                let result = builder.node(&mut parser, other, span, String::new());
                match result {
                    Ok(v) => root = v,
                    Err(e) => builder.errors.push(e),
                }
            }
        }
    }
    if builder.errors.is_empty() {
        Ok((root, builder.map))
    } else {
        Err(builder.errors)
    }
}

#[derive(Default)]
struct Builder<'t> {
    text: &'t str,
    offsets: CharOffsets,
    map: SourceMap,
    anchors: HashMap<usize, Value>,
    errors: Vec<SyntaxError>,
}

impl Builder<'_> {
    fn span(&self, span: saphyr_parser::Span) -> Span {
        let start = self.offsets.byte(span.start.index(), self.text);
        let end = self.offsets.byte(span.end.index(), self.text).max(start);
        Span {
            start,
            end,
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }

    fn scan_error(&self, e: &ScanError) -> SyntaxError {
        let m = e.marker();
        let start = self.offsets.byte(m.index(), self.text);
        let end = self.text[start..]
            .chars()
            .next()
            .map_or(start, |c| start + c.len_utf8());
        let hint = if e.info().contains("mapping values are not allowed") {
            Some("a `key: value` pair sits where YAML expected something else; check the indentation of this line and the one before".into())
        } else if e.info().contains("tab") {
            Some("YAML indents with spaces, never tabs".into())
        } else {
            None
        };
        SyntaxError {
            span: Span {
                start,
                end,
                line: m.line(),
                col: m.col() + 1,
            },
            message: format!("YAML syntax error: {}", e.info()),
            hint,
        }
    }

    fn next(
        &mut self,
        parser: &mut Parser<'_, saphyr_parser::StrInput<'_>>,
    ) -> Result<(Event<'static>, saphyr_parser::Span), SyntaxError> {
        match parser.next_event() {
            Some(Ok((event, span))) => Ok((into_static(event), span)),
            Some(Err(e)) => Err(self.scan_error(&e)),
            None => Err(SyntaxError {
                span: Span {
                    start: self.text.len(),
                    end: self.text.len(),
                    line: self.text.lines().count().max(1),
                    col: 1,
                },
                message: "YAML syntax error: unexpected end of file".into(),
                hint: None,
            }),
        }
    }

    /// Builds the node that starts with `event`, recording it at `pointer`.
    fn node(
        &mut self,
        parser: &mut Parser<'_, saphyr_parser::StrInput<'_>>,
        event: Event<'_>,
        raw_span: saphyr_parser::Span,
        pointer: String,
    ) -> Result<Value, SyntaxError> {
        let span = self.span(raw_span);
        let (value, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = match ScalarOwned::parse_from_cow_and_metadata(
                    text.clone(),
                    style,
                    tag.as_ref(),
                ) {
                    Some(s) => scalar_to_json(s).map_err(|message| SyntaxError {
                        span,
                        message,
                        hint: None,
                    })?,
                    None => {
                        return Err(SyntaxError {
                            span,
                            message: format!("`{text}` does not match its YAML tag"),
                            hint: None,
                        });
                    }
                };
                (value, anchor)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(v) => (v.clone(), 0),
                None => {
                    return Err(SyntaxError {
                        span,
                        message: "alias to an unknown anchor".into(),
                        hint: None,
                    });
                }
            },
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                let end;
                loop {
                    let (event, s) = self.next(parser)?;
                    if matches!(event, Event::SequenceEnd) {
                        end = self.span(s);
                        break;
                    }
                    let child = format!("{pointer}/{}", items.len());
                    match self.node(parser, event, s, child) {
                        Ok(v) => items.push(v),
                        Err(e) => {
                            self.errors.push(e);
                            items.push(Value::Null);
                        }
                    }
                }
                self.map.values.insert(
                    pointer.clone(),
                    Origin::File(Span {
                        end: end.end.max(span.end),
                        ..span
                    }),
                );
                return Ok(self.remember(anchor, Value::Array(items)));
            }
            Event::MappingStart(anchor, _) => {
                let mut object = Map::new();
                let end;
                loop {
                    let (event, key_raw) = self.next(parser)?;
                    if matches!(event, Event::MappingEnd) {
                        end = self.span(key_raw);
                        break;
                    }
                    let key_span = self.span(key_raw);
                    let key = match event {
                        Event::Scalar(text, ..) => text.into_owned(),
                        _ => {
                            // Skip the complex key and its value, reporting once.
                            self.errors.push(SyntaxError {
                                span: key_span,
                                message: "mapping keys must be plain names".into(),
                                hint: None,
                            });
                            self.skip(parser, event)?;
                            let (value_event, _) = self.next(parser)?;
                            self.skip(parser, value_event)?;
                            continue;
                        }
                    };
                    let child = format!("{pointer}/{}", escape_segment(&key));
                    if object.contains_key(&key) {
                        let first = self.map.keys.get(&child).map(|s| s.line);
                        self.errors.push(SyntaxError {
                            span: key_span,
                            message: format!("duplicate key `{key}`"),
                            hint: first.map(|l| format!("`{key}` is already set on line {l}; YAML keeps only one of them")),
                        });
                    }
                    let (value_event, value_raw) = self.next(parser)?;
                    self.map.keys.insert(child.clone(), key_span);
                    match self.node(parser, value_event, value_raw, child) {
                        Ok(v) => {
                            object.insert(key, v);
                        }
                        Err(e) => self.errors.push(e),
                    }
                }
                self.map.values.insert(
                    pointer.clone(),
                    Origin::File(Span {
                        end: end.end.max(span.end),
                        ..span
                    }),
                );
                return Ok(self.remember(anchor, Value::Object(object)));
            }
            other => {
                return Err(SyntaxError {
                    span,
                    message: format!("unexpected YAML event {other:?}"),
                    hint: None,
                });
            }
        };
        self.map.values.insert(pointer, Origin::File(span));
        Ok(self.remember(anchor, value))
    }

    fn remember(&mut self, anchor: usize, value: Value) -> Value {
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        value
    }

    /// Consumes the rest of a node whose first event was `event`.
    fn skip(
        &mut self,
        parser: &mut Parser<'_, saphyr_parser::StrInput<'_>>,
        event: Event<'_>,
    ) -> Result<(), SyntaxError> {
        let mut depth = usize::from(matches!(
            event,
            Event::SequenceStart(..) | Event::MappingStart(..)
        ));
        while depth > 0 {
            match self.next(parser)?.0 {
                Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
                Event::SequenceEnd | Event::MappingEnd => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }
}

fn into_static(event: Event<'_>) -> Event<'static> {
    match event {
        Event::Scalar(v, style, anchor, tag) => Event::Scalar(
            Cow::Owned(v.into_owned()),
            style,
            anchor,
            tag.map(|t| Cow::Owned(t.into_owned())),
        ),
        Event::SequenceStart(a, tag) => {
            Event::SequenceStart(a, tag.map(|t| Cow::Owned(t.into_owned())))
        }
        Event::MappingStart(a, tag) => {
            Event::MappingStart(a, tag.map(|t| Cow::Owned(t.into_owned())))
        }
        Event::Nothing => Event::Nothing,
        Event::StreamStart => Event::StreamStart,
        Event::StreamEnd => Event::StreamEnd,
        Event::DocumentStart(e) => Event::DocumentStart(e),
        Event::DocumentEnd => Event::DocumentEnd,
        Event::Alias(id) => Event::Alias(id),
        Event::SequenceEnd => Event::SequenceEnd,
        Event::MappingEnd => Event::MappingEnd,
    }
}

pub(crate) fn scalar_to_json(s: ScalarOwned) -> Result<Value, String> {
    Ok(match s {
        ScalarOwned::Null => Value::Null,
        ScalarOwned::Boolean(b) => Value::Bool(b),
        ScalarOwned::Integer(i) => Value::Number(i.into()),
        ScalarOwned::FloatingPoint(f) => {
            let f = f.into_inner();
            Value::Number(
                Number::from_f64(f).ok_or_else(|| format!("`{f}` is not a finite number"))?,
            )
        }
        ScalarOwned::String(s) => Value::String(s),
    })
}

/// Character index -> byte offset (saphyr's markers count characters).
#[derive(Default)]
struct CharOffsets {
    /// Byte offset of every character, when the text is not pure ASCII.
    bytes: Option<Vec<usize>>,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        if text.is_ascii() {
            Self { bytes: None }
        } else {
            Self {
                bytes: Some(text.char_indices().map(|(b, _)| b).collect()),
            }
        }
    }

    fn byte(&self, char_index: usize, text: &str) -> usize {
        match &self.bytes {
            None => char_index.min(text.len()),
            Some(b) => b.get(char_index).copied().unwrap_or(text.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_keys_keep_their_positions() {
        let text = "name: x\ntraining:\n  lr: 1.0e-5\n  steps: 3\nrewards:\n  - name: a\n";
        let (value, map) = parse(text).expect("valid YAML");
        assert_eq!(value["training"]["lr"], serde_json::json!(1e-5));
        let Some(Origin::File(span)) = map.value("/training/lr") else {
            panic!("no origin")
        };
        assert_eq!((span.line, span.col), (3, 7));
        assert_eq!(&text[span.start..span.end], "1.0e-5");
        let key = map.key("/training/steps").expect("key span");
        assert_eq!(
            (key.line, key.col, &text[key.start..key.end]),
            (4, 3, "steps")
        );
        assert_eq!(map.key("/rewards/0/name").map(|s| s.line), Some(6));
    }

    #[test]
    fn duplicate_keys_are_errors_naming_both_lines() {
        let errors = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].span.line, 3);
        assert!(
            errors[0]
                .hint
                .as_deref()
                .is_some_and(|h| h.contains("line 1")),
            "{errors:?}"
        );
    }

    #[test]
    fn anchors_expand_and_quoted_numbers_stay_strings() {
        let (value, _) = parse("base: &b {x: 1}\ncopy: *b\ns: '42'\nn: 42\n").expect("valid");
        assert_eq!(value["copy"], serde_json::json!({"x": 1}));
        assert_eq!(value["s"], serde_json::json!("42"));
        assert_eq!(value["n"], serde_json::json!(42));
    }

    #[test]
    fn positions_count_characters_in_non_ascii_text() {
        let text = "name: \"é😀\"\nsteps: 3\n";
        let (_, map) = parse(text).expect("valid");
        let Some(Origin::File(span)) = map.value("/steps") else {
            panic!()
        };
        assert_eq!(&text[span.start..span.end], "3");
    }

    #[test]
    fn syntax_errors_and_second_documents_are_located() {
        let errors = parse("a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert!(
            errors[0].message.starts_with("YAML syntax error"),
            "{errors:?}"
        );
        let errors = parse("a: 1\n---\nb: 2\n").expect_err("two docs");
        assert_eq!(errors[0].span.line, 2);
    }
}
