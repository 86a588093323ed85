//! `forge validate`.

use forge::config::{Diagnostics, Origin, Override, OverrideError, Severity};

use super::{load, print_report};
use crate::args::{Format, ValidateArgs};
use crate::exit::ExitStatus;

pub(crate) fn exec(
    args: &ValidateArgs,
    dotted: Vec<Result<Override, OverrideError>>,
) -> anyhow::Result<ExitStatus> {
    let file = args.experiment.file.display().to_string();
    let (report, status) = match load(&args.experiment, dotted, !args.no_file_checks) {
        Ok(exp) => (exp.loaded.warnings, ExitStatus::Success),
        Err(report) => (report, ExitStatus::Invalid),
    };
    match args.format {
        Format::Human => {
            print_report(&report);
            if status == ExitStatus::Success {
                println!("{file}: valid");
            }
        }
        Format::Json => println!("{}", json_report(&report)),
    }
    Ok(status)
}

fn json_report(report: &Diagnostics) -> serde_json::Value {
    let items: Vec<_> = report
        .items
        .iter()
        .map(|d| {
            let (line, col, from_override) = match &d.origin {
                Some(Origin::File(span)) => (Some(span.line), Some(span.col), None),
                Some(Origin::Override(text)) => (None, None, Some(text.clone())),
                None => (None, None, None),
            };
            serde_json::json!({
                "severity": if d.severity == Severity::Error { "error" } else { "warning" },
                "file": report.file,
                "line": line,
                "column": col,
                "override": from_override,
                "message": d.message,
                "hint": d.hint,
            })
        })
        .collect();
    serde_json::json!({ "file": report.file, "valid": !report.has_errors(), "diagnostics": items })
}
