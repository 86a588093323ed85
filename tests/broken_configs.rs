//! The corpus of broken experiments in `tests/broken/`: each file states, in `# expect:` header
//! lines, what `forge validate` must say (`LINE:COL message` = the message at that position), and
//! in `# args:` any extra arguments (overrides). Every file must exit 2 with every expectation met.

use std::path::Path;

use forge_tests::{forge, text};

struct Case {
    args: Vec<String>,
    expects: Vec<String>,
}

fn header(bytes: &[u8]) -> Case {
    let text = String::from_utf8_lossy(bytes);
    let mut case = Case {
        args: Vec::new(),
        expects: Vec::new(),
    };
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(args) = line.strip_prefix("# args: ") {
            case.args.extend(args.split_whitespace().map(String::from));
        } else if let Some(expect) = line.strip_prefix("# expect: ") {
            case.expects.push(expect.to_string());
        }
    }
    case
}

/// `7:3 unknown key` -> the report has `file:7:3` and the message; plain text -> contained.
fn check(file: &str, report: &str, expect: &str) -> Result<(), String> {
    let (position, message) = match expect.split_once(' ') {
        Some((pos, msg))
            if pos.split(':').count() == 2 && pos.split(':').all(|p| p.parse::<u32>().is_ok()) =>
        {
            (Some(pos), msg)
        }
        _ => (None, expect),
    };
    if let Some(position) = position {
        // The message and its location are printed together: `error: MSG` then ` --> file:L:C`.
        let located = format!("{file}:{position}");
        let found = report
            .split("\nerror")
            .any(|block| block.contains(message) && block.contains(&located));
        if !found {
            return Err(format!("expected `{message}` at {located}"));
        }
    } else if !report.contains(message) {
        return Err(format!("expected `{message}`"));
    }
    Ok(())
}

#[test]
fn every_broken_config_is_rejected_with_its_located_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("broken");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/broken")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        let case = header(&std::fs::read(path).expect("readable"));
        assert!(!case.expects.is_empty(), "{name} has no `# expect:` line");
        let mut args = vec!["validate", name];
        args.extend(case.args.iter().map(String::as_str));
        let output = forge(&dir, &args);
        let (stdout, stderr) = text(&output);
        let report = format!("\n{stderr}{stdout}");
        if output.status.code() != Some(2) {
            failures.push(format!(
                "{name}: exit code {:?}, expected 2\n{report}",
                output.status.code()
            ));
            continue;
        }
        if report.contains("panicked") {
            failures.push(format!("{name}: forge panicked\n{report}"));
        }
        for expect in &case.expects {
            if let Err(e) = check(name, &report, expect) {
                failures.push(format!("{name}: {e}\n--- report ---{report}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} broken configs failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_json_report_carries_line_and_column() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("broken");
    let output = forge(
        &dir,
        &["validate", "typo_top_level.yaml", "--format", "json"],
    );
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["valid"], false);
    let first = &report["diagnostics"][0];
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(20), Some(1)),
        "{report}"
    );
    assert_eq!(first["hint"], "did you mean `training`?");
}

#[test]
fn a_valid_config_passes_and_says_so() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let output = forge(
        &dir,
        &[
            "validate",
            "valid.yaml",
            "--set",
            "training.lr=2e-6",
            "--sampling.n",
            "8",
        ],
    );
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("valid.yaml: valid"), "{stdout}");
}
