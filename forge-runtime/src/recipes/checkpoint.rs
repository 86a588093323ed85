//! Checkpoints: the model as a Hugging Face directory, the optimiser state, and the run state
//! (step, data position). Written into a temporary directory and renamed into place, so an
//! interrupted write never leaves a half-written checkpoint under a checkpoint's name.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;

use super::session::{RunError, Session};
use crate::data::DataPosition;
use crate::train::Optimizer;

/// The optimiser state's file in a checkpoint directory (safetensors: f32 moments and master
/// weights by parameter id).
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Everything besides weights and optimiser moments that a resumed run needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// Optimiser steps completed.
    pub step: u64,
    /// Where the training data order stands.
    pub data: DataPosition,
    /// The batch made ahead for the next step (off-by-one GRPO), whose prompts `data` has
    /// already passed: a resumed run trains on it rather than sampling it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_batch: Option<super::rollouts::RolloutBatch>,
}

/// A checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// `<run>/checkpoints/step-<N>`.
    pub dir: PathBuf,
}

impl Checkpoint {
    /// The checkpoints directory of a run.
    pub fn root(session_run_dir: &Path, configured: &Path) -> PathBuf {
        session_run_dir.join(configured)
    }

    /// The newest complete checkpoint under `root`.
    pub fn newest(root: &Path) -> Option<Checkpoint> {
        let entries = std::fs::read_dir(root).ok()?;
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let step: u64 = name.strip_prefix("step-")?.parse().ok()?;
                e.path()
                    .join("state.json")
                    .is_file()
                    .then_some((step, e.path()))
            })
            .max_by_key(|(step, _)| *step)
            .map(|(_, dir)| Checkpoint { dir })
    }

    /// Writes a checkpoint of step `state.step`, then keeps only the newest `keep` (0: all).
    /// `save_optimizer` writes the optimiser state to the path it is given (the trainer's rank 0
    /// holds it: [`crate::services::Trainer::save_optimizer`]).
    pub fn write<B: AutodiffBackend, E: std::fmt::Display>(
        root: &Path,
        session: &Session<B>,
        save_optimizer: impl FnOnce(PathBuf) -> Result<(), E>,
        state: &RunState,
        keep: u32,
    ) -> Result<Checkpoint, RunError> {
        let final_dir = root.join(format!("step-{}", state.step));
        let tmp = root.join(format!(".step-{}.tmp", state.step));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(RunError::io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(RunError::io(&tmp))?;
        session.save_model(&tmp.join("model"))?;
        save_optimizer(tmp.join(OPTIMIZER_FILE)).map_err(|e| RunError::Other(e.to_string()))?;
        // state.json last: its presence marks the checkpoint complete.
        let state_path = tmp.join("state.json");
        let text = serde_json::to_string_pretty(state).expect("state serialises");
        std::fs::write(&state_path, text).map_err(RunError::io(&state_path))?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(RunError::io(&final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(RunError::io(&final_dir))?;
        if keep > 0 {
            let mut steps: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
                .map_err(RunError::io(root))?
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    Some((name.strip_prefix("step-")?.parse().ok()?, e.path()))
                })
                .collect();
            steps.sort();
            let excess = steps.len().saturating_sub(keep as usize);
            for (_, dir) in steps.into_iter().take(excess) {
                std::fs::remove_dir_all(&dir).map_err(RunError::io(&dir))?;
            }
        }
        Ok(Checkpoint { dir: final_dir })
    }

    /// Writes a checkpoint after step `state.step` when `config.interval` says one is due.
    pub fn write_if_due<B: AutodiffBackend, E: std::fmt::Display>(
        root: &Path,
        session: &Session<B>,
        save_optimizer: impl FnOnce(PathBuf) -> Result<(), E>,
        state: &RunState,
        config: &crate::config::CheckpointConfig,
    ) -> Result<(), RunError> {
        if Self::due(state.step, config) {
            Self::write(root, session, save_optimizer, state, config.keep)?;
        }
        Ok(())
    }

    /// Whether `config.interval` asks for a checkpoint after step `step`.
    pub fn due(step: u64, config: &crate::config::CheckpointConfig) -> bool {
        config.interval > 0 && step.is_multiple_of(config.interval)
    }

    /// Restores the model, optimiser and run state into `session` and `optimizer`.
    pub fn restore<B: AutodiffBackend>(
        &self,
        session: &mut Session<B>,
        optimizer: Optimizer<B>,
    ) -> Result<(Optimizer<B>, RunState), RunError> {
        let state_path = self.dir.join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(RunError::io(&state_path))?;
        let state: RunState = serde_json::from_str(&text)
            .map_err(|e| RunError::Other(format!("{}: {e}", state_path.display())))?;
        session.model = crate::model::load::<B>(&self.dir.join("model"), &session.device)?;
        let optimizer = optimizer
            .load(&self.dir.join(OPTIMIZER_FILE), &session.device, state.step)
            .map_err(|e| RunError::Other(format!("loading the optimiser state: {e}")))?;
        Ok((optimizer, state))
    }
}
