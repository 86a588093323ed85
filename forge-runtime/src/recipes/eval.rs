//! Held-out evaluation: generate for prompts never trained on, score with the run's rewards.

use crate::data::{DataError, Prompt, PromptBuilder, Record, field_text};
use crate::generate::{GenerateError, GenerateRequest, SamplingParams, generate};
use crate::model::CausalLm;
use crate::reward::Sample;
use crate::rl::{RewardScorer, ScoredCompletion};
use crate::tokenizer::Tokenizer;

/// One held-out prompt.
#[derive(Debug, Clone)]
pub struct EvalItem {
    /// The prompt.
    pub prompt: Prompt,
    /// Its reference answer.
    pub answer: String,
    /// The record's fields.
    pub fields: Sample,
}

impl EvalItem {
    /// The item of a record.
    pub fn new(
        record: &Record,
        prompts: &PromptBuilder,
        tokenizer: &Tokenizer,
        answer_field: &str,
    ) -> Result<Self, DataError> {
        Ok(Self {
            prompt: prompts.build(&record.fields, tokenizer)?,
            answer: field_text(&record.fields, answer_field),
            fields: record.fields.clone(),
        })
    }
}

/// Results over the held-out prompts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// Fraction of completions the first reward scores at least 1 (correct, for a 0/1
    /// correctness reward listed first).
    pub accuracy: f64,
    /// Mean total reward.
    pub reward_mean: f64,
    /// Mean completion length in tokens.
    pub mean_tokens: f64,
}

/// One completion per item, drawn with `params` (temperature 0: greedy).
pub fn evaluate<B: crate::generate::DecodeBackend>(
    model: &CausalLm<B>,
    tokenizer: &Tokenizer,
    items: &[EvalItem],
    scorer: &RewardScorer,
    params: &SamplingParams,
    device: &B::Device,
) -> Result<EvalResult, GenerateError> {
    if items.is_empty() {
        return Ok(EvalResult {
            accuracy: 0.0,
            reward_mean: 0.0,
            mean_tokens: 0.0,
        });
    }
    let prompts: Vec<Vec<u32>> = items.iter().map(|i| i.prompt.ids.clone()).collect();
    let mut completions = Vec::with_capacity(items.len());
    // Chunks bound the decode batch (and its KV cache).
    const CHUNK: usize = 256;
    for (c, chunk) in prompts.chunks(CHUNK).enumerate() {
        let request = GenerateRequest {
            prompts: chunk,
            n: 1,
            params,
            seed_offset: (c * CHUNK) as u64,
            policy_version: 0,
        };
        completions.extend(
            generate(model, tokenizer, &request, device)?
                .into_iter()
                .flatten(),
        );
    }
    let scored: Vec<ScoredCompletion> = items
        .iter()
        .zip(&completions)
        .map(|(item, c)| ScoredCompletion {
            prompt: item.prompt.text.clone(),
            completion: c.text.clone(),
            answer: item.answer.clone(),
            sample: item.fields.clone(),
        })
        .collect();
    let report = scorer.score(&scored);
    let n = items.len() as f64;
    let accuracy = report.per_reward.first().map_or(0.0, |(_, s)| {
        s.iter().filter(|&&x| x >= 1.0).count() as f64 / n
    });
    Ok(EvalResult {
        accuracy,
        reward_mean: report.totals.iter().map(|&t| f64::from(t)).sum::<f64>() / n,
        mean_tokens: completions
            .iter()
            .map(|c| c.token_ids.len() as f64)
            .sum::<f64>()
            / n,
    })
}
