//! DAPO (Yu et al., 2503.14476): decoupled clip ranges (clip-higher), token-level aggregation, no
//! KL term; with the dual clip of Ye et al. bounding the loss of negative-advantage tokens whose
//! ratio has grown large.

/// DAPO: clip-higher policy gradient with dual clip, token-mean aggregation, no KL.
#[crate::loss(aggregation = "token_mean")]
pub fn dapo(
    logprob: f32,
    old_logprob: f32,
    advantage: f32,
    #[param(default = 0.2, min = 0.0, max = 1.0, doc = "Lower clip range ε_low.")] clip_low: f32,
    #[param(
        default = 0.28,
        min = 0.0,
        doc = "Upper clip range ε_high (clip-higher)."
    )]
    clip_high: f32,
    #[param(
        default = 3.0,
        min = 1.0,
        doc = "Dual-clip bound c: for negative advantages the loss is at most -c·A."
    )]
    dual_clip_c: f32,
) -> f32 {
    let ratio = (logprob - old_logprob).exp();
    let clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high);
    let pg = -(ratio * advantage).min(clipped * advantage);
    if advantage < 0.0 {
        pg.min(-dual_clip_c * advantage)
    } else {
        pg
    }
}
