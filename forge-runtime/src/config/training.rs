use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Optimiser, schedule, batch shape and step count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Episodes (completions) per optimiser step, over all data-parallel ranks. Must be a multiple
    /// of `sampling.n` and of the data-parallel degree times `gradient_accumulation_steps`.
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// Micro-batches each data-parallel rank splits its share of the batch into; the loss is
    /// normalised over the whole batch, so results do not depend on this.
    #[schemars(range(min = 1))]
    pub gradient_accumulation_steps: u32,
    /// Peak learning rate of AdamW.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub lr: f64,
    /// Learning-rate schedule after warm-up.
    pub schedule: LrSchedule,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup_steps: u64,
    /// The cosine/linear schedule decays to `lr * min_lr_ratio`.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_lr_ratio: f64,
    /// Optimiser steps to train for.
    #[schemars(range(min = 1))]
    pub steps: u64,
    /// Longest prompt plus completion, in tokens.
    #[schemars(range(min = 2))]
    pub seq_len: u32,
    /// Clip the global gradient norm to this value (0: no clipping).
    #[schemars(range(min = 0.0))]
    pub max_norm: f64,
    /// Weight of the entropy bonus added to the loss (0: off). Counters entropy collapse.
    #[schemars(range(min = 0.0))]
    pub entropy_coef: f64,
    /// AdamW decoupled weight decay.
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    /// AdamW β1.
    #[schemars(range(min = 0.0, max = 0.999999))]
    pub adam_beta1: f64,
    /// AdamW β2.
    #[schemars(range(min = 0.0, max = 0.999999))]
    pub adam_beta2: f64,
    /// AdamW ε.
    #[schemars(range(min = 0.0))]
    pub adam_eps: f64,
    /// Seed of every random choice in the run (sampling, dropout, data order unless
    /// `dataset.shuffle_seed` says otherwise).
    pub seed: u64,
    /// Refresh the generator's weights from the trainer's every this many steps: at most
    /// `replay_buffer.max_policy_age` (1 when that is 0). The generator shares the trainer's
    /// device and reads its tensors without a copy. After a resume it starts from the resumed
    /// weights.
    #[schemars(range(min = 1))]
    pub sync_interval: u32,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            gradient_accumulation_steps: 1,
            lr: 1e-6,
            schedule: LrSchedule::Constant,
            warmup_steps: 0,
            min_lr_ratio: 0.0,
            steps: 100,
            seq_len: 2048,
            max_norm: 1.0,
            entropy_coef: 0.0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            seed: 42,
            sync_interval: 1,
        }
    }
}

/// Learning-rate schedules (after warm-up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Constant at `lr`.
    #[default]
    Constant,
    /// Cosine decay to `lr * min_lr_ratio` at the last step.
    Cosine,
    /// Linear decay to `lr * min_lr_ratio` at the last step.
    Linear,
}
