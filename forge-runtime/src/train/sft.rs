//! Gradients of the masked cross-entropy of supervised fine-tuning, through the policy loss's
//! fused kernels: the cross-entropy of a target token is `-logprob`, which is CISPO with its
//! importance weight clipped to exactly 1 (`clip_low = clip_high = 0`) and an advantage of 1.
//! So SFT on a GPU reads the logits once forward and once backward, never on the host.

use burn::optim::GradientsParams;

use super::loss_backend::{AutodiffLossBackend, BoundPolicyLoss, LossOpError};
use super::policy::{PolicyLoss, policy_gradients};
use crate::config::Aggregation;
use crate::loss::reference::Normalizer;
use crate::model::CausalLm;
use crate::rl::Episode;

/// One prompt/completion pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// Prompt ids (no loss on them when the prompt is masked).
    pub prompt_ids: Vec<u32>,
    /// Completion ids (the targets).
    pub completion_ids: Vec<u32>,
}

/// `-logprob` per target token, token-mean: CISPO with its weight clipped to [1, 1].
fn cross_entropy() -> Result<PolicyLoss, LossOpError> {
    let registration = crate::loss::registry::find("cispo")
        .ok_or_else(|| LossOpError::Logits("the built-in loss `cispo` is not registered".into()))?;
    let params = serde_json::json!({"clip_low": 0.0, "clip_high": 0.0});
    let params = params.as_object().cloned().unwrap_or_default();
    let loss = BoundPolicyLoss::bind(registration, &params).map_err(LossOpError::Logits)?;
    Ok(PolicyLoss {
        loss,
        aggregation: Aggregation::TokenMean,
        temperature: 1.0,
        entropy_coef: 0.0,
        mask_truncated: false,
    })
}

/// Mean cross-entropy over the target tokens of the whole batch (`total_tokens` of them, so
/// micro-batches add up), and its gradients. Returns (gradients, this micro-batch's share of the
/// loss).
pub fn sft_gradients<B: AutodiffLossBackend>(
    model: &CausalLm<B>,
    examples: &[SftExample],
    total_tokens: usize,
    device: &B::Device,
) -> Result<(GradientsParams, f64), LossOpError> {
    let episodes: Vec<Episode> = examples
        .iter()
        .map(|e| Episode {
            prompt_ids: e.prompt_ids.clone(),
            completion_ids: e.completion_ids.clone(),
            // Any value: the weight exp(logprob - this) is clipped to exactly 1.
            generator_logprobs: vec![0.0; e.completion_ids.len()],
            ref_logprobs: None,
            reward: 0.0,
            advantage: 1.0,
            truncated: false,
            policy_version: 0,
            group: 0,
        })
        .collect();
    let normalizer = Normalizer {
        tokens: total_tokens as f64,
        sequences: examples.len() as f64,
        nonempty_sequences: examples.len() as f64,
        horizon: 1.0,
    };
    let (grads, stats) = policy_gradients(model, &episodes, &cross_entropy()?, normalizer, device)?;
    Ok((grads, stats.loss))
}
