//! The trainer: token batches, the policy and SFT losses' gradients through the model, AdamW with a
//! schedule and global gradient-norm clipping.
//!
//! The losses are evaluated on the logits outside burn's graph (the fused kernels on a GPU, the f64
//! reference path on the CPU), which gives d loss / d logits exactly; burn then back-propagates
//! `sum(logits * stop_gradient(d loss / d logits))`, whose gradient with respect to every weight is
//! the loss's.

mod optimizer;
mod policy;
mod schedule;
mod sft;
mod token_batch;

pub use optimizer::gradient_norm;
pub use optimizer::{Optimizer, StepOutcome};
pub use policy::{PolicyLoss, PolicyStats, batch_normalizer, policy_gradients};
pub use schedule::learning_rate;
pub use sft::{SftExample, sft_gradients};
pub use token_batch::TokenBatch;

#[cfg(test)]
mod tests;
