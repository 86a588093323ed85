//! Custom losses: per-token functions of `logprob` (the only input with a gradient),
//! `old_logprob`, `ref_logprob`, `advantage` and `seq_log_ratio`, plus `#[param]`s set in YAML.

/// REINFORCE with a truncated, stop-gradient importance weight.
#[forge::loss(aggregation = "token_mean")]
pub fn clipped_reinforce(
    logprob: f32,
    old_logprob: f32,
    advantage: f32,
    #[param(default = 2.0, min = 1.0, doc = "Largest importance weight.")] max_weight: f32,
) -> f32 {
    let weight = stop_gradient((logprob - old_logprob).exp().min(max_weight));
    -weight * advantage * logprob
}
