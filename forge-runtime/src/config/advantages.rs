use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How rewards within a group of completions become advantages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdvantagesConfig {
    /// The advantage estimator.
    pub estimator: AdvantageEstimator,
    /// Added to the group's standard deviation before dividing (group_normalized only).
    #[schemars(range(min = 0.0))]
    pub eps: f64,
    /// DAPO dynamic sampling: drop groups whose rewards are all equal (they carry no signal) and
    /// sample more prompts to refill the batch.
    pub dynamic_sampling: bool,
    /// Give completions cut off by `sampling.max_tokens` zero loss weight (DAPO overlong
    /// filtering) instead of training on them.
    pub mask_truncated: bool,
}

impl Default for AdvantagesConfig {
    fn default() -> Self {
        Self {
            estimator: AdvantageEstimator::GroupNormalized,
            eps: 1e-6,
            dynamic_sampling: false,
            mask_truncated: false,
        }
    }
}

/// Advantage estimators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageEstimator {
    /// GRPO: (r - mean(group)) / (std(group) + eps).
    #[default]
    GroupNormalized,
    /// Dr. GRPO: r - mean(group), no division by the standard deviation.
    DrGrpo,
    /// REINFORCE leave-one-out: r - mean of the other completions of the group.
    Rloo,
}
