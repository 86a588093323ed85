//! Supervised fine-tuning: masked cross-entropy on prompt/completion pairs.

use std::time::Instant;

use burn::module::AutodiffModule;

use super::checkpoint::{Checkpoint, RunState};
use super::grpo::greedy_params;
use super::session::{RunError, Session};
use crate::config::{Loaded, ResumeMode};
use crate::data::{DataOrder, field_text};
use crate::metrics::{MetricsWriter, StepMetrics};
use crate::services::Trainer;
use crate::train::{Optimizer, SftExample, sft_gradients};

const CONSOLE: [&str; 5] = [
    "loss/value",
    "eval/accuracy",
    "train/lr",
    "train/grad_norm",
    "time/step_s",
];

/// Runs SFT as the experiment says, on the trainer's devices (one data-parallel rank each, rank
/// 0 first). Returns the final model's directory.
pub fn run_sft<B: super::RecipeBackend>(
    loaded: Loaded,
    devices: &[B::Device],
) -> Result<std::path::PathBuf, RunError> {
    let device = devices
        .first()
        .cloned()
        .ok_or_else(|| RunError::Other("the trainer has no device".into()))?;
    let exp = loaded.experiment.clone();
    let fields = &exp.dataset.fields;
    let sft = exp.sft.clone().unwrap_or_default();
    let mut session = Session::<B>::open(
        loaded,
        device.clone(),
        &[fields.prompt.as_str(), fields.completion.as_str()],
    )?;
    let eos = session.tokenizer.eos_token_ids().first().copied();
    let mut examples = Vec::with_capacity(session.dataset.records.len());
    for record in &session.dataset.records {
        let prompt = session.prompts.build(&record.fields, &session.tokenizer)?;
        let mut completion = session
            .tokenizer
            .encode(&field_text(&record.fields, &fields.completion), false)?;
        // The model learns to stop: the completion ends with the end-of-sequence token.
        completion.extend(eos);
        let (prompt_ids, completion_ids) = if sft.mask_prompt {
            (prompt.ids, completion)
        } else {
            // Every token after the first is a target.
            let mut all = prompt.ids;
            all.extend(completion);
            let rest = all.split_off(1.min(all.len()));
            (all, rest)
        };
        let max = exp.training.seq_len as usize;
        if prompt_ids.len() + completion_ids.len() > max {
            eprintln!(
                "forge: {}:{}: longer than training.seq_len ({max}); skipped",
                session.dataset.path.display(),
                record.line
            );
            continue;
        }
        examples.push(SftExample {
            prompt_ids,
            completion_ids,
        });
    }
    if examples.is_empty() {
        return Err(RunError::Other(
            "no SFT example fits training.seq_len".into(),
        ));
    }
    let batch = exp.training.batch_size as usize;
    let epoch_steps = examples.len().div_ceil(batch) as u64;
    let steps = exp.training.steps.min(epoch_steps * u64::from(sft.epochs));
    let mut order = DataOrder::new(
        examples.len(),
        exp.dataset.shuffle_seed ^ exp.training.seed,
        exp.dataset.shuffle,
    );
    let mut optimizer = Optimizer::<B>::new(&exp.training);
    let checkpoints = Checkpoint::root(&session.run_dir, &exp.checkpoint.dir);
    let mut start = 0;
    if exp.checkpoint.resume != ResumeMode::Never
        && let Some(checkpoint) = Checkpoint::newest(&checkpoints)
    {
        let (restored, state) = checkpoint.restore(&mut session, optimizer)?;
        optimizer = restored;
        order.restore(state.data);
        start = state.step;
    }
    let trainer = Trainer::new(session.model.clone(), optimizer, devices)?;
    let mut writer = MetricsWriter::open(
        &exp.metrics,
        &session.run_dir,
        CONSOLE.to_vec(),
        (start > 0).then_some(start),
    )
    .map_err(RunError::io(&session.run_dir))?;
    let greedy = greedy_params(&session.loaded);
    let eval_interval = exp.dataset.eval.as_ref().map_or(0, |e| e.interval);
    // Held-out accuracy, or None without eval data or rewards.
    let run_eval = |session: &Session<B>,
                    step: u64,
                    writer: &mut MetricsWriter|
     -> Result<Option<f64>, RunError> {
        if session.eval.is_empty() || session.scorer.names().is_empty() {
            return Ok(None);
        }
        let r = session.evaluate(&session.model.valid(), &greedy)?;
        let mut m = StepMetrics::new("eval", step);
        m.set("eval/accuracy", r.accuracy)
            .set("eval/reward_mean", r.reward_mean)
            .set("eval/length_mean", r.mean_tokens);
        writer.write(&m).map_err(RunError::io(&session.run_dir))?;
        Ok(Some(r.accuracy))
    };
    let mut last = start;
    let mut evaluated_at = None;
    for step in start..steps {
        let t = Instant::now();
        let picked: Vec<&SftExample> = (0..batch).map(|_| &examples[order.next_index()]).collect();
        let total_tokens: usize = picked.iter().map(|e| e.completion_ids.len()).sum();
        // `gradient_accumulation_steps` micro-batches per rank.
        let micro = picked
            .len()
            .div_ceil(exp.training.gradient_accumulation_steps as usize * trainer.ranks())
            .max(1);
        let chunks: Vec<Vec<SftExample>> = picked
            .chunks(micro)
            .map(|chunk| chunk.iter().map(|e| (*e).clone()).collect())
            .collect();
        let (parts, outcome) = trainer.step(
            chunks,
            move |model, chunk: &Vec<SftExample>, device| {
                sft_gradients(model, chunk, total_tokens, device)
                    .map_err(|e| RunError::Other(format!("the SFT loss: {e}")))
            },
            |parts| parts.iter().sum::<f64>().is_finite(),
        )?;
        let loss: f64 = parts.iter().sum();
        session.model = trainer.model()?;
        let mut m = StepMetrics::new("sft", step + 1);
        m.set("loss/value", loss)
            .set("train/lr", outcome.lr)
            .set("train/grad_norm", outcome.grad_norm)
            .set("train/skipped", f64::from(u8::from(outcome.skipped)))
            .set("train/tokens", total_tokens as f64)
            .set("time/step_s", t.elapsed().as_secs_f64());
        if (step + 1) % exp.metrics.log_interval == 0 || step + 1 == steps {
            writer.write(&m).map_err(RunError::io(&session.run_dir))?;
        }
        last = step + 1;
        let state = RunState {
            step: step + 1,
            data: order.position(),
            pending_batch: None,
        };
        Checkpoint::write_if_due(
            &checkpoints,
            &session,
            |path| trainer.save_optimizer(path),
            &state,
            &exp.checkpoint,
        )?;
        if eval_interval > 0 && (step + 1) % eval_interval == 0 && step + 1 < steps {
            let accuracy = run_eval(&session, step + 1, &mut writer)?;
            evaluated_at = Some(step + 1);
            if let (Some(accuracy), Some(target)) = (accuracy, sft.stop_at_accuracy)
                && accuracy >= target
            {
                eprintln!(
                    "forge: held-out accuracy {:.1}% reached `sft.stop_at_accuracy` ({:.1}%) at step {}; stopping",
                    accuracy * 100.0,
                    target * 100.0,
                    step + 1
                );
                break;
            }
        }
    }
    if evaluated_at != Some(last) {
        run_eval(&session, last, &mut writer)?;
    }
    let final_dir = session.run_dir.join("final");
    session.save_model(&final_dir)?;
    if let Some(path) = writer.jsonl_path() {
        super::draw_curves(
            path,
            &session.run_dir,
            &["loss/value", "eval/accuracy", "train/lr", "train/grad_norm"],
        );
    }
    eprintln!("forge: final model in {}", final_dir.display());
    Ok(final_dir)
}
