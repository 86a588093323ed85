//! A custom loss and reward compile, register, and compute what their bodies say.

/// Clipped policy gradient with a k2 penalty.
#[forge::loss(aggregation = "sequence_mean", kl = beta)]
pub fn clipped_k2(
    logprob: f32,
    old_logprob: f32,
    ref_logprob: f32,
    advantage: f32,
    #[param(default = 0.2, min = 0.0, max = 1.0)] clip: f32,
    #[param(default = 0.05)] beta: f32,
) -> f32 {
    let ratio = (logprob - old_logprob).exp();
    let pg = if advantage >= 0.0 { -(ratio.min(1.0 + clip)) * advantage } else { -(ratio.max(1.0 - clip)) * advantage };
    pg + beta * k2(logprob, ref_logprob)
}

/// Rewards completions mentioning the answer.
#[forge::reward(name = "mentions")]
pub fn mentions_answer(completion: &str, answer: &str, #[param(default = 0.5)] partial: f32) -> f32 {
    if completion.trim() == answer.trim() { 1.0 } else if completion.contains(answer.trim()) { partial } else { 0.0 }
}

fn main() {
    let loss = forge::loss::registry::find("clipped_k2").expect("registered");
    assert!(!loss.builtin);
    assert_eq!(loss.default_aggregation, forge::config::Aggregation::SequenceMean);
    let params = serde_json::Map::new();
    assert!(((loss.kl_coef)(&params).expect("defaults") - 0.05).abs() < 1e-7);

    let x = forge::loss::TokenInputs { logprob: -1.0, old_logprob: -1.1, ref_logprob: -1.3, advantage: 0.8, seq_log_ratio: 0.0 };
    let p = clipped_k2::Params::default();
    let g = clipped_k2::value_and_grad(&x, &p);
    assert!((g.value - clipped_k2::reference(&x, &p)).abs() < 1e-12);

    let reward = forge::reward::registry::find("mentions").expect("registered");
    let scorer = (reward.build)(&serde_json::Map::new()).expect("defaults");
    let sample = serde_json::Map::new();
    let input = forge::reward::RewardInput { prompt: "", completion: "it is 42.", answer: "42", sample: &sample };
    assert_eq!(scorer.score(&input), 0.5);
}
