//! Gradients of the policy loss for a micro-batch of episodes.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::token_batch::TokenBatch;
use crate::config::Aggregation;
use crate::loss::reference::{BatchError, LossBatch, Normalizer, evaluate};
use crate::loss::registry::BoundLoss;
use crate::model::CausalLm;
use crate::rl::Episode;

/// The policy loss as configured.
pub struct PolicyLoss {
    /// The per-token loss with its parameters bound.
    pub loss: BoundLoss,
    /// How token losses are aggregated.
    pub aggregation: Aggregation,
    /// Sampling temperature (logprobs are recomputed under it).
    pub temperature: f64,
    /// Weight of the entropy bonus (token mean over the batch).
    pub entropy_coef: f64,
    /// Completions cut off by the length limit get no loss.
    pub mask_truncated: bool,
}

impl std::fmt::Debug for PolicyLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyLoss")
            .field("aggregation", &self.aggregation)
            .field("temperature", &self.temperature)
            .finish_non_exhaustive()
    }
}

/// What a micro-batch contributed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyStats {
    /// Its share of the batch loss (micro-batch shares add up to the batch loss).
    pub loss: f64,
    /// Active (trained) tokens.
    pub active_tokens: usize,
    /// `loss/...` metrics averaged over its active tokens.
    pub metrics: Vec<(String, f64)>,
    /// Largest |policy logprob - generator logprob| over its active tokens: the
    /// trainer/generator mismatch (0 up to rounding for on-policy episodes).
    pub max_logprob_gap: f64,
}

/// The normaliser of a whole optimiser batch, so micro-batches give the same total.
pub fn batch_normalizer(episodes: &[Episode], horizon: usize, mask_truncated: bool) -> Normalizer {
    let counts: Vec<usize> = episodes
        .iter()
        .map(|e| {
            if mask_truncated && e.truncated {
                0
            } else {
                e.completion_ids.len()
            }
        })
        .collect();
    Normalizer {
        tokens: counts.iter().sum::<usize>() as f64,
        sequences: episodes.len() as f64,
        nonempty_sequences: counts.iter().filter(|&&c| c > 0).count() as f64,
        horizon: horizon as f64,
    }
}

/// Runs the model over `episodes` and returns the gradients of the loss (aggregated with the
/// batch-wide `normalizer`) with respect to every parameter.
pub fn policy_gradients<B: AutodiffBackend>(
    model: &CausalLm<B>,
    episodes: &[Episode],
    loss: &PolicyLoss,
    normalizer: Normalizer,
    device: &B::Device,
) -> Result<(GradientsParams, PolicyStats), BatchError> {
    let tokens = TokenBatch::new(
        episodes
            .iter()
            .map(|e| (e.prompt_ids.as_slice(), e.completion_ids.as_slice())),
    );
    let (b, s) = (tokens.batch, tokens.seq);
    let (logits, host) = tokens.logits(model, device);
    let vocab = logits.dims()[2];

    let per_position = |value: &dyn Fn(&Episode, usize) -> f32| -> Vec<f32> {
        (0..b * s)
            .map(|i| match tokens.completion_index[i] {
                Some(k) => value(&episodes[i / s], k),
                None => 0.0,
            })
            .collect()
    };
    let with_reference = episodes.iter().all(|e| e.ref_logprobs.is_some());
    let batch = LossBatch {
        batch: b,
        seq: s,
        vocab,
        logits: host,
        target_ids: tokens.target_ids.clone(),
        generator_logprobs: per_position(&|e, k| e.generator_logprobs[k]),
        advantages: per_position(&|e, _| e.advantage),
        loss_mask: per_position(&|e, _| {
            if loss.mask_truncated && e.truncated {
                0.0
            } else {
                1.0
            }
        }),
        ref_logprobs: with_reference
            .then(|| per_position(&|e, k| e.ref_logprobs.as_ref().map_or(0.0, |r| r[k]))),
    };
    let out = evaluate(
        &loss.loss,
        loss.aggregation,
        &batch,
        loss.temperature,
        Some(normalizer),
    )?;
    let mut grad = out.grad_logits;
    let mut value = out.loss;
    let active: Vec<usize> = (0..b * s).filter(|&i| batch.is_active(i)).collect();
    if loss.entropy_coef > 0.0 && normalizer.tokens > 0.0 {
        value += entropy_bonus(&batch, &active, loss, normalizer.tokens, &mut grad);
    }
    let max_logprob_gap = active
        .iter()
        .map(|&i| (out.logprobs[i] - f64::from(batch.generator_logprobs[i])).abs())
        .fold(0.0, f64::max);

    let grad: Vec<f32> = grad.into_iter().map(|g| g as f32).collect();
    let grad = Tensor::<B, 3>::from_data(TensorData::new(grad, [b, s, vocab]), device);
    let surrogate = (logits * grad).sum();
    let grads = GradientsParams::from_grads(surrogate.backward(), model);
    let mut metrics = out.metrics;
    metrics.retain(|(k, _)| k != "loss/active_frac");
    Ok((
        grads,
        PolicyStats {
            loss: value,
            active_tokens: active.len(),
            metrics,
            max_logprob_gap,
        },
    ))
}

/// Adds -coef * token-mean entropy to the loss: returns its value and adds its gradient,
/// d H / d z_j = -(p_j / T) (ln p_j + H), into `grad`.
fn entropy_bonus(
    batch: &LossBatch,
    active: &[usize],
    loss: &PolicyLoss,
    total_tokens: f64,
    grad: &mut [f64],
) -> f64 {
    let (v, t) = (batch.vocab, loss.temperature);
    let w = loss.entropy_coef / total_tokens;
    let mut value = 0.0;
    for &i in active {
        let row = &batch.logits[i * v..(i + 1) * v];
        let max = row
            .iter()
            .map(|&x| f64::from(x) / t)
            .fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = row
            .iter()
            .map(|&x| (f64::from(x) / t - max).exp())
            .collect();
        let sum: f64 = exps.iter().sum();
        let logp: Vec<f64> = exps.iter().map(|e| (e / sum).ln()).collect();
        let h: f64 = -logp.iter().map(|&l| l.exp() * l).sum::<f64>();
        value -= w * h;
        for j in 0..v {
            let p = logp[j].exp();
            grad[i * v + j] += w * p / t * (logp[j] + h);
        }
    }
    value
}
