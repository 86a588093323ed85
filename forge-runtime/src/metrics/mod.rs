//! Metrics of a run: one record per step, written to the configured sinks.

pub mod plot;
mod sink;
pub mod tensorboard;

pub use sink::{MetricsWriter, StepMetrics};
