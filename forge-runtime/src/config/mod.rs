//! The experiment file: typed sections, the JSON Schema they generate, and the loader that checks a
//! YAML file against both and reports every problem with `file:line:col`.
//!
//! One file per YAML section (`training:` is [`TrainingConfig`] in `training.rs`, and so on); the
//! loading pipeline is `source` (YAML with positions) -> `overrides` -> `schema` -> serde -> `semantic`.

mod advantages;
mod backend;
mod checkpoint;
mod dataset;
mod diagnostic;
mod experiment;
mod json_schema;
mod load;
mod loss;
mod metrics;
mod model;
mod overrides;
mod parallelism;
mod registered;
mod replay_buffer;
mod reward;
mod sampling;
mod schema;
mod semantic;
mod services;
mod sft;
mod source;
mod training;

pub use advantages::{AdvantageEstimator, AdvantagesConfig};
pub use backend::Backend;
pub use checkpoint::{CheckpointConfig, ResumeMode};
pub use dataset::{BadRecordPolicy, DatasetConfig, DatasetFormat, EvalConfig, FieldMapping};
pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use experiment::{Experiment, Recipe};
pub use load::{LoadOptions, Loaded, load_file, load_str};
pub use loss::{Aggregation, LossConfig};
pub use metrics::{MetricsConfig, MetricsSink};
pub use model::{
    Architecture, DType, MatmulPrecision, ModelConfig, ModelInit, ModelSource, TokenizerConfig,
    is_experiment_file,
};
pub use overrides::{Override, OverrideError, extract_dotted_flags};
pub use parallelism::ParallelismConfig;
pub use replay_buffer::ReplayBufferConfig;
pub use reward::RewardConfig;
pub use sampling::SamplingConfig;
pub use schema::{json_schema, schema_text};
pub use services::{ServiceConfig, ServicesConfig};
pub use sft::SftConfig;
pub use source::{Origin, SourceMap, Span};
pub use training::{LrSchedule, TrainingConfig};
