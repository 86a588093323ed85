use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where metrics go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Base directory of runs; this run writes into `<dir>/<name>`. Relative to the experiment
    /// file.
    pub dir: PathBuf,
    /// Metric sinks.
    pub sinks: Vec<MetricsSink>,
    /// Log every this many steps.
    #[schemars(range(min = 1))]
    pub log_interval: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs"),
            sinks: vec![MetricsSink::Console, MetricsSink::Jsonl],
            log_interval: 1,
        }
    }
}

/// Metric sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricsSink {
    /// Progress bars and a line per logged step on the terminal.
    Console,
    /// `metrics.jsonl` in the run directory, one object per step.
    Jsonl,
    /// TensorBoard event files in the run directory.
    Tensorboard,
}
