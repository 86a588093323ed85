//! One step's training batch: groups sampled from a policy, scored, given group-relative
//! advantages (and reference log-probabilities), with what the step's metrics need. Made by the
//! rollout worker (torchforge's `continuous_rollouts`) from the services
//! ([`crate::services`]): prompts from the dataset, completions from the generator's replicas,
//! scores from the reward workers, reference log-probabilities from the reference replicas. The
//! GRPO loop has it make the next step's batch while the trainer trains on the current one
//! (`replay_buffer.max_policy_age` >= 1), so a batch records the policy version that sampled it.

use std::sync::Arc;
use std::time::Instant;

use super::session::RunError;
use crate::config::AdvantagesConfig;
use crate::generate::{DecodeBackend, GenerateTiming, SamplingParams, StopReason};
use crate::rl::{Episode, ScoredCompletion, group_advantages};
use crate::services::{DatasetService, Generator, Reference, RewardWorkers};
use crate::train::loss_backend::LossBackend;

/// Attempts at filling a batch when DAPO's dynamic sampling drops groups.
const MAX_ATTEMPTS: u64 = 4;

/// The services and settings a batch is made from, the same for every step.
pub struct RolloutSources<B: burn::prelude::Backend> {
    /// Training prompts, in the run's order.
    pub dataset: DatasetService,
    /// The generator's replicas.
    pub generator: Generator<B>,
    /// The reward workers.
    pub rewards: RewardWorkers,
    /// The frozen reference model's replicas, when the loss has a KL term.
    pub reference: Option<Reference<B>>,
    /// Sampling settings of training rollouts.
    pub sampling: Arc<SamplingParams>,
    /// Advantage estimation.
    pub advantages: AdvantagesConfig,
    /// The record field holding the reference answer.
    pub answer_field: String,
    /// Samples per prompt.
    pub n: usize,
    /// Groups (prompts) per step.
    pub groups_per_step: usize,
    /// Temperature the reference log-probabilities are computed at.
    pub temperature: f64,
}

/// Seconds spent making a batch, by stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutTiming {
    /// Generation, in all (the parts below are summed over replicas).
    pub generate_s: f64,
    /// Generation: issuing the model's forward passes.
    pub generate_model_s: f64,
    /// Generation: waiting for the device and reading back.
    pub generate_logits_s: f64,
    /// Generation: sampling on the host.
    pub generate_sample_s: f64,
    /// Scoring, past the end of generation (scoring of a replica's completions overlaps the
    /// other replicas' sampling).
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

/// Samples, scores and prepares the batch of optimiser step `step` with the weights the
/// generator's replicas hold, which have taken `policy_version` steps.
pub fn make_batch<B: DecodeBackend + LossBackend>(
    sources: &RolloutSources<B>,
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
        let drawn = sources.dataset.next(wanted)?;
        let ids: Vec<Vec<u32>> = drawn.iter().map(|d| d.prompt.ids.clone()).collect();
        let t = Instant::now();
        // Distinct streams per step and attempt, the same after a resume.
        let seed_offset = (step * MAX_ATTEMPTS + attempt) * (groups_per_step * n) as u64;
        let replies =
            sources
                .generator
                .generate(ids, n, Arc::clone(&sources.sampling), seed_offset);
        // Each replica's completions go to the reward workers as soon as it answers.
        let mut completions = Vec::with_capacity(drawn.len());
        let mut pending = Vec::with_capacity(replies.len());
        for reply in replies {
            let (part, timing) = reply.wait()??;
            parts += timing;
            let first = completions.len();
            let mut items = Vec::new();
            for (g, group) in part.iter().enumerate() {
                let d = &drawn[first + g];
                for c in group {
                    items.push(ScoredCompletion {
                        prompt: d.prompt.text.clone(),
                        completion: c.text.clone(),
                        answer: crate::data::field_text(&d.record, &sources.answer_field),
                        sample: d.record.clone(),
                    });
                }
            }
            pending.push(sources.rewards.submit(items));
            completions.extend(part);
        }
        batch.timing.generate_s += t.elapsed().as_secs_f64();
        // Scoring time past the end of sampling (what overlapped it is not counted twice).
        let t = Instant::now();
        let report = sources.rewards.report(pending)?;
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
    if let Some(reference) = &sources.reference {
        reference.score(&mut batch.episodes, sources.temperature)?;
    }
    batch.timing.reference_s = t.elapsed().as_secs_f64();
    Ok(batch)
}
