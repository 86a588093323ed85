//! The trainer: token batches, the policy and SFT losses' gradients through the model, AdamW with a
//! schedule and global gradient-norm clipping.
//!
//! The policy loss is one burn operation ([`loss_backend`]): its forward pass computes the loss and
//! d loss / d logits together (the fused kernels on a cubecl backend, the f64 reference on
//! ndarray), and its backward pass hands that gradient to burn's autodiff, which carries it into
//! the model. SFT's cross-entropy still goes through the host: burn back-propagates
//! `sum(logits * stop_gradient(d loss / d logits))`.

pub mod adamw;
pub mod data_parallel;
pub mod loss_backend;
mod optimizer;
mod policy;
mod schedule;
mod sft;
mod token_batch;

pub use data_parallel::{GradientExchange, Rank, RankGroup};
pub use optimizer::gradient_norm;
pub use optimizer::{Optimizer, StepOutcome};
pub use policy::{PolicyLoss, PolicyStats, batch_normalizer, policy_gradients};
pub use schedule::learning_rate;
pub use sft::{SftExample, sft_gradients};
pub use token_batch::TokenBatch;

#[cfg(test)]
mod tests;
