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

/// Rewrites `path` (atomically) with only its lines of steps up to `step`; a line cut short by a
/// kill is dropped too.
fn keep_lines_up_to(path: &Path, step: u64) -> std::io::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64))
                .is_some_and(|s| s <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept)?;
    std::fs::rename(&tmp, path)
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
    /// Opens the sinks of `config` in `run_dir`. A run resumed from step `resumed_from` keeps the
    /// lines of its `metrics.jsonl` up to that step and appends after them (lines a killed run
    /// wrote after its last checkpoint are dropped: the resumed run writes those steps again); a
    /// fresh run starts the file anew.
    pub fn open(
        config: &MetricsConfig,
        run_dir: &Path,
        console_keys: Vec<&'static str>,
        resumed_from: Option<u64>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(run_dir)?;
        let jsonl = if config.sinks.contains(&MetricsSink::Jsonl) {
            let path = run_dir.join("metrics.jsonl");
            if let Some(step) = resumed_from {
                keep_lines_up_to(&path, step)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(resumed_from.is_some())
                .write(true)
                .truncate(resumed_from.is_none())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_run_drops_the_lines_after_its_checkpoint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = MetricsConfig {
            sinks: vec![MetricsSink::Jsonl],
            ..MetricsConfig::default()
        };
        let mut writer = MetricsWriter::open(&config, dir.path(), vec![], None).expect("opens");
        for step in 1..=5 {
            let mut m = StepMetrics::new("grpo", step);
            m.set("loss/value", step as f64 * 0.5);
            writer.write(&m).expect("writes");
        }
        drop(writer);
        let path = dir.path().join("metrics.jsonl");
        // A kill mid-line leaves a fragment at the end.
        let mut text = std::fs::read_to_string(&path).expect("written");
        text.push_str("{\"stage\":\"grpo\",\"st");
        std::fs::write(&path, text).expect("rewritten");

        let mut writer = MetricsWriter::open(&config, dir.path(), vec![], Some(3)).expect("opens");
        writer.write(&StepMetrics::new("grpo", 4)).expect("writes");
        drop(writer);
        let steps: Vec<u64> = std::fs::read_to_string(&path)
            .expect("readable")
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).expect("JSON")["step"]
                    .as_u64()
                    .expect("step")
            })
            .collect();
        assert_eq!(steps, [1, 2, 3, 4]);

        // A fresh run starts the file anew.
        drop(MetricsWriter::open(&config, dir.path(), vec![], None).expect("opens"));
        assert_eq!(std::fs::read_to_string(&path).expect("readable"), "");
    }
}
