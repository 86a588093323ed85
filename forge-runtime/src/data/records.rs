//! Reading records: JSONL (one object per line), Parquet, and the HF `datasets` `save_to_disk`
//! layout (Arrow files; see `columnar`), all checked record by record the same way.

use std::path::{Path, PathBuf};

use super::{DataError, columnar};
use crate::config::{BadRecordPolicy, DatasetConfig, DatasetFormat};
use crate::reward::Sample;

/// One record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based line (JSONL) or row (Parquet, Arrow) in the file.
    pub line: usize,
    /// Its fields.
    pub fields: Sample,
}

/// A record that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRecord {
    /// 1-based line (JSONL) or row (Parquet, Arrow) in the file.
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
/// skipped (with their line or row numbers) or stop the read, as `config.on_bad_record` says.
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
    // One item per line or row; `None` for a blank JSONL line, which is not a record.
    type Rows<'a> = Box<dyn Iterator<Item = Option<Result<serde_json::Value, String>>> + 'a>;
    let text;
    let rows: Rows<'_> = match format {
        DatasetFormat::Jsonl | DatasetFormat::Auto => {
            text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            Box::new(text.lines().map(|line| {
                (!line.trim().is_empty())
                    .then(|| serde_json::from_str(line).map_err(|e| format!("not JSON: {e}")))
            }))
        }
        DatasetFormat::Parquet => Box::new(
            columnar::parquet_rows(path)?
                .into_iter()
                .map(|r| Some(Ok(r))),
        ),
        DatasetFormat::HfDisk => Box::new(
            columnar::hf_disk_rows(path, &config.split)?
                .into_iter()
                .map(|r| Some(Ok(r))),
        ),
    };
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    for (i, row) in rows.enumerate() {
        let line = i + 1;
        let Some(row) = row else { continue };
        let checked = row.and_then(|v| match v {
            serde_json::Value::Object(fields) => {
                match required.iter().find(|f| !fields.contains_key(**f)) {
                    Some(missing) => Err(format!("no field `{missing}`")),
                    None => Ok(fields),
                }
            }
            _ => Err("not a JSON object".to_string()),
        });
        match checked {
            Ok(fields) => records.push(Record { line, fields }),
            Err(message) => match config.on_bad_record {
                BadRecordPolicy::Skip => skipped.push(SkippedRecord { line, message }),
                BadRecordPolicy::Error => {
                    return Err(DataError::BadRecord {
                        path: path.to_path_buf(),
                        line,
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

    /// The fixtures `scripts/make_dataset_fixtures.py` wrote: the same rows as JSONL (what every
    /// reader must give), Parquet and an HF `save_to_disk` DatasetDict (train: rows 1-4, test:
    /// rows 5-6). Row 4's answer is null.
    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/datasets")
            .join(name)
    }

    fn with_format(policy: BadRecordPolicy, format: DatasetFormat, split: &str) -> DatasetConfig {
        DatasetConfig {
            format,
            split: split.into(),
            ..config(policy)
        }
    }

    fn expected_rows() -> Vec<Sample> {
        let text = std::fs::read_to_string(fixture("gsm8k-tiny.jsonl")).unwrap();
        text.lines()
            .map(|l| match serde_json::from_str(l).unwrap() {
                serde_json::Value::Object(mut fields) => {
                    // The Arrow readers leave null fields out, as JSONL writers may.
                    fields.retain(|_, v| !v.is_null());
                    fields
                }
                _ => unreachable!("the fixture holds objects"),
            })
            .collect()
    }

    #[test]
    fn parquet_rows_read_as_their_jsonl_twins_with_bad_rows_numbered() {
        let want = expected_rows();
        let required = ["question", "answer"];
        for format in [DatasetFormat::Auto, DatasetFormat::Parquet] {
            let cfg = with_format(BadRecordPolicy::Skip, format, "train");
            let d = load_records(&fixture("gsm8k-tiny.parquet"), &cfg, &required, None).unwrap();
            let got: Vec<&Sample> = d.records.iter().map(|r| &r.fields).collect();
            let want: Vec<&Sample> = [0, 1, 2, 4, 5].iter().map(|&i| &want[i]).collect();
            assert_eq!(got, want);
            assert_eq!(d.records[3].line, 5);
            assert_eq!(d.skipped.len(), 1);
            assert_eq!(d.skipped[0].line, 4);
            assert!(d.skipped[0].message.contains("answer"), "{:?}", d.skipped);
        }
        assert_eq!(field_text(&want[1], "tags"), r#"["mul","easy"]"#);
        let cfg = with_format(BadRecordPolicy::Error, DatasetFormat::Auto, "train");
        let e = load_records(&fixture("gsm8k-tiny.parquet"), &cfg, &required, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gsm8k-tiny.parquet:4: no field `answer`"), "{e}");
    }

    #[test]
    fn hf_disk_splits_read_as_their_jsonl_twins() {
        let want = expected_rows();
        let dir = fixture("gsm8k-tiny-disk");
        let required = ["question"];
        for (split, rows) in [("train", 0..4), ("test", 4..6)] {
            for format in [DatasetFormat::Auto, DatasetFormat::HfDisk] {
                let cfg = with_format(BadRecordPolicy::Error, format, split);
                let d = load_records(&dir, &cfg, &required, None).unwrap();
                let got: Vec<&Sample> = d.records.iter().map(|r| &r.fields).collect();
                let want: Vec<&Sample> = want[rows.clone()].iter().collect();
                assert_eq!(got, want, "split {split}");
            }
        }
        // One split's directory is a Dataset of its own.
        let cfg = with_format(BadRecordPolicy::Error, DatasetFormat::Auto, "ignored");
        let d = load_records(&dir.join("test"), &cfg, &required, None).unwrap();
        assert_eq!(d.records.len(), 2);
        let cfg = with_format(BadRecordPolicy::Error, DatasetFormat::Auto, "validation");
        let e = load_records(&dir, &cfg, &required, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no split `validation`") && e.contains("train, test"),
            "{e}"
        );
    }

    #[test]
    fn files_in_the_wrong_format_are_reported_not_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(BadRecordPolicy::Skip);
        let fake = tmp.path().join("x.parquet");
        std::fs::write(&fake, "{\"question\": \"not parquet\"}\n").unwrap();
        let e = load_records(&fake, &cfg, &["question"], None).unwrap_err();
        assert!(e.to_string().contains("not a readable Parquet file"), "{e}");
        let e = load_records(tmp.path(), &cfg, &["question"], None).unwrap_err();
        assert!(e.to_string().contains("no state.json"), "{e}");
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(
            tmp.path().join("d/state.json"),
            r#"{"_data_files": [{"filename": "data.arrow"}]}"#,
        )
        .unwrap();
        std::fs::write(tmp.path().join("d/data.arrow"), "garbage").unwrap();
        let e = load_records(&tmp.path().join("d"), &cfg, &["question"], None).unwrap_err();
        assert!(e.to_string().contains("not a readable Arrow file"), "{e}");
    }
}
