//! Functions a `#[forge::loss]` body may call, in their f64 reference form. The macro brings these
//! into scope for the reference twin; the kernel twin has cubecl equivalents.

/// Blocks the gradient of `x`: its value passes through, its derivative is zero.
pub fn stop_gradient(x: f64) -> f64 {
    x
}

/// Logistic sigmoid.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// ln(1 + e^x), without overflow for large x.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// ln(1 + x).
pub fn log1p(x: f64) -> f64 {
    x.ln_1p()
}

/// Bound on the log-ratio inside the KL estimators, as torchforge clamps it, so one outlier token
/// cannot produce an infinite penalty.
pub const KL_LOG_RATIO_CLAMP: f64 = 20.0;

/// k1 estimator of KL(policy || reference) from one sample: `logprob - ref_logprob`.
pub fn k1(logprob: f64, ref_logprob: f64) -> f64 {
    (logprob - ref_logprob).clamp(-KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
}

/// k2 estimator: `(logprob - ref_logprob)^2 / 2`.
pub fn k2(logprob: f64, ref_logprob: f64) -> f64 {
    let d = (logprob - ref_logprob).clamp(-KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP);
    0.5 * d * d
}

/// k3 estimator (Schulman): `exp(ref - logprob) - (ref - logprob) - 1`, non-negative and unbiased.
pub fn k3(logprob: f64, ref_logprob: f64) -> f64 {
    let d = (ref_logprob - logprob).clamp(-KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP);
    d.exp() - d - 1.0
}

/// Method forms (`x.sigmoid()`, `x.softplus()`, `x.log1p()`) of the functions above, for loss
/// bodies written in method style.
pub trait LossMathExt {
    /// See [`sigmoid`].
    fn sigmoid(self) -> Self;
    /// See [`softplus`].
    fn softplus(self) -> Self;
    /// See [`log1p`].
    fn log1p(self) -> Self;
}

impl LossMathExt for f64 {
    fn sigmoid(self) -> f64 {
        sigmoid(self)
    }
    fn softplus(self) -> f64 {
        softplus(self)
    }
    fn log1p(self) -> f64 {
        log1p(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_and_softplus_match_their_definitions() {
        for x in [-30.0, -2.5, -0.1, 0.0, 0.3, 4.0, 30.0] {
            let naive_sigmoid = 1.0 / (1.0 + f64::exp(-x));
            assert!((sigmoid(x) - naive_sigmoid).abs() < 1e-15, "sigmoid({x})");
            let naive_softplus = f64::ln(1.0 + f64::exp(x));
            assert!(
                (softplus(x) - naive_softplus).abs() < 1e-12,
                "softplus({x})"
            );
        }
        assert!(softplus(1000.0).is_finite());
    }

    #[test]
    fn kl_estimators_are_zero_at_equal_logprobs_and_positive_elsewhere() {
        assert_eq!(k1(-1.3, -1.3), 0.0);
        assert_eq!(k2(-1.3, -1.3), 0.0);
        assert!(k3(-1.3, -1.3).abs() < 1e-15);
        for (lp, rp) in [(-0.2, -1.7), (-3.0, -0.4)] {
            assert!(k2(lp, rp) > 0.0 && k3(lp, rp) > 0.0);
        }
        assert!(k3(0.0, -1000.0).is_finite(), "the clamp bounds the penalty");
    }
}
