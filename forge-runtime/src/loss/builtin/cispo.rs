//! CISPO (MiniMax-M1, 2506.13585): clip the importance-sampling weight, not the update. The
//! clipped weight is a constant (stop-gradient), so every token keeps a gradient
//! `-sg(clip(r)) A` through its logprob, including the rare tokens PPO clipping would drop.

/// CISPO: stop-gradient clipped importance weight times advantage times logprob.
#[crate::loss(aggregation = "token_mean")]
pub fn cispo(
    logprob: f32,
    old_logprob: f32,
    advantage: f32,
    #[param(
        default = 1.0,
        min = 0.0,
        max = 1.0,
        doc = "Lower clip range ε_low of the IS weight (1.0: no lower bound)."
    )]
    clip_low: f32,
    #[param(
        default = 4.0,
        min = 0.0,
        doc = "Upper clip range ε_high of the IS weight: clipped above at 1 + ε_high."
    )]
    clip_high: f32,
) -> f32 {
    let weight = stop_gradient(
        (logprob - old_logprob)
            .exp()
            .clamp(1.0 - clip_low, 1.0 + clip_high),
    );
    -weight * advantage * logprob
}
