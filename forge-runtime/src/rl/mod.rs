//! The reinforcement-learning pieces between the generator and the trainer: scoring completions,
//! group advantages, episodes.

mod advantages;
mod episode;
mod scoring;

pub use advantages::group_advantages;
pub use episode::Episode;
pub use scoring::{RewardScorer, ScoreReport, ScoredCompletion};
