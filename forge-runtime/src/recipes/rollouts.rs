//! One step's training batch: groups sampled from a policy, scored, given group-relative
//! advantages (and reference log-probabilities), with what the step's metrics need. The GRPO loop
//! makes the next step's batch on a thread of its own while the trainer trains on the current one
//! (`replay_buffer.max_policy_age` >= 1), so a batch records the policy version that sampled it.

use std::time::Instant;

use burn::prelude::*;

use super::placement::ReferenceModel;
use super::session::RunError;
use crate::config::AdvantagesConfig;
use crate::data::{DataOrder, Dataset, PromptBuilder};
use crate::generate::{
    DecodeBackend, GenerateRequest, GenerateTiming, SamplingParams, StopReason, generate_timed,
};
use crate::kernels::streams::WorkStream;
use crate::model::CausalLm;
use crate::rl::{Episode, RewardScorer, ScoredCompletion, group_advantages};
use crate::tokenizer::Tokenizer;
use crate::train::TokenBatch;
use crate::train::loss_backend::LossBackend;

/// Attempts at filling a batch when DAPO's dynamic sampling drops groups.
const MAX_ATTEMPTS: u64 = 4;

/// What a batch is made from, the same for every step.
pub struct RolloutSources<'a, B: Backend> {
    /// Records into prompts.
    pub prompts: &'a PromptBuilder,
    /// Training records.
    pub dataset: &'a Dataset,
    /// The policy's tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// The configured rewards.
    pub scorer: &'a RewardScorer,
    /// The record field holding the reference answer.
    pub answer_field: &'a str,
    /// The frozen reference model, when the loss has a KL term.
    pub reference: Option<&'a ReferenceModel<B>>,
    /// Sampling settings of training rollouts.
    pub sampling: &'a SamplingParams,
    /// Advantage estimation.
    pub advantages: &'a AdvantagesConfig,
    /// Samples per prompt.
    pub n: usize,
    /// Groups (prompts) per step.
    pub groups_per_step: usize,
    /// Temperature the reference log-probabilities are computed at.
    pub temperature: f64,
    /// Where each generator replica runs.
    pub generators: &'a [B::Device],
    /// The stream each replica's device work goes to (one per replica; the first is also the
    /// one the caller runs `make_batch` in): the same pools every step, whichever thread runs
    /// it ([`crate::kernels::streams`]).
    pub streams: &'a [WorkStream],
}

/// Seconds spent making a batch, by stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutTiming {
    /// Generation, in all.
    pub generate_s: f64,
    /// Generation: issuing the model's forward passes.
    pub generate_model_s: f64,
    /// Generation: waiting for the device and reading back.
    pub generate_logits_s: f64,
    /// Generation: sampling on the host.
    pub generate_sample_s: f64,
    /// Scoring.
    pub reward_s: f64,
    /// Reference log-probabilities.
    pub reference_s: f64,
}

/// One step's episodes and what the step reports about them. Serialisable: a checkpoint holds
/// the batch made ahead for the next step, so a resumed run trains on exactly it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutBatch {
    /// The optimiser step (0-based) it is for.
    pub step: u64,
    /// Optimiser steps the sampling weights had taken.
    pub policy_version: u64,
    /// Episodes to train on (groups dropped by dynamic sampling left out).
    pub episodes: Vec<Episode>,
    /// Total reward of every completion sampled, dropped groups included.
    pub rewards: Vec<f32>,
    /// Each reward function's scores, same order.
    pub per_reward: Vec<(String, Vec<f32>)>,
    /// Reward calls that panicked.
    pub reward_panics: usize,
    /// Reward calls that ran out of time.
    pub reward_timeouts: usize,
    /// Groups dropped by dynamic sampling.
    pub dropped_groups: usize,
    /// Completions cut off by the length limit.
    pub truncated: usize,
    /// Completion lengths (tokens) of the kept groups.
    pub lengths: Vec<f64>,
    /// Time by stage.
    pub timing: RolloutTiming,
}

/// Samples, scores and prepares the batch of optimiser step `step` with `policy` (one copy per
/// generator replica, on its device), whose weights have taken `policy_version` steps. Draws
/// prompts from `order`.
pub fn make_batch<B: DecodeBackend + LossBackend>(
    sources: &RolloutSources<'_, B>,
    order: &mut DataOrder,
    policy: &[CausalLm<B>],
    step: u64,
    policy_version: u64,
) -> Result<RolloutBatch, RunError> {
    let (n, groups_per_step) = (sources.n, sources.groups_per_step);
    let mut batch = RolloutBatch {
        step,
        policy_version,
        ..RolloutBatch::default()
    };
    let mut parts = GenerateTiming::default();
    for attempt in 0..MAX_ATTEMPTS {
        if batch.episodes.len() / n >= groups_per_step {
            break;
        }
        let wanted = groups_per_step - batch.episodes.len() / n;
        let picked: Vec<usize> = (0..wanted).map(|_| order.next_index()).collect();
        let mut prompts = Vec::with_capacity(picked.len());
        for &i in &picked {
            prompts.push(
                sources
                    .prompts
                    .build(&sources.dataset.records[i].fields, sources.tokenizer)?,
            );
        }
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
        let t = Instant::now();
        // Distinct streams per step and attempt, the same after a resume.
        let seed_offset = (step * MAX_ATTEMPTS + attempt) * (groups_per_step * n) as u64;
        let (completions, timing) =
            generate_on_replicas(sources, policy, &ids, seed_offset, policy_version)?;
        batch.timing.generate_s += t.elapsed().as_secs_f64();
        parts += timing;

        let t = Instant::now();
        let mut items = Vec::new();
        for (g, group) in completions.iter().enumerate() {
            let record = &sources.dataset.records[picked[g]].fields;
            for c in group {
                items.push(ScoredCompletion {
                    prompt: prompts[g].text.clone(),
                    completion: c.text.clone(),
                    answer: crate::data::field_text(record, sources.answer_field),
                    sample: record.clone(),
                });
            }
        }
        let report = sources.scorer.score(&items);
        batch.timing.reward_s += t.elapsed().as_secs_f64();
        batch.reward_panics += report.panics;
        batch.reward_timeouts += report.timeouts;
        if batch.per_reward.is_empty() {
            batch.per_reward = report
                .per_reward
                .iter()
                .map(|(k, _)| (k.clone(), Vec::new()))
                .collect();
        }
        for (acc, (_, scores)) in batch.per_reward.iter_mut().zip(&report.per_reward) {
            acc.1.extend(scores);
        }
        batch.rewards.extend(&report.totals);

        // Advantages per group; DAPO dynamic sampling drops groups without signal.
        let dynamic = sources.advantages.dynamic_sampling;
        for (g, group) in completions.into_iter().enumerate() {
            let rewards = &report.totals[g * n..(g + 1) * n];
            if dynamic && rewards.iter().all(|&r| r == rewards[0]) {
                batch.dropped_groups += 1;
                continue;
            }
            let advantages = group_advantages(
                rewards,
                sources.advantages.estimator,
                sources.advantages.eps,
            );
            for (k, c) in group.into_iter().enumerate() {
                batch.lengths.push(c.token_ids.len() as f64);
                let truncated = c.stop_reason == StopReason::Length;
                batch.truncated += usize::from(truncated);
                let group = batch.episodes.len() / n;
                batch.episodes.push(Episode {
                    prompt_ids: c.prompt_ids,
                    completion_ids: c.token_ids,
                    generator_logprobs: c.logprobs,
                    ref_logprobs: None,
                    reward: rewards[k],
                    advantage: advantages[k],
                    truncated,
                    policy_version: c.policy_version,
                    group,
                });
            }
        }
        if !dynamic {
            break;
        }
    }
    batch.timing.generate_model_s = parts.model_s;
    batch.timing.generate_logits_s = parts.logits_s;
    batch.timing.generate_sample_s = parts.sample_s;

    // Reference log-probabilities for the KL term.
    let t = Instant::now();
    if let Some(reference) = sources.reference {
        let mut rest = batch.episodes.as_mut_slice();
        while !rest.is_empty() {
            let take = reference_chunk(rest);
            let (chunk, tail) = rest.split_at_mut(take);
            let lps = reference.completion_logprobs(chunk, sources.temperature)?;
            for (e, lp) in chunk.iter_mut().zip(lps) {
                e.ref_logprobs = Some(lp);
            }
            rest = tail;
        }
    }
    batch.timing.reference_s = t.elapsed().as_secs_f64();
    Ok(batch)
}

/// Samples `n` completions of each prompt, the prompts split into contiguous runs among the
/// generator replicas, which sample at the same time (one thread each). Prompt `i` draws from the
/// same random streams whichever replica samples it, so the result does not depend on the number
/// of replicas. The timing parts are summed over replicas.
fn generate_on_replicas<B: DecodeBackend>(
    sources: &RolloutSources<'_, B>,
    policy: &[CausalLm<B>],
    ids: &[Vec<u32>],
    seed_offset: u64,
    policy_version: u64,
) -> Result<(Vec<Vec<crate::generate::Completion>>, GenerateTiming), RunError> {
    let n = sources.n;
    let replicas = policy
        .len()
        .min(sources.generators.len())
        .min(ids.len())
        .max(1);
    let per = ids.len().div_ceil(replicas);
    let run = |r: usize| {
        let start = (r * per).min(ids.len());
        let end = ((r + 1) * per).min(ids.len());
        let request = GenerateRequest {
            prompts: &ids[start..end],
            n,
            params: sources.sampling,
            seed_offset: seed_offset + (start * n) as u64,
            policy_version,
        };
        generate_timed(
            &policy[r],
            sources.tokenizer,
            &request,
            &sources.generators[r],
        )
        .map_err(|e| RunError::Other(e.to_string()))
    };
    let parts: Vec<Result<_, RunError>> = if replicas == 1 {
        vec![run(0)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..replicas)
                .map(|r| scope.spawn(move || sources.streams[r].run(|| run(r))))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(RunError::Other("a generator replica panicked".into()))
                    })
                })
                .collect()
        })
    };
    let mut completions = Vec::with_capacity(ids.len());
    let mut timing = GenerateTiming::default();
    for part in parts {
        let (c, t) = part?;
        completions.extend(c);
        timing += t;
    }
    Ok((completions, timing))
}

/// Token positions the reference model scores in one forward pass: bounds its logits
/// ([positions, vocab], 2.5 GB in bf16 at Qwen's vocabulary) and activations.
const REFERENCE_POSITIONS: usize = 8192;

/// How many of the leading `episodes` the next reference pass takes (at least one).
fn reference_chunk(episodes: &[Episode]) -> usize {
    let mut longest = 0;
    for (k, e) in episodes.iter().enumerate() {
        longest = longest.max(e.prompt_ids.len() + e.completion_ids.len());
        if k > 0 && (k + 1) * longest > REFERENCE_POSITIONS {
            return k;
        }
    }
    episodes.len()
}

/// Log-probabilities of each episode's completion under `model` at `temperature`, computed
/// where the logits are (only one number per position comes back to the host).
pub(super) fn completion_logprobs<B: LossBackend>(
    model: &CausalLm<B>,
    episodes: &[Episode],
    temperature: f64,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>, RunError> {
    let tokens = TokenBatch::new(
        episodes
            .iter()
            .map(|e| (e.prompt_ids.as_slice(), e.completion_ids.as_slice())),
    );
    let (b, s) = (tokens.batch, tokens.seq);
    let logits = tokens.logits(model, device);
    let v = logits.dims()[2];
    // Only completion positions are wanted; the others are marked ignored.
    let targets: Vec<i32> = (0..b * s)
        .map(|i| match tokens.completion_index[i] {
            Some(_) => i32::try_from(tokens.target_ids[i]).unwrap_or(-1),
            None => -1,
        })
        .collect();
    let rows = logits.reshape([b * s, v]).into_primitive().tensor();
    let logprobs = B::target_logprobs(rows, &targets, temperature)
        .map_err(|e| RunError::Other(format!("reference log-probabilities: {e}")))?;
    let mut out: Vec<Vec<f32>> = episodes
        .iter()
        .map(|e| vec![0.0; e.completion_ids.len()])
        .collect();
    for i in 0..b * s {
        if let Some(k) = tokens.completion_index[i] {
            out[i / s][k] = logprobs[i];
        }
    }
    Ok(out)
}
