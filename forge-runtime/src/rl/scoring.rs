//! Scoring completions with the configured rewards. A reward that panics or runs past its time
//! limit scores its fallback; the event is counted and training goes on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use crate::config::RewardConfig;
use crate::reward::{RewardFn, RewardInput, Sample, registry};

/// One completion to score.
#[derive(Debug, Clone)]
pub struct ScoredCompletion {
    /// The user prompt.
    pub prompt: String,
    /// The completion text.
    pub completion: String,
    /// The reference answer.
    pub answer: String,
    /// The record's fields.
    pub sample: Sample,
}

/// Per-reward results of one batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreReport {
    /// Weighted sum per completion.
    pub totals: Vec<f32>,
    /// Per reward (in config order): its name and its raw score per completion.
    pub per_reward: Vec<(String, Vec<f32>)>,
    /// Calls that panicked.
    pub panics: usize,
    /// Calls that ran past their time limit.
    pub timeouts: usize,
}

struct BoundReward {
    name: String,
    weight: f32,
    fallback: f32,
    timeout: Option<Duration>,
    function: Arc<dyn RewardFn>,
}

/// The configured rewards, bound to their parameters.
pub struct RewardScorer {
    rewards: Vec<BoundReward>,
}

impl std::fmt::Debug for RewardScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.rewards.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("RewardScorer")
            .field("rewards", &names)
            .finish()
    }
}

impl RewardScorer {
    /// Binds each configured reward (by registered name) to its parameters.
    pub fn new(configs: &[RewardConfig]) -> Result<Self, String> {
        let mut rewards = Vec::with_capacity(configs.len());
        for c in configs {
            let registration = registry::find(&c.name)
                .ok_or_else(|| format!("reward `{}` is not registered in this binary", c.name))?;
            let function =
                (registration.build)(&c.params).map_err(|e| format!("reward `{}`: {e}", c.name))?;
            rewards.push(BoundReward {
                name: c.name.clone(),
                weight: c.weight as f32,
                fallback: c.fallback as f32,
                timeout: (c.timeout_s > 0.0).then(|| Duration::from_secs_f64(c.timeout_s)),
                function: Arc::from(function),
            });
        }
        Ok(Self { rewards })
    }

    /// One reward of weight 1, fallback 0 and no time limit: `f` of the completion text.
    #[cfg(test)]
    pub(crate) fn from_fn(name: &str, f: impl Fn(&str) -> f32 + Send + Sync + 'static) -> Self {
        struct Closure<F>(F);
        impl<F: Fn(&str) -> f32 + Send + Sync> RewardFn for Closure<F> {
            fn score(&self, input: &RewardInput<'_>) -> f32 {
                (self.0)(input.completion)
            }
        }
        Self {
            rewards: vec![BoundReward {
                name: name.to_string(),
                weight: 1.0,
                fallback: 0.0,
                timeout: None,
                function: Arc::new(Closure(f)),
            }],
        }
    }

    /// Names of the rewards, in config order.
    pub fn names(&self) -> Vec<&str> {
        self.rewards.iter().map(|r| r.name.as_str()).collect()
    }

    /// Scores every completion with every reward, one after the other (the reward workers
    /// service, [`crate::services::RewardWorkers`], spreads the completions over threads).
    pub fn score(&self, items: &[ScoredCompletion]) -> ScoreReport {
        let scores = items.iter().map(|item| self.score_one(item)).collect();
        self.report(scores)
    }

    /// One completion's score under every reward, in config order.
    pub fn score_one(&self, item: &ScoredCompletion) -> CompletionScores {
        let mut scores = CompletionScores::default();
        for reward in &self.rewards {
            let (score, outcome) = call(reward, item);
            match outcome {
                Outcome::Ok => {}
                Outcome::Panicked => scores.panics += 1,
                Outcome::TimedOut => scores.timeouts += 1,
            }
            scores.total += reward.weight * score;
            scores.per_reward.push(score);
        }
        scores
    }

    /// The report of a batch from its completions' scores, in order.
    pub fn report(&self, scores: Vec<CompletionScores>) -> ScoreReport {
        let mut report = ScoreReport {
            totals: Vec::with_capacity(scores.len()),
            per_reward: self
                .rewards
                .iter()
                .map(|r| (r.name.clone(), Vec::with_capacity(scores.len())))
                .collect(),
            ..Default::default()
        };
        for s in scores {
            report.totals.push(s.total);
            report.panics += s.panics;
            report.timeouts += s.timeouts;
            for ((_, column), score) in report.per_reward.iter_mut().zip(s.per_reward) {
                column.push(score);
            }
        }
        report
    }
}

/// One completion's scores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompletionScores {
    /// Weighted sum over the rewards.
    pub total: f32,
    /// Each reward's raw score, in config order.
    pub per_reward: Vec<f32>,
    /// Rewards that panicked (or scored NaN/infinity) on it.
    pub panics: usize,
    /// Rewards that ran out of time on it.
    pub timeouts: usize,
}

enum Outcome {
    Ok,
    Panicked,
    TimedOut,
}

fn call(reward: &BoundReward, item: &ScoredCompletion) -> (f32, Outcome) {
    let run = |function: &dyn RewardFn, item: &ScoredCompletion| {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            function.score(&RewardInput {
                prompt: &item.prompt,
                completion: &item.completion,
                answer: &item.answer,
                sample: &item.sample,
            })
        }))
    };
    let result = match reward.timeout {
        None => run(reward.function.as_ref(), item),
        Some(limit) => {
            // A thread per call, so a reward stuck in a loop can be abandoned (it cannot be
            // killed; it finishes in the background or dies with the process).
            let (tx, rx) = mpsc::channel();
            let function = Arc::clone(&reward.function);
            let owned = item.clone();
            std::thread::spawn(move || {
                let _ = tx.send(run(function.as_ref(), &owned));
            });
            match rx.recv_timeout(limit) {
                Ok(result) => result,
                Err(_) => return (reward.fallback, Outcome::TimedOut),
            }
        }
    };
    match result {
        Ok(score) if score.is_finite() => (score, Outcome::Ok),
        // A NaN or infinite score is treated like a failure: it would poison the advantages.
        Ok(_) | Err(_) => (reward.fallback, Outcome::Panicked),
    }
}
