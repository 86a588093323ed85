//! The macro's generated gradients of every built-in loss against central finite differences of
//! the plain f64 body, and its generated values against that body, over random inputs covering
//! both clip branches and both advantage signs.

use super::{TokenGrad, TokenInputs, cispo, dapo, grpo, gspo, sapo};

/// SplitMix64: a small seeded generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn random_inputs(rng: &mut Rng) -> TokenInputs {
    let logprob = rng.uniform(-6.0, -0.01);
    TokenInputs {
        logprob,
        // Log-ratios up to ±0.7 put the ratio on both sides of every clip range.
        old_logprob: logprob + rng.uniform(-0.7, 0.7),
        ref_logprob: logprob + rng.uniform(-1.0, 1.0),
        advantage: rng.uniform(-2.0, 2.0),
        seq_log_ratio: rng.uniform(-0.7, 0.7),
    }
}

/// Central difference of `f` along one input; `None` when the step straddles a kink (two step
/// sizes disagree), where no derivative exists to compare against.
fn central_difference(
    f: &dyn Fn(&TokenInputs) -> f64,
    x: &TokenInputs,
    along: fn(&mut TokenInputs) -> &mut f64,
) -> Option<f64> {
    let at = |h: f64| {
        let (mut plus, mut minus) = (*x, *x);
        *along(&mut plus) += h;
        *along(&mut minus) -= h;
        (f(&plus) - f(&minus)) / (2.0 * h)
    };
    let (coarse, fine) = (at(1e-5), at(5e-6));
    ((coarse - fine).abs() <= 1e-6 * (1.0 + fine.abs())).then_some(fine)
}

struct Stats {
    checked: usize,
    zero_gradient: usize,
}

/// `reference` is the plain body; `differentiable(at, x)` the function whose finite differences
/// the gradient must match near `at` (the body, except where `stop_gradient` freezes a factor).
fn check(
    name: &str,
    value_and_grad: &dyn Fn(&TokenInputs) -> TokenGrad,
    reference: &dyn Fn(&TokenInputs) -> f64,
    differentiable: &dyn Fn(&TokenInputs, &TokenInputs) -> f64,
) -> Stats {
    let mut rng = Rng(0x5EED ^ name.len() as u64);
    let mut stats = Stats {
        checked: 0,
        zero_gradient: 0,
    };
    for _ in 0..4000 {
        let x = random_inputs(&mut rng);
        let got = value_and_grad(&x);
        let want = reference(&x);
        assert!(
            (got.value - want).abs() <= 1e-12 * (1.0 + want.abs()),
            "{name}: value {} vs body {want} at {x:?}",
            got.value
        );
        let f = |moved: &TokenInputs| differentiable(&x, moved);
        let fd_lp = central_difference(&f, &x, |x| &mut x.logprob);
        let fd_seq = central_difference(&f, &x, |x| &mut x.seq_log_ratio);
        let (Some(fd_lp), Some(fd_seq)) = (fd_lp, fd_seq) else {
            continue;
        };
        stats.checked += 1;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (1.0 + b.abs());
        assert!(
            close(got.d_logprob, fd_lp),
            "{name}: d/dlogprob {} vs finite difference {fd_lp} at {x:?}",
            got.d_logprob
        );
        assert!(
            close(got.d_seq_log_ratio, fd_seq),
            "{name}: d/dseq_log_ratio {} vs finite difference {fd_seq} at {x:?}",
            got.d_seq_log_ratio
        );
        // No gradient may reach the recorded or reference logprobs: they are not active inputs,
        // so the generated code has no derivative for them; moving them changes only the value.
        if got.d_logprob == 0.0 && got.d_seq_log_ratio == 0.0 {
            stats.zero_gradient += 1;
        }
    }
    assert!(
        stats.checked >= 3900,
        "{name}: only {} of 4000 points away from kinks",
        stats.checked
    );
    stats
}

#[test]
fn grpo_gradient_matches_finite_differences() {
    let p = grpo::Params::default();
    check(
        "grpo",
        &|x| grpo::value_and_grad(x, &p),
        &|x| grpo::reference(x, &p),
        &|_, x| grpo::reference(x, &p),
    );
    // Without the KL term, clipped tokens have exactly zero gradient.
    let p = grpo::Params {
        beta: 0.0,
        ..grpo::Params::default()
    };
    let stats = check(
        "grpo, beta 0",
        &|x| grpo::value_and_grad(x, &p),
        &|x| grpo::reference(x, &p),
        &|_, x| grpo::reference(x, &p),
    );
    assert!(
        stats.zero_gradient > 200 && stats.zero_gradient < 3000,
        "clip branches: {} clipped",
        stats.zero_gradient
    );
}

#[test]
fn dapo_gradient_matches_finite_differences() {
    let p = dapo::Params::default();
    let stats = check(
        "dapo",
        &|x| dapo::value_and_grad(x, &p),
        &|x| dapo::reference(x, &p),
        &|_, x| dapo::reference(x, &p),
    );
    assert!(
        stats.zero_gradient > 200,
        "clipped tokens: {}",
        stats.zero_gradient
    );
    // Dual clip: a large ratio with a negative advantage is bounded.
    let p = dapo::Params {
        dual_clip_c: 1.1,
        ..p
    };
    let x = TokenInputs {
        logprob: -0.1,
        old_logprob: -1.0,
        advantage: -1.0,
        ..TokenInputs::default()
    };
    let g = dapo::value_and_grad(&x, &p);
    assert!(
        (g.value - f64::from(1.1f32)).abs() < 1e-12 && g.d_logprob == 0.0,
        "{g:?}"
    );
}

#[test]
fn cispo_gradient_matches_finite_differences_and_never_vanishes() {
    let p = cispo::Params::default();
    // The weight is under stop_gradient: differentiate with it frozen at the base point.
    let frozen = |at: &TokenInputs, x: &TokenInputs| {
        let w = (at.logprob - at.old_logprob)
            .exp()
            .clamp(1.0 - f64::from(p.clip_low), 1.0 + f64::from(p.clip_high));
        -w * x.advantage * x.logprob
    };
    let stats = check(
        "cispo",
        &|x| cispo::value_and_grad(x, &p),
        &|x| cispo::reference(x, &p),
        &frozen,
    );
    // The clipped weight is a constant: every token keeps a gradient -w·A.
    assert_eq!(stats.zero_gradient, 0);
    let x = TokenInputs {
        logprob: -0.5,
        old_logprob: -0.6,
        advantage: 1.5,
        ..TokenInputs::default()
    };
    let g = cispo::value_and_grad(&x, &p);
    let w = (x.logprob - x.old_logprob).exp();
    assert!((g.d_logprob + w * x.advantage).abs() < 1e-12, "{g:?}");
}

#[test]
fn gspo_gradient_flows_through_the_sequence_ratio_only() {
    let p = gspo::Params::default();
    check(
        "gspo",
        &|x| gspo::value_and_grad(x, &p),
        &|x| gspo::reference(x, &p),
        &|_, x| gspo::reference(x, &p),
    );
    let x = TokenInputs {
        logprob: -1.0,
        seq_log_ratio: 0.05,
        advantage: 1.0,
        ..TokenInputs::default()
    };
    let g = gspo::value_and_grad(&x, &p);
    assert_eq!(g.d_logprob, 0.0);
    assert!((g.d_seq_log_ratio + 0.05f64.exp()).abs() < 1e-12, "{g:?}");
}

#[test]
fn sapo_gradient_matches_finite_differences() {
    let p = sapo::Params::default();
    check(
        "sapo",
        &|x| sapo::value_and_grad(x, &p),
        &|x| sapo::reference(x, &p),
        &|_, x| sapo::reference(x, &p),
    );
    // At ratio 1 the soft gate's weight is exactly 1: the gradient is -A·r = -A.
    let x = TokenInputs {
        logprob: -2.0,
        old_logprob: -2.0,
        advantage: 0.7,
        ..TokenInputs::default()
    };
    let g = sapo::value_and_grad(&x, &p);
    assert!((g.d_logprob + 0.7).abs() < 1e-12, "{g:?}");
}
