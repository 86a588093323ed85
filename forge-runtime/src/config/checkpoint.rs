use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Checkpoints: model (HF safetensors), optimiser, schedule, RNG, data position, replay buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Directory for checkpoints, one sub-directory per step. Relative to the run directory.
    pub dir: PathBuf,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub interval: u64,
    /// Keep the newest this many checkpoints (0: keep all).
    pub keep: u32,
    /// Whether to continue from the newest checkpoint in `dir`.
    pub resume: ResumeMode,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("checkpoints"),
            interval: 50,
            keep: 3,
            resume: ResumeMode::Auto,
        }
    }
}

/// Whether a run continues from a checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResumeMode {
    /// Resume from the newest checkpoint if one exists, else start fresh.
    #[default]
    Auto,
    /// Always start fresh (existing checkpoints are left alone, new ones added beside them).
    Never,
    /// Resume, and fail if there is no checkpoint.
    Always,
}
