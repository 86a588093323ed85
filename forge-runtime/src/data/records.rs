//! Reading records: JSONL (one object per line). Parquet and the HF `save_to_disk` layout are
//! recognised and reported as not readable by this build.

use std::path::{Path, PathBuf};

use super::DataError;
use crate::config::{BadRecordPolicy, DatasetConfig, DatasetFormat};
use crate::reward::Sample;

/// One record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based line in the file.
    pub line: usize,
    /// Its fields.
    pub fields: Sample,
}

/// A record that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRecord {
    /// 1-based line in the file.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

/// The usable records of a file, and the ones skipped.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file.
    pub path: PathBuf,
    /// Records in file order.
    pub records: Vec<Record>,
    /// Lines skipped under [`BadRecordPolicy::Skip`].
    pub skipped: Vec<SkippedRecord>,
}

/// Reads the records of `path`, checking each has the fields in `required`. Bad records are
/// skipped (with their line numbers) or stop the read, as `config.on_bad_record` says.
pub fn load_records(
    path: &Path,
    config: &DatasetConfig,
    required: &[&str],
    max_samples: Option<u64>,
) -> Result<Dataset, DataError> {
    let format = match config.format {
        DatasetFormat::Auto => detect(path),
        f => f,
    };
    match format {
        DatasetFormat::Jsonl | DatasetFormat::Auto => {}
        DatasetFormat::Parquet | DatasetFormat::HfDisk => {
            return Err(DataError::Unsupported {
                path: path.to_path_buf(),
                message: "Parquet and HF `save_to_disk` datasets are not readable by this build yet; convert to JSONL (`datasets.Dataset.to_json(path, lines=True)`)".into(),
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| match v {
                serde_json::Value::Object(fields) => Ok(fields),
                _ => Err("not a JSON object".to_string()),
            })
            .and_then(
                |fields| match required.iter().find(|f| !fields.contains_key(**f)) {
                    Some(missing) => Err(format!("no field `{missing}`")),
                    None => Ok(fields),
                },
            );
        match parsed {
            Ok(fields) => records.push(Record {
                line: line_no,
                fields,
            }),
            Err(message) => match config.on_bad_record {
                BadRecordPolicy::Skip => skipped.push(SkippedRecord {
                    line: line_no,
                    message,
                }),
                BadRecordPolicy::Error => {
                    return Err(DataError::BadRecord {
                        path: path.to_path_buf(),
                        line: line_no,
                        message,
                    });
                }
            },
        }
        if max_samples.is_some_and(|m| records.len() as u64 >= m) {
            break;
        }
    }
    if records.is_empty() {
        return Err(DataError::Empty(path.to_path_buf()));
    }
    Ok(Dataset {
        path: path.to_path_buf(),
        records,
        skipped,
    })
}

fn detect(path: &Path) -> DatasetFormat {
    if path.is_dir() {
        return DatasetFormat::HfDisk;
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => DatasetFormat::Parquet,
        _ => DatasetFormat::Jsonl,
    }
}

/// A record field as text: strings as they are, other JSON values in JSON form, missing as "".
pub fn field_text(fields: &Sample, name: &str) -> String {
    match fields.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: BadRecordPolicy) -> DatasetConfig {
        serde_json::from_value(serde_json::json!({
            "path": "x.jsonl",
            "on_bad_record": match policy { BadRecordPolicy::Skip => "skip", BadRecordPolicy::Error => "error" },
        }))
        .unwrap()
    }

    #[test]
    fn bad_lines_are_skipped_with_their_numbers_or_stop_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            "{\"question\": \"1+1\", \"answer\": 2}\n\nnot json\n[1]\n{\"answer\": 3}\n{\"question\": \"2+2\", \"answer\": \"4\"}\n",
        )
        .unwrap();
        let d = load_records(&path, &config(BadRecordPolicy::Skip), &["question"], None).unwrap();
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.records[1].line, 6);
        assert_eq!(field_text(&d.records[0].fields, "answer"), "2");
        let lines: Vec<usize> = d.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert!(d.skipped[2].message.contains("question"));
        let e = load_records(&path, &config(BadRecordPolicy::Error), &["question"], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.jsonl:3: not JSON"), "{e}");
        let d = load_records(
            &path,
            &config(BadRecordPolicy::Skip),
            &["question"],
            Some(1),
        )
        .unwrap();
        assert_eq!(d.records.len(), 1);
    }
}
