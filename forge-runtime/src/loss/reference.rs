//! The f64 CPU reference of the whole loss path: logits -> target log-probabilities (and entropy)
//! -> per-token loss and its derivatives -> aggregation -> d loss / d logits. The oracle the GPU
//! kernels are checked against, and what `forge loss eval --device cpu` runs.
//!
//! Aggregation uses a [`Normalizer`] counted over the whole optimiser batch, so splitting a batch
//! into micro-batches and summing their losses gives the same loss and gradients.

use super::TokenInputs;
use super::math::k3;
use super::registry::BoundLoss;
use crate::config::Aggregation;

/// Target id that marks a position to ignore (as in PyTorch's cross-entropy).
pub const IGNORE_INDEX: i64 = -100;

/// One batch of the loss's inputs, row-major.
///
/// # Shapes
/// - logits: [batch, seq, vocab]
/// - target_ids, generator_logprobs, advantages, loss_mask, ref_logprobs: [batch, seq]
#[derive(Debug, Clone, PartialEq)]
pub struct LossBatch {
    /// Batch size (sequences).
    pub batch: usize,
    /// Sequence length.
    pub seq: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Policy logits before temperature.
    pub logits: Vec<f32>,
    /// Sampled token ids; [`IGNORE_INDEX`] marks positions without a target.
    pub target_ids: Vec<i64>,
    /// Log-probabilities recorded by the generator.
    pub generator_logprobs: Vec<f32>,
    /// Per-token advantages (the episode's advantage repeated over its tokens).
    pub advantages: Vec<f32>,
    /// 1 for tokens that count, 0 for the rest (prompt, padding).
    pub loss_mask: Vec<f32>,
    /// Reference-model log-probabilities, when there is a reference model.
    pub ref_logprobs: Option<Vec<f32>>,
}

/// The per-token side of a loss batch, borrowed: everything but the logits, which the operation
/// takes as a tensor. Rows are sequences; position `i` is row `i / seq`.
#[derive(Debug, Clone, Copy)]
pub struct TokenView<'a> {
    /// Sequences.
    pub batch: usize,
    /// Positions per sequence.
    pub seq: usize,
    /// Target ids; [`IGNORE_INDEX`] where there is none.
    pub target_ids: &'a [i64],
    /// Log-probabilities recorded by the generator.
    pub generator_logprobs: &'a [f32],
    /// Per-token advantages.
    pub advantages: &'a [f32],
    /// 1 for tokens that count, 0 for the rest.
    pub loss_mask: &'a [f32],
    /// Reference-model log-probabilities, when there is a reference model.
    pub ref_logprobs: Option<&'a [f32]>,
}

impl TokenView<'_> {
    /// Positions.
    pub fn len(&self) -> usize {
        self.batch * self.seq
    }

    /// Whether there are no positions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether position `i` is trained on.
    pub fn is_active(&self, i: usize) -> bool {
        self.target_ids[i] != IGNORE_INDEX && self.loss_mask[i] != 0.0
    }

    /// An owned batch with these tokens and `logits` ([len, vocab], row-major).
    pub fn with_logits(&self, vocab: usize, logits: Vec<f32>) -> LossBatch {
        LossBatch {
            batch: self.batch,
            seq: self.seq,
            vocab,
            logits,
            target_ids: self.target_ids.to_vec(),
            generator_logprobs: self.generator_logprobs.to_vec(),
            advantages: self.advantages.to_vec(),
            loss_mask: self.loss_mask.to_vec(),
            ref_logprobs: self.ref_logprobs.map(<[f32]>::to_vec),
        }
    }
}

/// Counts over the whole optimiser batch that aggregation divides by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalizer {
    /// Active tokens (token_mean).
    pub tokens: f64,
    /// Sequences, empty ones included (fixed_horizon: Dr. GRPO's constant does not depend on
    /// masks).
    pub sequences: f64,
    /// Sequences with at least one active token (sequence_mean).
    pub nonempty_sequences: f64,
    /// The fixed horizon of Dr. GRPO (`sampling.max_tokens`).
    pub horizon: f64,
}

impl Normalizer {
    /// The aggregation's weight of one token's loss, d loss / d (per-token loss), for a token of
    /// a sequence with `sequence_tokens` active tokens.
    pub fn weight(&self, aggregation: Aggregation, sequence_tokens: usize) -> f64 {
        let inverse = |d: f64| if d > 0.0 { 1.0 / d } else { 0.0 };
        match aggregation {
            Aggregation::TokenMean => inverse(self.tokens),
            Aggregation::SequenceMean if sequence_tokens > 0 => {
                inverse(self.nonempty_sequences * sequence_tokens as f64)
            }
            Aggregation::SequenceMean => 0.0,
            Aggregation::FixedHorizon => inverse(self.sequences * self.horizon),
        }
    }
}

/// The loss metrics, accumulated token by token (the reference and the device paths share it).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    ratio_sum: f64,
    clipped_low: usize,
    clipped_high: usize,
    kl_sum: f64,
    entropy_sum: f64,
    active: usize,
}

impl Metrics {
    /// One active token. `clipped`: the loss gives it no gradient (with the KL term at its
    /// minimum, reference = policy, where k2 and k3 have zero slope, so the KL's own gradient does
    /// not hide a clip) although its advantage is not zero.
    pub(crate) fn add(
        &mut self,
        logprob: f64,
        old_logprob: f64,
        ref_logprob: Option<f64>,
        entropy: f64,
        clipped: bool,
    ) {
        let ratio = (logprob - old_logprob).exp();
        self.ratio_sum += ratio;
        if clipped {
            if ratio < 1.0 {
                self.clipped_low += 1
            } else {
                self.clipped_high += 1
            }
        }
        if let Some(r) = ref_logprob {
            self.kl_sum += k3(logprob, r);
        }
        self.entropy_sum += entropy;
        self.active += 1;
    }

    /// `loss/...` metrics over `tokens` positions (active or not); `loss/kl` only with a reference.
    pub(crate) fn finish(self, tokens: usize, with_reference: bool) -> Vec<(String, f64)> {
        let per_active = |x: f64| {
            if self.active > 0 {
                x / self.active as f64
            } else {
                0.0
            }
        };
        let mut metrics = vec![
            ("loss/ratio_mean".to_string(), per_active(self.ratio_sum)),
            (
                "loss/clip_frac_low".to_string(),
                per_active(self.clipped_low as f64),
            ),
            (
                "loss/clip_frac_high".to_string(),
                per_active(self.clipped_high as f64),
            ),
            ("loss/entropy".to_string(), per_active(self.entropy_sum)),
            (
                "loss/active_frac".to_string(),
                if tokens > 0 {
                    self.active as f64 / tokens as f64
                } else {
                    0.0
                },
            ),
        ];
        if with_reference {
            metrics.push(("loss/kl".to_string(), per_active(self.kl_sum)));
        }
        metrics
    }
}

/// The loss, its gradient and its metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct LossOutput {
    /// The aggregated loss.
    pub loss: f64,
    /// d loss / d logits, [batch, seq, vocab]; zero at inactive positions.
    pub grad_logits: Vec<f64>,
    /// Target log-probabilities under the policy (at the temperature), [batch, seq].
    pub logprobs: Vec<f64>,
    /// Metrics, by `loss/...` key.
    pub metrics: Vec<(String, f64)>,
}

/// A batch that does not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A tensor has the wrong number of elements.
    #[error("`{name}` has {found} elements, expected {expected} ({shape})")]
    Shape {
        /// Tensor name.
        name: &'static str,
        /// Elements found.
        found: usize,
        /// Elements expected.
        expected: usize,
        /// The expected shape, for the message.
        shape: String,
    },
    /// A target id outside the vocabulary.
    #[error(
        "target id {id} at [{row}, {col}] is outside the vocabulary (0..{vocab}) and is not {IGNORE_INDEX}"
    )]
    TargetId {
        /// The id.
        id: i64,
        /// Batch index.
        row: usize,
        /// Sequence index.
        col: usize,
        /// Vocabulary size.
        vocab: usize,
    },
}

impl LossBatch {
    /// Checks shapes and target ids.
    pub fn validate(&self) -> Result<(), BatchError> {
        let tokens = self.batch * self.seq;
        let shape = format!("[{}, {}]", self.batch, self.seq);
        let mut sizes = vec![
            ("logits", self.logits.len(), tokens * self.vocab),
            ("target_ids", self.target_ids.len(), tokens),
            ("generator_logprobs", self.generator_logprobs.len(), tokens),
            ("advantages", self.advantages.len(), tokens),
            ("loss_mask", self.loss_mask.len(), tokens),
        ];
        if let Some(r) = &self.ref_logprobs {
            sizes.push(("ref_logprobs", r.len(), tokens));
        }
        for (name, found, expected) in sizes {
            if found != expected {
                let shape = if name == "logits" {
                    format!("[{}, {}, {}]", self.batch, self.seq, self.vocab)
                } else {
                    shape.clone()
                };
                return Err(BatchError::Shape {
                    name,
                    found,
                    expected,
                    shape,
                });
            }
        }
        for (i, &id) in self.target_ids.iter().enumerate() {
            if id != IGNORE_INDEX && (id < 0 || id as usize >= self.vocab) {
                return Err(BatchError::TargetId {
                    id,
                    row: i / self.seq,
                    col: i % self.seq,
                    vocab: self.vocab,
                });
            }
        }
        Ok(())
    }

    /// Whether token `i` counts: it has a target and its mask is set.
    pub fn is_active(&self, i: usize) -> bool {
        self.tokens().is_active(i)
    }

    /// Everything but the logits, borrowed.
    pub fn tokens(&self) -> TokenView<'_> {
        TokenView {
            batch: self.batch,
            seq: self.seq,
            target_ids: &self.target_ids,
            generator_logprobs: &self.generator_logprobs,
            advantages: &self.advantages,
            loss_mask: &self.loss_mask,
            ref_logprobs: self.ref_logprobs.as_deref(),
        }
    }

    /// The normaliser of this batch alone (horizon: the sequence length).
    pub fn normalizer(&self) -> Normalizer {
        let tokens = (0..self.batch * self.seq)
            .filter(|&i| self.is_active(i))
            .count();
        let nonempty = (0..self.batch)
            .filter(|&b| (0..self.seq).any(|s| self.is_active(b * self.seq + s)))
            .count();
        Normalizer {
            tokens: tokens as f64,
            sequences: self.batch as f64,
            nonempty_sequences: nonempty as f64,
            horizon: self.seq as f64,
        }
    }
}

/// Softmax of one row at `temperature`: (log-sum-exp, probabilities).
fn softmax(row: &[f32], temperature: f64) -> (f64, Vec<f64>) {
    let max = row
        .iter()
        .map(|&x| f64::from(x) / temperature)
        .fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = row
        .iter()
        .map(|&x| (f64::from(x) / temperature - max).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    (max + sum.ln(), exps.into_iter().map(|e| e / sum).collect())
}

/// Evaluates `loss` on `batch`. `normalizer` defaults to the batch's own counts.
pub fn evaluate(
    loss: &BoundLoss,
    aggregation: Aggregation,
    batch: &LossBatch,
    temperature: f64,
    normalizer: Option<Normalizer>,
) -> Result<LossOutput, BatchError> {
    batch.validate()?;
    let (rows, seq, vocab) = (batch.batch, batch.seq, batch.vocab);
    let n = rows * seq;
    let norm = normalizer.unwrap_or_else(|| batch.normalizer());

    let mut logprobs = vec![0.0; n];
    let mut probs = vec![Vec::new(); n];
    let mut entropy = vec![0.0; n];
    for i in (0..n).filter(|&i| batch.is_active(i)) {
        let row = &batch.logits[i * vocab..(i + 1) * vocab];
        let (lse, p) = softmax(row, temperature);
        logprobs[i] = f64::from(row[batch.target_ids[i] as usize]) / temperature - lse;
        entropy[i] = -p
            .iter()
            .filter(|&&q| q > 0.0)
            .map(|&q| q * q.ln())
            .sum::<f64>();
        probs[i] = p;
    }

    // Per sequence: active count and GSPO's mean log-ratio.
    let mut count = vec![0usize; rows];
    let mut seq_log_ratio = vec![0.0; rows];
    for b in 0..rows {
        for i in (b * seq..(b + 1) * seq).filter(|&i| batch.is_active(i)) {
            count[b] += 1;
            seq_log_ratio[b] += logprobs[i] - f64::from(batch.generator_logprobs[i]);
        }
        if count[b] > 0 {
            seq_log_ratio[b] /= count[b] as f64;
        }
    }

    let mut total = 0.0;
    let mut d_logprob = vec![0.0; n];
    let mut d_seq = vec![0.0; rows];
    let mut metrics = Metrics::default();
    for b in 0..rows {
        let w = norm.weight(aggregation, count[b]);
        for i in (b * seq..(b + 1) * seq).filter(|&i| batch.is_active(i)) {
            let inputs = TokenInputs {
                logprob: logprobs[i],
                old_logprob: f64::from(batch.generator_logprobs[i]),
                ref_logprob: batch.ref_logprobs.as_ref().map_or(0.0, |r| f64::from(r[i])),
                advantage: f64::from(batch.advantages[i]),
                seq_log_ratio: seq_log_ratio[b],
            };
            let g = loss(&inputs);
            total += w * g.value;
            d_logprob[i] += w * g.d_logprob;
            d_seq[b] += w * g.d_seq_log_ratio;

            let g0 = loss(&TokenInputs {
                ref_logprob: inputs.logprob,
                ..inputs
            });
            let clipped =
                g0.d_logprob == 0.0 && g0.d_seq_log_ratio == 0.0 && inputs.advantage != 0.0;
            let reference = batch.ref_logprobs.as_ref().map(|_| inputs.ref_logprob);
            metrics.add(
                inputs.logprob,
                inputs.old_logprob,
                reference,
                entropy[i],
                clipped,
            );
        }
    }
    // seq_log_ratio = mean over the sequence's active tokens of (logprob - old): route its
    // derivative back to each of them.
    for b in 0..rows {
        if count[b] > 0 {
            let share = d_seq[b] / count[b] as f64;
            for i in (b * seq..(b + 1) * seq).filter(|&i| batch.is_active(i)) {
                d_logprob[i] += share;
            }
        }
    }

    // d logprob / d logits = (onehot - softmax) / temperature.
    let mut grad_logits = vec![0.0; n * vocab];
    for i in (0..n).filter(|&i| batch.is_active(i) && d_logprob[i] != 0.0) {
        let g = d_logprob[i] / temperature;
        let out = &mut grad_logits[i * vocab..(i + 1) * vocab];
        for (o, p) in out.iter_mut().zip(&probs[i]) {
            *o = -g * p;
        }
        out[batch.target_ids[i] as usize] += g;
    }

    let metrics = metrics.finish(n, batch.ref_logprobs.is_some());
    Ok(LossOutput {
        loss: total,
        grad_logits,
        logprobs,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::registry;

    /// A random batch from a seeded linear congruential generator.
    fn random_batch(rows: usize, seq: usize, vocab: usize, seed: u64) -> LossBatch {
        let mut state = seed;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = rows * seq;
        let logits: Vec<f32> = (0..n * vocab)
            .map(|_| (uniform() * 6.0 - 3.0) as f32)
            .collect();
        let target_ids: Vec<i64> = (0..n)
            .map(|i| {
                if i % 9 == 4 {
                    IGNORE_INDEX
                } else {
                    (uniform() * vocab as f64) as i64
                }
            })
            .collect();
        let loss_mask: Vec<f32> = (0..n)
            .map(|i| if i / seq == 1 || i % 5 == 0 { 0.0 } else { 1.0 })
            .collect();
        let generator_logprobs = (0..n).map(|_| (-(uniform() * 3.0) - 0.5) as f32).collect();
        let ref_logprobs = Some((0..n).map(|_| (-(uniform() * 3.0) - 0.5) as f32).collect());
        let advantages = (0..n)
            .map(|i| {
                if (i / seq).is_multiple_of(2) {
                    0.9
                } else {
                    -1.1
                }
            })
            .collect();
        LossBatch {
            batch: rows,
            seq,
            vocab,
            logits,
            target_ids,
            generator_logprobs,
            advantages,
            loss_mask,
            ref_logprobs,
        }
    }

    fn rows(batch: &LossBatch, range: std::ops::Range<usize>) -> LossBatch {
        let (s, v) = (batch.seq, batch.vocab);
        let tok = range.start * s..range.end * s;
        LossBatch {
            batch: range.len(),
            seq: s,
            vocab: v,
            logits: batch.logits[tok.start * v..tok.end * v].to_vec(),
            target_ids: batch.target_ids[tok.clone()].to_vec(),
            generator_logprobs: batch.generator_logprobs[tok.clone()].to_vec(),
            advantages: batch.advantages[tok.clone()].to_vec(),
            loss_mask: batch.loss_mask[tok.clone()].to_vec(),
            ref_logprobs: batch.ref_logprobs.as_ref().map(|r| r[tok].to_vec()),
        }
    }

    fn bound(name: &str) -> BoundLoss {
        (registry::find(name).expect("registered").bind)(&serde_json::Map::new())
            .expect("defaults bind")
    }

    #[test]
    fn micro_batches_with_the_global_normaliser_add_up_to_the_batch() {
        let batch = random_batch(6, 9, 13, 7);
        let norm = batch.normalizer();
        for (name, aggregation) in [
            ("grpo", Aggregation::FixedHorizon),
            ("dapo", Aggregation::TokenMean),
            ("gspo", Aggregation::SequenceMean),
        ] {
            let loss = bound(name);
            let whole = evaluate(&loss, aggregation, &batch, 1.0, Some(norm)).expect("valid");
            let parts: Vec<LossOutput> = [0..2, 2..3, 3..6]
                .into_iter()
                .map(|r| {
                    evaluate(&loss, aggregation, &rows(&batch, r), 1.0, Some(norm)).expect("valid")
                })
                .collect();
            let sum: f64 = parts.iter().map(|p| p.loss).sum();
            assert!(
                (sum - whole.loss).abs() <= 1e-12 * whole.loss.abs().max(1.0),
                "{name}: {sum} vs {}",
                whole.loss
            );
            let grads: Vec<f64> = parts
                .iter()
                .flat_map(|p| p.grad_logits.iter().copied())
                .collect();
            assert_eq!(grads.len(), whole.grad_logits.len());
            assert!(
                grads
                    .iter()
                    .zip(&whole.grad_logits)
                    .all(|(a, b)| (a - b).abs() <= 1e-14),
                "{name}: gradients differ"
            );
        }
    }

    #[test]
    fn gradient_matches_finite_differences_of_the_loss() {
        let batch = random_batch(3, 5, 7, 11);
        for (name, aggregation, temperature) in [
            ("grpo", Aggregation::FixedHorizon, 1.0),
            ("sapo", Aggregation::SequenceMean, 0.8),
            ("gspo", Aggregation::SequenceMean, 1.2),
        ] {
            let loss = bound(name);
            let norm = batch.normalizer();
            let out = evaluate(&loss, aggregation, &batch, temperature, Some(norm)).expect("valid");
            let at = |i: usize, h: f32| {
                let mut b = batch.clone();
                b.logits[i] += h;
                evaluate(&loss, aggregation, &b, temperature, Some(norm))
                    .expect("valid")
                    .loss
            };
            let mut checked = 0;
            for i in (0..batch.logits.len()).step_by(3) {
                let (coarse, fine) = (
                    (at(i, 2e-3) - at(i, -2e-3)) / 4e-3,
                    (at(i, 1e-3) - at(i, -1e-3)) / 2e-3,
                );
                if (coarse - fine).abs() > 1e-4 * (1.0 + fine.abs()) {
                    continue; // a clip boundary between the two steps
                }
                checked += 1;
                assert!(
                    (out.grad_logits[i] - fine).abs() <= 2e-4 * (1.0 + fine.abs()),
                    "{name}: logit {i}: {} vs {fine}",
                    out.grad_logits[i]
                );
            }
            assert!(
                checked > batch.logits.len() / 4,
                "{name}: only {checked} logits checked"
            );
        }
    }

    #[test]
    fn all_masked_batches_have_zero_loss_and_gradient() {
        let mut batch = random_batch(2, 4, 5, 3);
        batch.loss_mask.iter_mut().for_each(|m| *m = 0.0);
        let out =
            evaluate(&bound("grpo"), Aggregation::TokenMean, &batch, 1.0, None).expect("valid");
        assert_eq!(out.loss, 0.0);
        assert!(out.grad_logits.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn bad_shapes_and_targets_are_errors() {
        let mut batch = random_batch(2, 4, 5, 3);
        batch.advantages.pop();
        assert!(matches!(
            evaluate(&bound("dapo"), Aggregation::TokenMean, &batch, 1.0, None),
            Err(BatchError::Shape {
                name: "advantages",
                ..
            })
        ));
        let mut batch = random_batch(2, 4, 5, 3);
        batch.target_ids[3] = 5;
        assert!(matches!(
            evaluate(&bound("dapo"), Aggregation::TokenMean, &batch, 1.0, None),
            Err(BatchError::TargetId { id: 5, .. })
        ));
    }
}
