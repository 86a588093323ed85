//! Parquet files and the HF `datasets` `save_to_disk` layout, read through Arrow. Each row becomes
//! a JSON object (arrow-json's writer: strings, numbers, lists and structs as JSON; null fields
//! left out), so it goes through the same field checks as a JSONL line.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;

use super::DataError;

/// The rows of a Parquet file, in file order.
pub fn parquet_rows(path: &Path) -> Result<Vec<serde_json::Value>, DataError> {
    let file = open(path)?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.build())
        .map_err(|e| malformed(path, format!("not a readable Parquet file: {e}")))?;
    rows_of(path, reader)
}

/// The rows of split `split` of a directory `datasets` wrote with `save_to_disk`: a `Dataset`
/// (`state.json` naming its Arrow files) or a `DatasetDict` (`dataset_dict.json` naming its
/// splits, one `Dataset` directory each).
pub fn hf_disk_rows(dir: &Path, split: &str) -> Result<Vec<serde_json::Value>, DataError> {
    let dataset = if dir.join("dataset_dict.json").is_file() {
        let dict = read_json(&dir.join("dataset_dict.json"))?;
        let splits: Vec<&str> = dict["splits"]
            .as_array()
            .map(|s| s.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        if !splits.contains(&split) {
            return Err(malformed(
                dir,
                format!(
                    "no split `{split}` (dataset.split); this DatasetDict has: {}",
                    splits.join(", ")
                ),
            ));
        }
        dir.join(split)
    } else {
        dir.to_path_buf()
    };
    let state_path = dataset.join("state.json");
    if !state_path.is_file() {
        return Err(malformed(
            &dataset,
            "not a directory saved by HF `datasets` (no state.json or dataset_dict.json)".into(),
        ));
    }
    let state = read_json(&state_path)?;
    let files: Vec<PathBuf> = state["_data_files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f["filename"].as_str())
                .map(|name| dataset.join(name))
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        return Err(malformed(&state_path, "no `_data_files` listed".into()));
    }
    let mut rows = Vec::new();
    for file in files {
        rows.extend(arrow_file_rows(&file)?);
    }
    Ok(rows)
}

/// The rows of one Arrow IPC file: the stream format `datasets` writes, or the file format
/// (which starts with the `ARROW1` magic).
fn arrow_file_rows(path: &Path) -> Result<Vec<serde_json::Value>, DataError> {
    let mut magic = [0u8; 6];
    let is_file_format = open(path)?.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
    let bad = |e: ArrowError| malformed(path, format!("not a readable Arrow file: {e}"));
    if is_file_format {
        let reader = arrow_ipc::reader::FileReader::try_new(open(path)?, None).map_err(bad)?;
        rows_of(path, reader)
    } else {
        let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(open(path)?), None)
            .map_err(bad)?;
        rows_of(path, reader)
    }
}

/// Every row of `batches` as a JSON value.
fn rows_of(
    path: &Path,
    batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>,
) -> Result<Vec<serde_json::Value>, DataError> {
    let mut rows = Vec::new();
    for batch in batches {
        let batch = batch.map_err(|e| malformed(path, format!("reading a record batch: {e}")))?;
        let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
        writer
            .write(&batch)
            .and_then(|()| writer.finish())
            .map_err(|e| malformed(path, format!("a column has no JSON form: {e}")))?;
        let text = writer.into_inner();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            rows.push(
                serde_json::from_slice(line)
                    .map_err(|e| malformed(path, format!("a row as JSON: {e}")))?,
            );
        }
    }
    Ok(rows)
}

fn open(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| malformed(path, format!("not JSON: {e}")))
}

fn malformed(path: &Path, message: String) -> DataError {
    DataError::Malformed {
        path: path.to_path_buf(),
        message,
    }
}
