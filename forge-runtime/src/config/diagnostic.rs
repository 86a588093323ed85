//! Problems found in an experiment, each located in the file (or the override it came from), and
//! rendered rustc-style with the offending text underlined.

use std::fmt;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use super::{Origin, Span};

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The experiment cannot run.
    Error,
    /// The experiment runs, but probably not as meant.
    Warning,
}

/// One located problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, naming the key and the offending value.
    pub message: String,
    /// Where: a span of the file, an override, or nowhere (a problem with the whole file).
    pub origin: Option<Origin>,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `origin`.
    pub fn error(message: impl Into<String>, origin: Option<Origin>) -> Self {
        Self {
            severity: Severity::Error,
            message: message.into(),
            origin,
            hint: None,
        }
    }

    /// Adds a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    /// `file:line:col` (or the override), for one-line reports.
    pub fn location(&self, file: &str) -> String {
        match &self.origin {
            Some(Origin::File(span)) => format!("{file}:{}:{}", span.line, span.col),
            Some(Origin::Override(text)) => format!("override `{text}`"),
            None => file.to_string(),
        }
    }
}

/// Every problem of one experiment file, with the text they point into.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// File name as shown in messages.
    pub file: String,
    /// The file's text (empty when it could not be read as UTF-8).
    pub source: String,
    /// The problems, in file order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Renders every problem; `color` adds terminal styling.
    pub fn render(&self, color: bool) -> String {
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let mut out = String::new();
        for d in &self.items {
            out.push_str(&render_one(&renderer, &self.file, &self.source, d));
            out.push_str("\n\n");
        }
        let errors = self.error_count();
        let warnings = self.items.len() - errors;
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        if errors > 0 {
            out.push_str(&format!("{}: {} found", self.file, plural(errors, "error")));
            if warnings > 0 {
                out.push_str(&format!(" (and {})", plural(warnings, "warning")));
            }
            out.push('\n');
        }
        out
    }

    /// Sorts problems by position, overrides last.
    pub(crate) fn sort(&mut self) {
        self.items.sort_by_key(|d| match &d.origin {
            Some(Origin::File(s)) => (0, s.start, String::new()),
            Some(Origin::Override(t)) => (1, 0, t.clone()),
            None => (2, 0, String::new()),
        });
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}

fn render_one(renderer: &Renderer, file: &str, source: &str, d: &Diagnostic) -> String {
    let level = match d.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let title = level.primary_title(d.message.as_str());
    let mut group = match &d.origin {
        Some(Origin::File(span)) if !source.is_empty() => {
            let Span { start, end, .. } = *span;
            let end = if end > start {
                end
            } else {
                next_char_end(source, start)
            };
            Group::with_title(title).element(
                Snippet::source(source)
                    .path(file)
                    .fold(true)
                    .annotation(AnnotationKind::Primary.span(start..end)),
            )
        }
        Some(Origin::File(span)) => Group::with_title(title)
            .element(Level::NOTE.message(format!("at {file}:{}:{}", span.line, span.col))),
        Some(Origin::Override(text)) => Group::with_title(title)
            .element(Level::NOTE.message(format!("from the override `{text}`"))),
        None => Group::with_title(title).element(Level::NOTE.message(format!("in {file}"))),
    };
    if let Some(hint) = &d.hint {
        group = group.element(Level::HELP.message(hint.as_str()));
    }
    renderer.render(&[group])
}

fn next_char_end(source: &str, start: usize) -> usize {
    source
        .get(start..)
        .and_then(|s| s.chars().next())
        .map_or(start, |c| start + c.len_utf8())
}
