use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The policy model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Hugging Face checkpoint directory: `config.json`, `model.safetensors` (or a sharded index),
    /// `tokenizer.json`. Or another experiment file (`.yaml`): start from the final model of that
    /// experiment's run; `forge run` runs it first if it has not finished. Relative paths are
    /// relative to the experiment file.
    pub path: PathBuf,
    /// Where the starting weights come from: the checkpoint's (`pretrained`), or fresh random
    /// weights of the shape `config.json` describes (`random`, seeded by `training.seed`).
    #[serde(default)]
    pub init: ModelInit,
    /// Model architecture; `auto` reads `model_type` from the checkpoint's `config.json`.
    #[serde(default)]
    pub architecture: Architecture,
    /// Precision of weights and activations. Optimiser state stays in f32.
    #[serde(default)]
    pub dtype: DType,
    /// How f32 matrix products run on CUDA (cuBLAS): `tf32` (the default) uses TF32 tensor
    /// cores (inputs rounded to a 10-bit mantissa, f32 accumulation; what
    /// `torch.backends.cuda.matmul.allow_tf32 = True` does), ~3x faster than `highest`, exact f32
    /// (PyTorch's default). No effect on other backends or on bf16 products.
    #[serde(default)]
    pub matmul_precision: MatmulPrecision,
}

/// How f32 matrix products run on CUDA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatmulPrecision {
    /// Exact f32.
    Highest,
    /// TF32 tensor cores (10-bit mantissa inputs, f32 accumulation).
    #[default]
    Tf32,
}

/// Where a model's starting weights come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelInit {
    /// The checkpoint's weights.
    #[default]
    Pretrained,
    /// Random weights (normal, std 0.02; unit norms), as transformers initialises a new model.
    Random,
}

/// Where the policy's starting model is, once `model.path` is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face checkpoint directory.
    Checkpoint(PathBuf),
    /// The final model of another experiment's run.
    Experiment {
        /// That experiment's file.
        file: PathBuf,
        /// Its final model directory (`<metrics.dir>/<name>/final`).
        final_dir: PathBuf,
        /// The checkpoint directory that experiment itself starts from (for its config.json).
        origin: PathBuf,
    },
}

impl ModelSource {
    /// The directory whose weights the run loads.
    pub fn dir(&self) -> &Path {
        match self {
            ModelSource::Checkpoint(dir) => dir,
            ModelSource::Experiment { final_dir, .. } => final_dir,
        }
    }

    /// A directory holding a `config.json` of the right architecture, available before any run.
    pub fn config_dir(&self) -> &Path {
        match self {
            ModelSource::Checkpoint(dir) => dir,
            ModelSource::Experiment { origin, .. } => origin,
        }
    }
}

/// Whether `path` names an experiment file rather than a checkpoint directory.
pub fn is_experiment_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Decoder-only transformer families Forge implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Read `model_type` from the checkpoint's `config.json` when the experiment is built.
    #[default]
    Auto,
    /// Llama 3.x (including llama3 RoPE scaling).
    Llama,
    /// Qwen2 / Qwen2.5 (q/k/v projection biases).
    Qwen2,
    /// Qwen3 (RMSNorm on queries and keys).
    Qwen3,
}

impl Architecture {
    /// Maps a Hugging Face `model_type` to an architecture.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }
}

/// Floating-point precision of the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    /// bfloat16 weights and activations, f32 master weights and optimiser state (on CUDA; the
    /// CPU and wgpu backends compute in f32).
    #[default]
    Bf16,
    /// float16 weights. Trained in f32 for now: f16 training needs loss scaling (its gradients
    /// underflow), which Forge does not have; prefer bf16.
    F16,
    /// float32 throughout (CPU runs and parity tests).
    F32,
}

impl DType {
    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }
}

/// Tokenizer and chat template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Directory holding `tokenizer.json` and `tokenizer_config.json`; defaults to `model.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Whether prompts are wrapped in the chat template (system prompt, user turn, generation
    /// prompt). Off: the prompt text is tokenized as is.
    #[serde(default = "yes")]
    pub use_chat_template: bool,
    /// A Jinja chat template file replacing the one in `tokenizer_config.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template_file: Option<PathBuf>,
    /// Extra variables passed to the chat template (for example `enable_thinking: false`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            path: None,
            use_chat_template: true,
            chat_template_file: None,
            chat_template_kwargs: serde_json::Map::new(),
        }
    }
}

fn yes() -> bool {
    true
}
