//! The reinforcement-learning pieces between the generator and the trainer: scoring completions,
//! group advantages, episodes, the replay buffer.

mod advantages;
mod episode;
mod replay_buffer;
mod scoring;

pub use advantages::group_advantages;
pub use episode::Episode;
pub use replay_buffer::{ReplayBuffer, Taken};
pub use scoring::{CompletionScores, RewardScorer, ScoreReport, ScoredCompletion};
