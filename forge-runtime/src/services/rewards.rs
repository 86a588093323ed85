//! The reward workers: `services.reward.procs` threads sharing the configured rewards, each
//! completion routed to the least busy one, so scoring a batch takes the slowest worker's share
//! rather than the sum (rewards that run a checker or a sandbox are slow), and the completions of
//! one generator replica are scored while the others still sample. A reward that panics or runs
//! out of time scores its fallback there ([`crate::rl::RewardScorer`]); the worker goes on.

use std::sync::Arc;

use super::actor::{Reply, Service, ServiceError, wait_all};
use crate::rl::{CompletionScores, RewardScorer, ScoreReport, ScoredCompletion};

/// The reward worker threads.
#[derive(Debug, Clone)]
pub struct RewardWorkers {
    workers: Service<Arc<RewardScorer>>,
    scorer: Arc<RewardScorer>,
}

/// Completions sent to the workers, in order.
#[derive(Debug)]
pub struct PendingScores(Vec<Reply<CompletionScores>>);

impl RewardWorkers {
    /// `workers` threads (at least one) scoring with `scorer`.
    pub fn new(scorer: Arc<RewardScorer>, workers: usize) -> Self {
        let states = (0..workers.max(1)).map(|_| Arc::clone(&scorer)).collect();
        Self {
            workers: Service::spawn("reward", states),
            scorer,
        }
    }

    /// Sends every completion to a worker; [`Self::report`] gathers the scores.
    pub fn submit(&self, items: Vec<ScoredCompletion>) -> PendingScores {
        PendingScores(
            items
                .into_iter()
                .map(|item| self.workers.call_one(move |scorer| scorer.score_one(&item)))
                .collect(),
        )
    }

    /// The report of the completions sent, in the order they were sent (several submissions
    /// appended in order).
    pub fn report(&self, pending: Vec<PendingScores>) -> Result<ScoreReport, ServiceError> {
        let replies = pending.into_iter().flat_map(|p| p.0).collect();
        Ok(self.scorer.report(wait_all(replies)?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::RewardConfig;

    /// Four workers score what one thread does, in the same order; slow rewards overlap.
    #[test]
    fn workers_score_what_one_thread_does() {
        let configs: Vec<RewardConfig> = serde_json::from_value(serde_json::json!([
            {"name": "exact_match"},
            {"name": "math", "weight": 0.5}
        ]))
        .expect("configs");
        let scorer = Arc::new(RewardScorer::new(&configs).expect("bound"));
        let items: Vec<ScoredCompletion> = (0..40)
            .map(|i| ScoredCompletion {
                prompt: format!("{i}+1="),
                completion: if i % 3 == 0 {
                    format!("{}", i + 1)
                } else {
                    format!("#### {}.0", i + 1 + i % 2)
                },
                answer: format!("{}", i + 1),
                sample: Default::default(),
            })
            .collect();
        let want = scorer.score(&items);
        let workers = RewardWorkers::new(Arc::clone(&scorer), 4);
        let (first, second) = items.split_at(17);
        let pending = vec![
            workers.submit(first.to_vec()),
            workers.submit(second.to_vec()),
        ];
        let got = workers.report(pending).expect("scored");
        assert_eq!(got, want);
        assert!(want.totals.iter().any(|&t| t > 0.0) && want.totals.contains(&0.0));

        // Sleeping rewards: 8 completions of 50 ms on 4 workers take ~100 ms, not 400.
        let slow = Arc::new(RewardScorer::from_fn("nap", |_| {
            std::thread::sleep(Duration::from_millis(50));
            1.0
        }));
        let workers = RewardWorkers::new(slow, 4);
        let t = Instant::now();
        let report = workers
            .report(vec![workers.submit(items[..8].to_vec())])
            .expect("scored");
        assert_eq!(report.totals, vec![1.0; 8]);
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
}
