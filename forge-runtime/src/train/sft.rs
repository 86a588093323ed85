//! Gradients of the masked cross-entropy of supervised fine-tuning.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::token_batch::{TokenBatch, host_logits};
use crate::model::CausalLm;

/// One prompt/completion pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// Prompt ids (no loss on them when the prompt is masked).
    pub prompt_ids: Vec<u32>,
    /// Completion ids (the targets).
    pub completion_ids: Vec<u32>,
}

/// Mean cross-entropy over the target tokens of the whole batch (`total_tokens` of them, so
/// micro-batches add up), and its gradients. Returns (gradients, this micro-batch's share of the
/// loss).
pub fn sft_gradients<B: AutodiffBackend>(
    model: &CausalLm<B>,
    examples: &[SftExample],
    total_tokens: usize,
    device: &B::Device,
) -> (GradientsParams, f64) {
    let tokens = TokenBatch::new(
        examples
            .iter()
            .map(|e| (e.prompt_ids.as_slice(), e.completion_ids.as_slice())),
    );
    let (b, s) = (tokens.batch, tokens.seq);
    let logits = tokens.logits(model, device);
    let host = host_logits(&logits);
    let v = logits.dims()[2];
    let w = 1.0 / total_tokens.max(1) as f64;
    let mut grad = vec![0f32; b * s * v];
    let mut loss = 0.0;
    for i in 0..b * s {
        let Ok(target) = usize::try_from(tokens.target_ids[i]) else {
            continue;
        };
        let row = &host[i * v..(i + 1) * v];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
        let lse = f64::from(max) + sum.ln();
        loss += w * (lse - f64::from(row[target]));
        // d CE / d z = softmax - onehot.
        for j in 0..v {
            grad[i * v + j] = (w * (f64::from(row[j]) - lse).exp()) as f32;
        }
        grad[i * v + target] -= w as f32;
    }
    let grad = Tensor::<B, 3>::from_data(TensorData::new(grad, [b, s, v]), device);
    let grads = GradientsParams::from_grads((logits * grad).sum().backward(), model);
    (grads, loss)
}
