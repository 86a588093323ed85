//! GSPO (Zheng et al., 2507.18071): the importance ratio is the sequence's length-normalised
//! likelihood ratio `s = exp(mean_t(logprob - old_logprob))`, clipped per sequence. Its gradient
//! reaches every token of the sequence through `seq_log_ratio`.

/// GSPO: sequence-level clipped importance ratio, sequence-mean aggregation.
#[crate::loss(aggregation = "sequence_mean")]
pub fn gspo(
    logprob: f32,
    seq_log_ratio: f32,
    advantage: f32,
    #[param(
        default = 0.2,
        min = 0.0,
        max = 1.0,
        doc = "Lower clip range ε_low of the sequence ratio."
    )]
    clip_low: f32,
    #[param(
        default = 0.2,
        min = 0.0,
        doc = "Upper clip range ε_high of the sequence ratio."
    )]
    clip_high: f32,
) -> f32 {
    let ratio = seq_log_ratio.exp();
    let clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high);
    -(ratio * advantage).min(clipped * advantage)
}
