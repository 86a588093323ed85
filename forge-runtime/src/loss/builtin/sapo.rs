//! SAPO (2511.20347): a soft, temperature-controlled gate replaces the hard clip. With
//! `f(r) = σ(τ (r - 1)) · 4 / τ`, the per-token objective is `f(r) A`; its gradient weight
//! `4 σ(1 - σ)` is 1 at `r = 1` and decays smoothly away from it, faster for negative advantages
//! (`tau_neg > tau_pos`).

/// SAPO: sigmoid-gated policy gradient with asymmetric temperatures, sequence-mean aggregation.
#[crate::loss(aggregation = "sequence_mean")]
pub fn sapo(
    logprob: f32,
    old_logprob: f32,
    advantage: f32,
    #[param(
        default = 1.0,
        min = 0.001,
        doc = "Gate temperature τ for positive advantages."
    )]
    tau_pos: f32,
    #[param(
        default = 1.05,
        min = 0.001,
        doc = "Gate temperature τ for negative advantages."
    )]
    tau_neg: f32,
) -> f32 {
    let ratio = (logprob - old_logprob).exp();
    let tau = if advantage > 0.0 { tau_pos } else { tau_neg };
    -(tau * (ratio - 1.0)).sigmoid() * 4.0 / tau * advantage
}
