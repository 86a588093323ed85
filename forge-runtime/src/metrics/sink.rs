//! The sinks: `metrics.jsonl` (one JSON object per logged step) and a console line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::{MetricsConfig, MetricsSink};

/// The metrics of one step, in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepMetrics {
    values: Map<String, Value>,
}

impl StepMetrics {
    /// Metrics of step `step` of `stage` (`sft`, `grpo`, `eval`).
    pub fn new(stage: &str, step: u64) -> Self {
        let mut values = Map::new();
        values.insert("stage".into(), stage.into());
        values.insert("step".into(), step.into());
        Self { values }
    }

    /// Sets a numeric metric (non-finite values are written as null).
    pub fn set(&mut self, key: &str, value: f64) -> &mut Self {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.values.insert(key.to_string(), v);
        self
    }

    /// A metric's value.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(Value::as_f64)
    }

    /// The JSON object.
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.values
    }
}

/// Writes step metrics to the configured sinks.
#[derive(Debug)]
pub struct MetricsWriter {
    jsonl: Option<(PathBuf, BufWriter<File>)>,
    tensorboard: Option<super::tensorboard::EventWriter>,
    console: bool,
    console_keys: Vec<&'static str>,
}

impl MetricsWriter {
    /// Opens the sinks of `config` in `run_dir`. A resumed run (`resume`) appends to its
    /// `metrics.jsonl`; a fresh one starts it anew.
    pub fn open(
        config: &MetricsConfig,
        run_dir: &Path,
        console_keys: Vec<&'static str>,
        resume: bool,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(run_dir)?;
        let jsonl = if config.sinks.contains(&MetricsSink::Jsonl) {
            let path = run_dir.join("metrics.jsonl");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(resume)
                .write(true)
                .truncate(!resume)
                .open(&path)?;
            Some((path, BufWriter::new(file)))
        } else {
            None
        };
        let tensorboard = if config.sinks.contains(&MetricsSink::Tensorboard) {
            Some(super::tensorboard::EventWriter::create(
                &run_dir.join("tensorboard"),
            )?)
        } else {
            None
        };
        Ok(Self {
            jsonl,
            tensorboard,
            console: config.sinks.contains(&MetricsSink::Console),
            console_keys,
        })
    }

    /// The JSONL file, if that sink is on.
    pub fn jsonl_path(&self) -> Option<&Path> {
        self.jsonl.as_ref().map(|(p, _)| p.as_path())
    }

    /// Writes one step (flushed, so a killed run keeps every step it logged).
    pub fn write(&mut self, metrics: &StepMetrics) -> std::io::Result<()> {
        if let Some((_, out)) = &mut self.jsonl {
            serde_json::to_writer(&mut *out, metrics.as_json())?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
        if let Some(events) = &mut self.tensorboard {
            let step = metrics.get("step").unwrap_or(0.0) as i64;
            for (key, value) in metrics.as_json() {
                if let (Some(v), true) = (value.as_f64(), key != "step") {
                    events.scalar(key, step, v as f32)?;
                }
            }
            events.flush()?;
        }
        if self.console {
            let mut line = format!(
                "[{} {:>4}]",
                metrics
                    .as_json()
                    .get("stage")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                metrics.get("step").unwrap_or(0.0)
            );
            for key in &self.console_keys {
                if let Some(v) = metrics.get(key) {
                    line.push_str(&format!(" {key}={}", short(v)));
                }
            }
            eprintln!("{line}");
        }
        Ok(())
    }
}

/// A number in few characters.
fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}
