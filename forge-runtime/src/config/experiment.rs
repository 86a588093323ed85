use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    AdvantagesConfig, Backend, CheckpointConfig, DatasetConfig, LossConfig, MetricsConfig,
    ModelConfig, ParallelismConfig, ReplayBufferConfig, RewardConfig, SamplingConfig,
    ServicesConfig, SftConfig, TokenizerConfig, TrainingConfig,
};

/// # Forge experiment
/// One RL (GRPO family) or SFT post-training experiment. `forge build` compiles a training binary
/// specialised for it; `forge validate` checks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the experiment: names the generated binary and the run directory.
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
        length(min = 1, max = 64)
    )]
    pub name: String,
    /// What to train: `grpo` (reinforcement learning with the `loss` and `rewards` below) or `sft`
    /// (supervised fine-tuning, configured in the `sft` section).
    #[serde(default)]
    pub recipe: Recipe,
    /// Where tensors live and kernels run: `cpu`, `cuda` or `wgpu`.
    #[serde(default)]
    pub backend: Backend,
    /// The policy model: a Hugging Face checkpoint directory.
    pub model: ModelConfig,
    /// Tokenizer and chat template; defaults to the files inside the model directory.
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    /// Where prompts (and answers) come from and how they become model input.
    pub dataset: DatasetConfig,
    /// How the generator samples completions (group size, length, temperature...).
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// The policy loss, by registered name, with that loss's own parameters.
    #[serde(default)]
    pub loss: LossConfig,
    /// Reward functions, by registered name; an episode's reward is their weighted sum.
    #[serde(default)]
    pub rewards: Vec<RewardConfig>,
    /// How rewards within a group become advantages.
    #[serde(default)]
    pub advantages: AdvantagesConfig,
    /// Optimiser, schedule, batch shape and step count.
    #[serde(default)]
    pub training: TrainingConfig,
    /// Episodes waiting to be trained on, and how stale they may be.
    #[serde(default)]
    pub replay_buffer: ReplayBufferConfig,
    /// Placement of the generator, trainer, reference model and reward workers.
    #[serde(default)]
    pub services: ServicesConfig,
    /// Parallelism degrees of the trainer.
    #[serde(default)]
    pub parallelism: ParallelismConfig,
    /// Checkpoint directory, interval and resume behaviour.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Where metrics go: console, JSONL, TensorBoard.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Supervised fine-tuning settings; used when `recipe: sft`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sft: Option<SftConfig>,
    /// The user's own Rust code defining custom losses and rewards: `.rs` files, or directories
    /// holding a crate (`Cargo.toml`). Relative paths are relative to this file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<PathBuf>,
}

/// What an experiment trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recipe {
    /// Group-relative policy optimisation (and its successors, picked by `loss.name`).
    #[default]
    Grpo,
    /// Supervised fine-tuning: masked cross-entropy on prompt/completion pairs.
    Sft,
}
