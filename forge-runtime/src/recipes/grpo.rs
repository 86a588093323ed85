//! The GRPO loop: sample groups, score them, compute group-relative advantages, train.

use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;

use super::checkpoint::{Checkpoint, RunState};
use super::placement::Placement;
use super::rollouts::{RolloutBatch, RolloutSources, make_batch};
use super::session::{RunError, Session};
use crate::config::{Experiment, Loaded, ResumeMode};
use crate::data::DataOrder;
use crate::generate::SamplingParams;
use crate::loss::registry;
use crate::metrics::{MetricsWriter, StepMetrics};
use crate::rl::{Episode, ReplayBuffer, Taken};
use crate::services::{DatasetService, Generator, Reference, RewardWorkers, Service, Trainer};
use crate::train::loss_backend::BoundPolicyLoss;
use crate::train::{Optimizer, PolicyLoss, StepOutcome, batch_normalizer, policy_gradients};

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

/// Runs GRPO as the experiment says. Returns the final model's directory.
pub fn run_grpo<B: super::RecipeBackend>(
    loaded: Loaded,
    placement: Placement<B::Device>,
) -> Result<std::path::PathBuf, RunError> {
    let device = placement.trainers[0].clone();
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
    let n = exp.sampling.n as usize;
    let groups_per_step = (exp.training.batch_size as usize / n).max(1);
    let sampling = sampling_params(&loaded);
    let greedy = greedy_params(&loaded);
    let mut order = DataOrder::new(
        session.dataset.records.len(),
        exp.dataset.shuffle_seed ^ exp.training.seed,
        exp.dataset.shuffle,
    );
    // The frozen reference: the starting weights (read before a checkpoint is restored), without
    // autodiff.
    let start_weights = (kl > 0.0).then(|| session.model.valid());
    let mut optimizer = Optimizer::<B>::new(&exp.training);
    let checkpoints = Checkpoint::root(&session.run_dir, &exp.checkpoint.dir);
    let mut start = 0;
    // Batches made ahead, by the step they are for (a checkpoint holds the next step's).
    let allowed = u64::from(exp.replay_buffer.max_policy_age);
    let mut replay = ReplayBuffer::new(allowed);
    if exp.checkpoint.resume != ResumeMode::Never {
        match Checkpoint::newest(&checkpoints) {
            Some(checkpoint) => {
                let (restored, state) = checkpoint.restore(&mut session, optimizer)?;
                optimizer = restored;
                order.restore(state.data);
                start = state.step;
                if let Some(batch) = state.pending_batch.filter(|batch| batch.step == start) {
                    replay.add(batch.step, batch.policy_version, batch);
                }
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

    // The services (crate::services), each replica a thread of its own on its device.
    // Trainer: rank 0 trains the session's model (restored above), the others copies of it.
    let trainer = Trainer::new(session.model.clone(), optimizer, &placement.trainers)?;
    let generator = Generator::<B::InnerBackend>::new(
        &placement.generators,
        &device,
        Arc::clone(&session.tokenizer),
    );
    let reference = match start_weights {
        Some(weights) => Some(Reference::new(weights, &device, &placement.reference)?),
        None => None,
    };
    let sources = RolloutSources {
        dataset: DatasetService::new(
            Arc::clone(&session.dataset),
            Arc::clone(&session.prompts),
            Arc::clone(&session.tokenizer),
            order,
        ),
        generator: generator.clone(),
        rewards: RewardWorkers::new(
            Arc::clone(&session.scorer),
            exp.services.reward.procs as usize,
        ),
        reference,
        sampling: Arc::new(sampling.clone()),
        advantages: exp.advantages.clone(),
        answer_field: exp.dataset.fields.answer.clone(),
        n,
        groups_per_step,
        temperature: policy_loss.temperature,
    };
    let dataset = sources.dataset.clone();
    let replay = Service::spawn("replay_buffer", vec![replay]);
    // The rollout worker makes a step's batch and adds it to the replay buffer.
    let rollouts = Service::spawn("rollouts", vec![(sources, replay.clone())]);
    let make = move |step: u64, version: u64| {
        rollouts.call_one(move |(sources, replay)| {
            let batch = make_batch(sources, step, version)?;
            replay
                .call_one(move |b| b.add(step, version, batch))
                .wait()?;
            Ok::<(), RunError>(())
        })
    };
    let policy_loss = Arc::new(policy_loss);
    let first_accuracy = if start == 0 {
        run_eval(&session, 0, &mut writer)?
    } else {
        None
    };

    // Off by one: while the trainer trains on a step's batch, the rollout worker samples the
    // next one with the weights the generator holds (refreshed every `sync_interval` steps).
    let pipelined = exp.replay_buffer.max_policy_age >= 1;
    let sync_interval = u64::from(exp.training.sync_interval.max(1));
    // The version of the weights the generator's replicas hold, and how they get rank 0's
    // (shared on its device, copied device to device elsewhere): the seconds copying took.
    let mut generator_version: Option<u64> = None;
    let sync_generator = |version: u64| -> Result<f64, RunError> {
        generator.update_weights(version, trainer.model()?.valid(), |device| {
            Ok::<_, RunError>(trainer.copy_weights_to(device)?)
        })
    };
    for step in start..exp.training.steps {
        let t_step = Instant::now();
        let mut metrics = StepMetrics::new("grpo", step + 1);
        let mut weight_sync_s = 0.0;
        // 1-4. The step's batch: made ahead during the previous step, or now with the current
        // weights (the first step, strictly on-policy runs, a batch evicted as too old).
        let batch = match replay.call_one(move |b| b.take(step)).wait()? {
            Taken::Ready(batch) => batch,
            taken => {
                if let Taken::Evicted { policy_version } = taken {
                    eprintln!(
                        "forge: the batch made ahead for step {} was sampled {} policy versions ago, more than `replay_buffer.max_policy_age` ({allowed}) allows: evicted, sampling it again",
                        step + 1,
                        step - policy_version
                    );
                }
                if generator_version != Some(step) {
                    weight_sync_s += sync_generator(step)?;
                    generator_version = Some(step);
                }
                make(step, step).wait()??;
                match replay.call_one(move |b| b.take(step)).wait()? {
                    Taken::Ready(batch) => batch,
                    _ => {
                        return Err(RunError::Other(format!(
                            "the batch of step {} was not made",
                            step + 1
                        )));
                    }
                }
            }
        };
        let ahead = pipelined && step + 1 < exp.training.steps;
        if ahead
            && (generator_version.is_none() || step % sync_interval == 0)
            && generator_version != Some(step)
        {
            // On the trainer's device, no copy: the generator shares the trainer's tensors,
            // which the optimiser replaces rather than overwrites while the generator holds them.
            weight_sync_s += sync_generator(step)?;
            generator_version = Some(step);
        }
        // 5. Train, with the next batch being made meanwhile.
        let t = Instant::now();
        let next = match (ahead, generator_version) {
            (true, Some(version)) => Some(make(step + 1, version)),
            _ => None,
        };
        let trained = train_on_batch(&trainer, &batch.episodes, &policy_loss, &exp);
        let t_wait = Instant::now();
        let next = next.map(|reply| reply.wait());
        let t_wait = t_wait.elapsed().as_secs_f64();
        let trained = trained?;
        session.model = trainer.model()?;
        if let Some(made) = next {
            made??;
        }
        let t_train = t.elapsed().as_secs_f64() - t_wait;
        let RolloutBatch {
            episodes,
            rewards: all_rewards,
            per_reward,
            reward_panics: panics,
            reward_timeouts: timeouts,
            dropped_groups: dropped,
            truncated,
            lengths,
            timing,
            policy_version,
            ..
        } = batch;
        let TrainedBatch {
            loss_value,
            weighted,
            active_total,
            max_gap,
            outcome,
        } = trained;

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
            .set("rollout/policy_age", (step - policy_version) as f64)
            .set("reward/failures_panic", panics as f64)
            .set("reward/failures_timeout", timeouts as f64)
            .set("train/episodes", episodes.len() as f64)
            .set("train/tokens", active_total as f64)
            .set("time/generate_s", timing.generate_s)
            .set("time/generate_model_s", timing.generate_model_s)
            .set("time/generate_logits_s", timing.generate_logits_s)
            .set("time/generate_sample_s", timing.generate_sample_s)
            .set("time/reward_s", timing.reward_s)
            .set("time/reference_s", timing.reference_s)
            .set("time/rollout_wait_s", t_wait)
            .set("time/weight_sync_s", weight_sync_s)
            .set("time/train_s", t_train)
            .set(
                "throughput/generate_tok_s",
                lengths.iter().sum::<f64>() / timing.generate_s.max(1e-9),
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
        if Checkpoint::due(step + 1, &exp.checkpoint) {
            let state = RunState {
                step: step + 1,
                data: dataset.position()?,
                pending_batch: replay.call_one(move |b| b.peek(step + 1).cloned()).wait()?,
            };
            Checkpoint::write(
                &checkpoints,
                &session,
                |path| trainer.save_optimizer(path),
                &state,
                exp.checkpoint.keep,
            )?;
        }
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

/// What training on one batch gave.
struct TrainedBatch {
    /// The batch loss (micro-batch shares summed).
    loss_value: f64,
    /// `loss/...` metrics weighted by each micro-batch's active tokens.
    weighted: Vec<(String, f64)>,
    /// Tokens trained on.
    active_total: usize,
    /// Largest trainer/generator logprob gap.
    max_gap: f64,
    /// The optimiser step, unless the batch was empty.
    outcome: Option<StepOutcome>,
}

/// One optimiser step on `episodes`: micro-batches normalised over the whole batch, dealt out
/// to the trainer's ranks, gradients summed, the step skipped (weights kept) if the loss is not
/// finite.
fn train_on_batch<B: super::RecipeBackend>(
    trainer: &Trainer<B>,
    episodes: &[Episode],
    policy_loss: &Arc<PolicyLoss>,
    exp: &Experiment,
) -> Result<TrainedBatch, RunError> {
    let mut trained = TrainedBatch {
        loss_value: 0.0,
        weighted: Vec::new(),
        active_total: 0,
        max_gap: 0.0,
        outcome: None,
    };
    if episodes.is_empty() {
        return Ok(trained);
    }
    let normalizer = batch_normalizer(
        episodes,
        exp.sampling.max_tokens as usize,
        policy_loss.mask_truncated,
    );
    // `gradient_accumulation_steps` micro-batches per rank.
    let micro = episodes
        .len()
        .div_ceil(exp.training.gradient_accumulation_steps as usize * trainer.ranks())
        .max(1);
    let chunks: Vec<Vec<Episode>> = episodes.chunks(micro).map(<[Episode]>::to_vec).collect();
    let policy_loss = Arc::clone(policy_loss);
    let (stats, outcome) = trainer.step(
        chunks,
        move |model, chunk: &Vec<Episode>, device| {
            policy_gradients(model, chunk, &policy_loss, normalizer, device)
                .map_err(|e| RunError::Other(e.to_string()))
        },
        |stats| stats.iter().map(|s| s.loss).sum::<f64>().is_finite(),
    )?;
    for stats in stats {
        trained.loss_value += stats.loss;
        trained.max_gap = trained.max_gap.max(stats.max_logprob_gap);
        for (k, v) in &stats.metrics {
            match trained.weighted.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 += v * stats.active_tokens as f64,
                None => trained
                    .weighted
                    .push((k.clone(), v * stats.active_tokens as f64)),
            }
        }
        trained.active_total += stats.active_tokens;
    }
    trained.outcome = Some(outcome);
    Ok(trained)
}
