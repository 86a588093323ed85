//! The learning-rate schedule.

use crate::config::{LrSchedule, TrainingConfig};

/// The learning rate of optimiser step `step` (0-based): linear warm-up over `warmup_steps`, then
/// constant, or cosine/linear decay to `lr * min_lr_ratio` at the last step.
pub fn learning_rate(cfg: &TrainingConfig, step: u64) -> f64 {
    let warmup = cfg.warmup_steps;
    if step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = cfg.steps.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    let floor = cfg.lr * cfg.min_lr_ratio;
    match cfg.schedule {
        LrSchedule::Constant => cfg.lr,
        LrSchedule::Linear => cfg.lr - (cfg.lr - floor) * progress,
        LrSchedule::Cosine => {
            floor + (cfg.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let cfg = TrainingConfig {
            lr: 1e-3,
            warmup_steps: 4,
            steps: 14,
            min_lr_ratio: 0.1,
            schedule: LrSchedule::Cosine,
            ..Default::default()
        };
        assert!((learning_rate(&cfg, 0) - 2.5e-4).abs() < 1e-12);
        assert!((learning_rate(&cfg, 3) - 1e-3).abs() < 1e-12);
        assert!((learning_rate(&cfg, 4) - 1e-3).abs() < 1e-12);
        assert!((learning_rate(&cfg, 9) - 5.5e-4).abs() < 1e-12);
        assert!((learning_rate(&cfg, 14) - 1e-4).abs() < 1e-12);
        let linear = TrainingConfig {
            schedule: LrSchedule::Linear,
            ..cfg.clone()
        };
        assert!((learning_rate(&linear, 9) - 5.5e-4).abs() < 1e-12);
        let constant = TrainingConfig {
            schedule: LrSchedule::Constant,
            ..cfg
        };
        assert_eq!(learning_rate(&constant, 13), 1e-3);
    }
}
