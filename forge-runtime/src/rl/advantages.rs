//! Group-relative advantages.

use crate::config::AdvantageEstimator;

/// The advantages of one group's rewards (the completions of one prompt).
///
/// - `group_normalized` (GRPO): (r - mean) / (std + eps), std the sample standard deviation
///   (n - 1), as TRL computes it.
/// - `dr_grpo` (Dr. GRPO, arXiv 2503.20783): r - mean; dividing by the std biases towards
///   too-easy and too-hard questions.
/// - `rloo`: r - mean of the other completions = n / (n - 1) (r - mean).
///
/// A group of one has no baseline: its advantage is 0.
pub fn group_advantages(rewards: &[f32], estimator: AdvantageEstimator, eps: f64) -> Vec<f32> {
    let n = rewards.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let mean = rewards.iter().map(|&r| f64::from(r)).sum::<f64>() / n as f64;
    let centred = rewards.iter().map(|&r| f64::from(r) - mean);
    match estimator {
        AdvantageEstimator::GroupNormalized => {
            let var = rewards
                .iter()
                .map(|&r| (f64::from(r) - mean).powi(2))
                .sum::<f64>()
                / (n - 1) as f64;
            let std = var.sqrt();
            centred.map(|c| (c / (std + eps)) as f32).collect()
        }
        AdvantageEstimator::DrGrpo => centred.map(|c| c as f32).collect(),
        AdvantageEstimator::Rloo => centred
            .map(|c| (c * n as f64 / (n - 1) as f64) as f32)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimators_match_their_definitions() {
        let r = [1.0f32, 0.0, 0.5, 0.25];
        let mean = 0.4375f64;
        let std = (r
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / 3.0)
            .sqrt();
        let g = group_advantages(&r, AdvantageEstimator::GroupNormalized, 1e-6);
        let d = group_advantages(&r, AdvantageEstimator::DrGrpo, 1e-6);
        let l = group_advantages(&r, AdvantageEstimator::Rloo, 1e-6);
        for i in 0..4 {
            let x = f64::from(r[i]);
            assert!((f64::from(g[i]) - (x - mean) / (std + 1e-6)).abs() < 1e-6);
            assert!((f64::from(d[i]) - (x - mean)).abs() < 1e-6);
            let others = (r.iter().map(|&v| f64::from(v)).sum::<f64>() - x) / 3.0;
            assert!((f64::from(l[i]) - (x - others)).abs() < 1e-6);
        }
        // Equal rewards carry no signal.
        assert!(
            group_advantages(&[0.7; 5], AdvantageEstimator::GroupNormalized, 1e-6)
                .iter()
                .all(|&a| a == 0.0)
        );
        assert_eq!(
            group_advantages(&[1.0], AdvantageEstimator::Rloo, 0.0),
            vec![0.0]
        );
    }
}
