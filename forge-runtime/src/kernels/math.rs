//! Functions a `#[forge::loss]` body may call that cubecl lacks, as `#[cube]` helpers for the
//! generated kernels. Their f64 twins are in `forge::loss::math`.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Logistic sigmoid, without overflow for large |x|.
#[cube]
pub fn sigmoid<F: Float>(x: F) -> F {
    let e = (-x.abs()).exp();
    let one = F::new(1.0);
    select(x >= F::new(0.0), one / (one + e), e / (one + e))
}

/// ln(1 + e^x), without overflow for large x.
#[cube]
pub fn softplus<F: Float>(x: F) -> F {
    x.max(F::new(0.0)) + (-x.abs()).exp().log1p()
}
