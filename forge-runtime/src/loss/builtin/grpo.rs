//! GRPO with Dr. GRPO aggregation (Liu et al., 2503.20783) and a k3 KL penalty.
//!
//! Per token, with ratio `r = exp(logprob - old_logprob)` and advantage `A`:
//! `-min(r A, clip(r, 1 - clip_low, 1 + clip_high) A) + beta * k3(logprob, ref_logprob)`,
//! summed over tokens and divided by the fixed horizon (sequences x `sampling.max_tokens`), which
//! removes GRPO's length bias.

/// GRPO: clipped importance-ratio policy gradient with a k3 KL penalty (Dr. GRPO aggregation).
#[crate::loss(aggregation = "fixed_horizon", kl = beta)]
pub fn grpo(
    logprob: f32,
    old_logprob: f32,
    ref_logprob: f32,
    advantage: f32,
    #[param(
        default = 0.2,
        min = 0.0,
        max = 1.0,
        doc = "Lower clip range ε_low: the ratio is clipped below at 1 - ε_low."
    )]
    clip_low: f32,
    #[param(
        default = 0.28,
        min = 0.0,
        doc = "Upper clip range ε_high: the ratio is clipped above at 1 + ε_high."
    )]
    clip_high: f32,
    #[param(
        default = 0.1,
        min = 0.0,
        doc = "KL penalty coefficient β; above 0 the experiment needs `services.ref_model`."
    )]
    beta: f32,
) -> f32 {
    let ratio = (logprob - old_logprob).exp();
    let clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high);
    let pg = -(ratio * advantage).min(clipped * advantage);
    pg + beta * k3(logprob, ref_logprob)
}
