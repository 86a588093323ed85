//! The GRPO loop: sample groups, score them, compute group-relative advantages, train.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::GradientsAccumulator;
use burn::prelude::*;

use super::checkpoint::{Checkpoint, RunState};
use super::session::{RunError, Session};
use crate::config::{Loaded, ResumeMode};
use crate::data::DataOrder;
use crate::generate::{
    GenerateRequest, GenerateTiming, SamplingParams, StopReason, generate_timed, logprob_of,
};
use crate::loss::registry;
use crate::metrics::{MetricsWriter, StepMetrics};
use crate::model::CausalLm;
use crate::rl::{Episode, ScoredCompletion, group_advantages};
use crate::train::loss_backend::BoundPolicyLoss;
use crate::train::{
    Optimizer, PolicyLoss, TokenBatch, batch_normalizer, host_logits, policy_gradients,
};

/// Console columns of GRPO steps.
const CONSOLE: [&str; 8] = [
    "reward/mean",
    "eval/accuracy",
    "loss/value",
    "loss/kl",
    "loss/entropy",
    "response/length_mean",
    "train/grad_norm",
    "time/step_s",
];

/// Panels of `curves.png`.
const GRPO_CURVES: [&str; 8] = [
    "eval/accuracy",
    "eval/accuracy_sampled",
    "reward/mean",
    "loss/value",
    "loss/entropy",
    "response/length_mean",
    "train/grad_norm",
    "time/step_s",
];

/// Sampling settings of the experiment, for training rollouts.
pub(crate) fn sampling_params(loaded: &Loaded) -> SamplingParams {
    let s = &loaded.experiment.sampling;
    SamplingParams {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k as usize,
        max_new_tokens: s.max_tokens as usize,
        stop_token_ids: s.stop_token_ids.clone(),
        stop_strings: s.stop.clone(),
        seed: loaded.experiment.training.seed,
    }
}

/// Greedy decoding with the experiment's limits, for evaluation.
pub(crate) fn greedy_params(loaded: &Loaded) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        ..sampling_params(loaded)
    }
}

/// Log-probabilities of each episode's completion under `model` at `temperature`.
fn completion_logprobs<B: Backend>(
    model: &CausalLm<B>,
    episodes: &[Episode],
    temperature: f64,
    device: &B::Device,
) -> Vec<Vec<f32>> {
    let tokens = TokenBatch::new(
        episodes
            .iter()
            .map(|e| (e.prompt_ids.as_slice(), e.completion_ids.as_slice())),
    );
    let (b, s) = (tokens.batch, tokens.seq);
    let logits = tokens.logits(model, device);
    let v = logits.dims()[2];
    let host = host_logits(&logits);
    let mut out: Vec<Vec<f32>> = episodes
        .iter()
        .map(|e| vec![0.0; e.completion_ids.len()])
        .collect();
    for i in 0..b * s {
        if let (Some(k), Ok(target)) = (
            tokens.completion_index[i],
            usize::try_from(tokens.target_ids[i]),
        ) {
            out[i / s][k] = logprob_of(&host[i * v..(i + 1) * v], target, temperature) as f32;
        }
    }
    out
}

/// Runs GRPO as the experiment says. Returns the final model's directory.
pub fn run_grpo<B: super::RecipeBackend>(
    loaded: Loaded,
    device: B::Device,
) -> Result<std::path::PathBuf, RunError> {
    let exp = loaded.experiment.clone();
    let fields = &exp.dataset.fields;
    let mut session = Session::<B>::open(loaded, device.clone(), &[fields.prompt.as_str()])?;
    let loaded = session.loaded.clone();
    let registration = registry::find(&exp.loss.name)
        .ok_or_else(|| RunError::Other(format!("loss `{}` is not registered", exp.loss.name)))?;
    let bound = BoundPolicyLoss::bind(registration, &exp.loss.params).map_err(RunError::Other)?;
    let kl = (registration.kl_coef)(&exp.loss.params).map_err(RunError::Other)?;
    let policy_loss = PolicyLoss {
        loss: bound,
        aggregation: exp
            .loss
            .aggregation
            .unwrap_or(registration.default_aggregation),
        temperature: exp.sampling.temperature,
        entropy_coef: exp.training.entropy_coef,
        mask_truncated: exp.advantages.mask_truncated,
    };
    // The frozen reference: the starting weights, without autodiff.
    let reference = (kl > 0.0).then(|| session.model.valid());

    let n = exp.sampling.n as usize;
    let groups_per_step = (exp.training.batch_size as usize / n).max(1);
    let sampling = sampling_params(&loaded);
    let greedy = greedy_params(&loaded);
    let mut order = DataOrder::new(
        session.dataset.records.len(),
        exp.dataset.shuffle_seed ^ exp.training.seed,
        exp.dataset.shuffle,
    );
    let mut optimizer = Optimizer::<B>::new(&exp.training);
    let checkpoints = Checkpoint::root(&session.run_dir, &exp.checkpoint.dir);
    let mut start = 0;
    if exp.checkpoint.resume != ResumeMode::Never {
        match Checkpoint::newest(&checkpoints) {
            Some(checkpoint) => {
                let (restored, state) = checkpoint.restore(&mut session, optimizer)?;
                optimizer = restored;
                order.restore(state.data);
                start = state.step;
                eprintln!(
                    "forge: resumed from {} (step {start})",
                    checkpoint.dir.display()
                );
            }
            None if exp.checkpoint.resume == ResumeMode::Always => {
                return Err(RunError::Other(format!(
                    "`checkpoint.resume: always` but there is no checkpoint in {}",
                    checkpoints.display()
                )));
            }
            None => {}
        }
    }
    let mut writer = MetricsWriter::open(
        &exp.metrics,
        &session.run_dir,
        CONSOLE.to_vec(),
        (start > 0).then_some(start),
    )
    .map_err(RunError::io(&session.run_dir))?;
    if !session.dataset.skipped.is_empty() {
        for s in &session.dataset.skipped {
            eprintln!(
                "forge: {}:{}: skipped: {}",
                session.dataset.path.display(),
                s.line,
                s.message
            );
        }
    }
    let eval_interval = exp.dataset.eval.as_ref().map_or(0, |e| e.interval);
    let run_eval = |session: &Session<B>,
                    step: u64,
                    writer: &mut MetricsWriter|
     -> Result<Option<f64>, RunError> {
        if session.eval.is_empty() {
            return Ok(None);
        }
        let model = session.model.valid();
        let greedy_result = session.evaluate(&model, &greedy)?;
        let sampled = session.evaluate(&model, &sampling)?;
        let mut m = StepMetrics::new("eval", step);
        m.set("eval/accuracy", greedy_result.accuracy)
            .set("eval/accuracy_sampled", sampled.accuracy)
            .set("eval/reward_mean", greedy_result.reward_mean)
            .set("eval/length_mean", greedy_result.mean_tokens)
            .set("eval/prompts", session.eval.len() as f64);
        writer.write(&m).map_err(RunError::io(&session.run_dir))?;
        Ok(Some(greedy_result.accuracy))
    };
    let first_accuracy = if start == 0 {
        run_eval(&session, 0, &mut writer)?
    } else {
        None
    };

    for step in start..exp.training.steps {
        let t_step = Instant::now();
        let mut metrics = StepMetrics::new("grpo", step + 1);
        // 1. Rollouts from the current weights (no copy: the generator reads the trainer's tensors).
        let policy = session.model.valid();
        let mut episodes: Vec<Episode> = Vec::new();
        let mut all_rewards: Vec<f32> = Vec::new();
        let mut per_reward: Vec<(String, Vec<f32>)> = Vec::new();
        let (mut panics, mut timeouts, mut dropped, mut truncated, mut lengths) =
            (0, 0, 0, 0usize, Vec::new());
        let (mut t_generate, mut t_reward) = (0.0, 0.0);
        let mut t_generate_parts = GenerateTiming::default();
        let mut attempts = 0;
        while episodes.len() / n < groups_per_step && attempts < 4 {
            attempts += 1;
            let wanted = groups_per_step - episodes.len() / n;
            let picked: Vec<usize> = (0..wanted).map(|_| order.next_index()).collect();
            let mut prompts = Vec::with_capacity(picked.len());
            for &i in &picked {
                prompts.push(
                    session
                        .prompts
                        .build(&session.dataset.records[i].fields, &session.tokenizer)?,
                );
            }
            let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
            let t = Instant::now();
            let request = GenerateRequest {
                prompts: &ids,
                n,
                params: &sampling,
                // Distinct streams per step and attempt, the same after a resume.
                seed_offset: (step * 4 + attempts - 1) * (groups_per_step * n) as u64,
                policy_version: step,
            };
            let (completions, timing) =
                generate_timed(&policy, &session.tokenizer, &request, &device)
                    .map_err(|e| RunError::Other(e.to_string()))?;
            t_generate += t.elapsed().as_secs_f64();
            t_generate_parts += timing;
            // 2. Rewards.
            let t = Instant::now();
            let mut items = Vec::new();
            for (g, group) in completions.iter().enumerate() {
                let record = &session.dataset.records[picked[g]].fields;
                for c in group {
                    items.push(ScoredCompletion {
                        prompt: prompts[g].text.clone(),
                        completion: c.text.clone(),
                        answer: session.answer_of(record),
                        sample: record.clone(),
                    });
                }
            }
            let report = session.scorer.score(&items);
            t_reward += t.elapsed().as_secs_f64();
            panics += report.panics;
            timeouts += report.timeouts;
            if per_reward.is_empty() {
                per_reward = report
                    .per_reward
                    .iter()
                    .map(|(k, _)| (k.clone(), Vec::new()))
                    .collect();
            }
            for (acc, (_, scores)) in per_reward.iter_mut().zip(&report.per_reward) {
                acc.1.extend(scores);
            }
            all_rewards.extend(&report.totals);
            // 3. Advantages per group; DAPO dynamic sampling drops groups without signal.
            for (g, group) in completions.into_iter().enumerate() {
                let rewards = &report.totals[g * n..(g + 1) * n];
                let equal = rewards.iter().all(|&r| r == rewards[0]);
                if exp.advantages.dynamic_sampling && equal {
                    dropped += 1;
                    continue;
                }
                let advantages =
                    group_advantages(rewards, exp.advantages.estimator, exp.advantages.eps);
                for (k, c) in group.into_iter().enumerate() {
                    lengths.push(c.token_ids.len() as f64);
                    let is_truncated = c.stop_reason == StopReason::Length;
                    truncated += usize::from(is_truncated);
                    episodes.push(Episode {
                        prompt_ids: c.prompt_ids,
                        completion_ids: c.token_ids,
                        generator_logprobs: c.logprobs,
                        ref_logprobs: None,
                        reward: rewards[k],
                        advantage: advantages[k],
                        truncated: is_truncated,
                        policy_version: c.policy_version,
                        group: episodes.len() / n,
                    });
                }
            }
            if !exp.advantages.dynamic_sampling {
                break;
            }
        }
        // 4. Reference log-probabilities for the KL term.
        let t = Instant::now();
        if let Some(reference) = &reference {
            for chunk in episodes.chunks_mut(64) {
                let lps = completion_logprobs(reference, chunk, policy_loss.temperature, &device);
                for (e, lp) in chunk.iter_mut().zip(lps) {
                    e.ref_logprobs = Some(lp);
                }
            }
        }
        let t_reference = t.elapsed().as_secs_f64();
        // 5. Train: micro-batches normalised over the whole batch.
        let t = Instant::now();
        let mut loss_value = 0.0;
        let mut weighted: Vec<(String, f64)> = Vec::new();
        let mut active_total = 0usize;
        let mut max_gap = 0.0f64;
        let outcome = if episodes.is_empty() {
            None
        } else {
            let normalizer = batch_normalizer(
                &episodes,
                exp.sampling.max_tokens as usize,
                policy_loss.mask_truncated,
            );
            let micro = episodes
                .len()
                .div_ceil(exp.training.gradient_accumulation_steps as usize)
                .max(1);
            let mut accumulator = GradientsAccumulator::new();
            for chunk in episodes.chunks(micro) {
                let (grads, stats) =
                    policy_gradients(&session.model, chunk, &policy_loss, normalizer, &device)
                        .map_err(|e| RunError::Other(e.to_string()))?;
                accumulator.accumulate(&session.model, grads);
                loss_value += stats.loss;
                max_gap = max_gap.max(stats.max_logprob_gap);
                for (k, v) in &stats.metrics {
                    match weighted.iter_mut().find(|(name, _)| name == k) {
                        Some(slot) => slot.1 += v * stats.active_tokens as f64,
                        None => weighted.push((k.clone(), v * stats.active_tokens as f64)),
                    }
                }
                active_total += stats.active_tokens;
            }
            let grads = accumulator.grads();
            let model = session.model.clone();
            let (model, outcome) = if loss_value.is_finite() {
                optimizer.step(model, grads)
            } else {
                optimizer.step_skipped(model)
            };
            session.model = model;
            Some(outcome)
        };
        let t_train = t.elapsed().as_secs_f64();

        // 6. Metrics.
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let rewards: Vec<f64> = all_rewards.iter().map(|&r| f64::from(r)).collect();
        let reward_mean = mean(&rewards);
        let reward_std = (mean(
            &rewards
                .iter()
                .map(|r| (r - reward_mean).powi(2))
                .collect::<Vec<_>>(),
        ))
        .sqrt();
        metrics
            .set("reward/mean", reward_mean)
            .set("reward/std", reward_std);
        for (name, scores) in &per_reward {
            let s: Vec<f64> = scores.iter().map(|&x| f64::from(x)).collect();
            metrics.set(&format!("reward/{name}/mean"), mean(&s));
        }
        let advantages: Vec<f64> = episodes.iter().map(|e| f64::from(e.advantage)).collect();
        metrics
            .set("advantage/mean", mean(&advantages))
            .set(
                "advantage/abs_mean",
                mean(&advantages.iter().map(|a| a.abs()).collect::<Vec<_>>()),
            )
            .set("loss/value", loss_value);
        for (k, v) in &weighted {
            metrics.set(
                k,
                if active_total > 0 {
                    v / active_total as f64
                } else {
                    0.0
                },
            );
        }
        metrics
            .set("loss/logprob_gap_max", max_gap)
            .set("response/length_mean", mean(&lengths))
            .set(
                "response/truncated_frac",
                if lengths.is_empty() {
                    0.0
                } else {
                    truncated as f64 / lengths.len() as f64
                },
            )
            .set("data/skipped_records", session.dataset.skipped.len() as f64)
            .set("rollout/dropped_groups", dropped as f64)
            .set("rollout/policy_age", 0.0)
            .set("reward/failures_panic", panics as f64)
            .set("reward/failures_timeout", timeouts as f64)
            .set("train/episodes", episodes.len() as f64)
            .set("train/tokens", active_total as f64)
            .set("time/generate_s", t_generate)
            .set("time/generate_model_s", t_generate_parts.model_s)
            .set("time/generate_logits_s", t_generate_parts.logits_s)
            .set("time/generate_sample_s", t_generate_parts.sample_s)
            .set("time/reward_s", t_reward)
            .set("time/reference_s", t_reference)
            .set("time/train_s", t_train)
            .set(
                "throughput/generate_tok_s",
                lengths.iter().sum::<f64>() / t_generate.max(1e-9),
            )
            .set(
                "throughput/train_tok_s",
                active_total as f64 / t_train.max(1e-9),
            );
        if let Some(o) = outcome {
            metrics
                .set("train/lr", o.lr)
                .set("train/grad_norm", o.grad_norm)
                .set("train/skipped", f64::from(u8::from(o.skipped)));
            if o.skipped {
                eprintln!(
                    "forge: step {}: non-finite loss or gradients; update skipped, weights kept",
                    step + 1
                );
            }
        }
        metrics.set("time/step_s", t_step.elapsed().as_secs_f64());
        if (step + 1) % exp.metrics.log_interval == 0 || step + 1 == exp.training.steps {
            writer
                .write(&metrics)
                .map_err(RunError::io(&session.run_dir))?;
        }
        if eval_interval > 0 && (step + 1) % eval_interval == 0 && step + 1 < exp.training.steps {
            run_eval(&session, step + 1, &mut writer)?;
        }
        let state = RunState {
            step: step + 1,
            data: order.position(),
        };
        Checkpoint::write_if_due(&checkpoints, &session, &optimizer, &state, &exp.checkpoint)?;
    }
    let last = run_eval(&session, exp.training.steps, &mut writer)?;
    let final_dir = session.run_dir.join("final");
    session.save_model(&final_dir)?;
    if let (Some(before), Some(after)) = (first_accuracy, last) {
        eprintln!(
            "forge: held-out accuracy (greedy, {} prompts): {:.1}% before GRPO -> {:.1}% after",
            session.eval.len(),
            before * 100.0,
            after * 100.0
        );
    }
    if let Some(path) = writer.jsonl_path() {
        eprintln!("forge: metrics in {}", path.display());
        super::draw_curves(path, &session.run_dir, &GRPO_CURVES);
    }
    eprintln!("forge: final model in {}", final_dir.display());
    Ok(final_dir)
}
