//! Gradients of the policy loss for a micro-batch of episodes.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

use super::loss_backend::{
    AutodiffLossBackend, BoundPolicyLoss, LossOpError, PolicyLossInputs, policy_loss,
};
use super::token_batch::TokenBatch;
use crate::config::Aggregation;
use crate::kernels::device_loss::LossPath;
use crate::loss::reference::{Normalizer, TokenView};
use crate::model::CausalLm;
use crate::rl::Episode;

/// The policy loss as configured.
#[derive(Debug)]
pub struct PolicyLoss {
    /// The per-token loss with its parameters bound.
    pub loss: BoundPolicyLoss,
    /// How token losses are aggregated.
    pub aggregation: Aggregation,
    /// Sampling temperature (logprobs are recomputed under it).
    pub temperature: f64,
    /// Weight of the entropy bonus (token mean over the batch).
    pub entropy_coef: f64,
    /// Completions cut off by the length limit get no loss.
    pub mask_truncated: bool,
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
pub fn policy_gradients<B: AutodiffLossBackend>(
    model: &CausalLm<B>,
    episodes: &[Episode],
    loss: &PolicyLoss,
    normalizer: Normalizer,
    device: &B::Device,
) -> Result<(GradientsParams, PolicyStats), LossOpError> {
    let tokens = TokenBatch::new(
        episodes
            .iter()
            .map(|e| (e.prompt_ids.as_slice(), e.completion_ids.as_slice())),
    );
    let (b, s) = (tokens.batch, tokens.seq);

    let per_position = |value: &dyn Fn(&Episode, usize) -> f32| -> Vec<f32> {
        (0..b * s)
            .map(|i| match tokens.completion_index[i] {
                Some(k) => value(&episodes[i / s], k),
                None => 0.0,
            })
            .collect()
    };
    let with_reference = episodes.iter().all(|e| e.ref_logprobs.is_some());
    let generator_logprobs = per_position(&|e, k| e.generator_logprobs[k]);
    let advantages = per_position(&|e, _| e.advantage);
    let loss_mask = per_position(&|e, _| {
        if loss.mask_truncated && e.truncated {
            0.0
        } else {
            1.0
        }
    });
    let ref_logprobs =
        with_reference.then(|| per_position(&|e, k| e.ref_logprobs.as_ref().map_or(0.0, |r| r[k])));
    let view = TokenView {
        batch: b,
        seq: s,
        target_ids: &tokens.target_ids,
        generator_logprobs: &generator_logprobs,
        advantages: &advantages,
        loss_mask: &loss_mask,
        ref_logprobs: ref_logprobs.as_deref(),
    };
    let mut inputs = PolicyLossInputs {
        loss: &loss.loss,
        aggregation: loss.aggregation,
        temperature: loss.temperature,
        normalizer,
        path: LossPath::Auto,
        tokens: view,
        uploaded: None,
    };
    // Queued before the forward pass, the uploads are done by the time the loss runs.
    let uploaded = B::upload_loss_tokens(&inputs, device);
    inputs.uploaded = uploaded.as_ref();
    let logits = tokens.logits(model, device);
    let vocab = logits.dims()[2];
    let logits = logits.reshape([b * s, vocab]);
    // The operation would write its gradient over logits that nothing else holds (saving the
    // gradient's [tokens, vocab] buffer), but on CUDA that path measured 7.1 ms against 1.9 ms
    // in the loss benchmark, for reasons not found yet (bench/NOTES.md): keep a reference.
    let (mut objective, pending) = policy_loss(logits.clone(), &inputs)?;
    let mut bonus_value = 0.0;
    let active: Vec<usize> = (0..b * s).filter(|&i| view.is_active(i)).collect();
    if loss.entropy_coef > 0.0 && normalizer.tokens > 0.0 && !active.is_empty() {
        let bonus;
        (bonus, bonus_value) = entropy_bonus(logits, &active, loss, normalizer.tokens, device);
        objective = objective + bonus;
    }
    // The backward pass is queued before the loss's per-token results are read, so the host
    // does not wait for the loss kernel in between.
    let grads = GradientsParams::from_grads(objective.backward(), model);
    let out = pending.read()?;
    let value = out.loss + bonus_value;
    let max_logprob_gap = active
        .iter()
        .map(|&i| (out.logprobs[i] - f64::from(generator_logprobs[i])).abs())
        .fold(0.0, f64::max);
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

/// -coef * (sum of the entropies of the `active` rows) / `total_tokens`, in the graph (burn's
/// tensor ops: it materialises the softmax of those rows, which only this optional term needs),
/// and its value.
fn entropy_bonus<B: AutodiffLossBackend>(
    logits: Tensor<B, 2>,
    active: &[usize],
    loss: &PolicyLoss,
    total_tokens: f64,
    device: &B::Device,
) -> (Tensor<B, 1>, f64) {
    let rows: Vec<i64> = active.iter().map(|&i| i as i64).collect();
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [active.len()]), device);
    let scaled = logits.select(0, rows) / loss.temperature;
    let logp = log_softmax(scaled.clone(), 1);
    let entropy = (softmax(scaled, 1) * logp).sum().neg();
    let bonus = entropy * (-loss.entropy_coef / total_tokens);
    let value = bonus.clone().into_scalar().elem::<f64>();
    (bonus, value)
}
