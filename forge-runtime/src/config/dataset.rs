use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where prompts come from and how each record becomes a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// A `.jsonl` file, a `.parquet` file, or a directory saved by HF `datasets`
    /// (`save_to_disk`). Relative paths are relative to the experiment file.
    pub path: String,
    /// File format; `auto` decides from the extension or the directory layout.
    #[serde(default)]
    pub format: DatasetFormat,
    /// Split to read from an HF on-disk `DatasetDict` (a sub-directory name).
    #[serde(default = "default_split")]
    pub split: String,
    /// Which record fields hold the prompt and the reference answer.
    #[serde(default)]
    pub fields: FieldMapping,
    /// A Jinja template turning a record into the user prompt, with the record's fields as
    /// variables, e.g. `"{{ question }}\nPut the final answer after ####."`. Without one, the
    /// prompt field is used as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    /// System prompt placed before every user prompt (through the chat template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Read records lazily instead of loading the whole file (for datasets larger than memory).
    /// Shuffling then happens within a window of `shuffle_buffer` records. Not built yet:
    /// `true` is rejected when the experiment is checked.
    #[serde(default)]
    pub streaming: bool,
    /// Shuffle the records each epoch.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Seed of the shuffle; the same seed gives the same order.
    #[serde(default)]
    pub shuffle_seed: u64,
    /// Records held for shuffling when `streaming` is on.
    #[serde(default = "default_shuffle_buffer")]
    #[schemars(range(min = 1))]
    pub shuffle_buffer: u64,
    /// Use at most this many records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_samples: Option<u64>,
    /// What to do with a record that cannot be read (bad JSON, missing field).
    #[serde(default)]
    pub on_bad_record: BadRecordPolicy,
    /// Held-out prompts evaluated during training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalConfig>,
}

/// Dataset file formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// Decide from the path: `.jsonl`/`.json` -> jsonl, `.parquet` -> parquet, a directory with
    /// `dataset_info.json` or `dataset_dict.json` -> hf_disk.
    #[default]
    Auto,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
    /// The layout HF `datasets` writes with `save_to_disk` (Arrow files plus JSON metadata).
    HfDisk,
}

/// Which record fields hold what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Field holding the prompt (GSM8K: `question`).
    #[serde(default = "default_prompt_field")]
    pub prompt: String,
    /// Field holding the reference answer rewards compare against (GSM8K: `answer`, whose final
    /// answer follows `####`).
    #[serde(default = "default_answer_field")]
    pub answer: String,
    /// Field holding the target completion, for SFT.
    #[serde(default = "default_completion_field")]
    pub completion: String,
}

impl Default for FieldMapping {
    fn default() -> Self {
        Self {
            prompt: default_prompt_field(),
            answer: default_answer_field(),
            completion: default_completion_field(),
        }
    }
}

/// What to do with a record that cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Skip it, report its line number in the metrics and the log, and go on.
    #[default]
    Skip,
    /// Stop with an error naming the line.
    Error,
}

/// Held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluation data; defaults to the training file (with `split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Split to evaluate on.
    #[serde(default = "default_eval_split")]
    pub split: String,
    /// Evaluate on at most this many prompts.
    #[serde(default = "default_eval_samples")]
    #[schemars(range(min = 1))]
    pub max_samples: u64,
    /// Evaluate every this many steps (0: only before and after training).
    #[serde(default)]
    pub interval: u64,
}

fn yes() -> bool {
    true
}
fn default_split() -> String {
    "train".into()
}
fn default_eval_split() -> String {
    "test".into()
}
fn default_eval_samples() -> u64 {
    256
}
fn default_shuffle_buffer() -> u64 {
    10_000
}
fn default_prompt_field() -> String {
    "prompt".into()
}
fn default_answer_field() -> String {
    "answer".into()
}
fn default_completion_field() -> String {
    "completion".into()
}
