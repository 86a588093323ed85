//! A PPO-style loss whose clip range depends on the advantage's sign.

/// PPO clip with separate ranges for positive and negative advantages.
#[forge::loss(aggregation = "token_mean")]
pub fn asymmetric_ppo(
    logprob: f32,
    old_logprob: f32,
    advantage: f32,
    #[param(default = 0.28, min = 0.0, doc = "Clip range for positive advantages.")] clip_positive: f32,
    #[param(default = 0.2, min = 0.0, max = 1.0, doc = "Clip range for negative advantages.")] clip_negative: f32,
) -> f32 {
    let ratio = (logprob - old_logprob).exp();
    let eps = if advantage > 0.0 { clip_positive } else { clip_negative };
    -(ratio * advantage).min(ratio.clamp(1.0 - eps, 1.0 + eps) * advantage)
}
