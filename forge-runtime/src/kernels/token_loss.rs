//! A loss as a `#[cube]` function of one token, so that kernels can fuse it into their own work.
//! `#[forge::loss]` implements [`TokenLossFn`] for every loss from the same lowered body as its
//! per-token kernel and its f64 twin.

// `#[cube]` generates public helper items (expand types and functions) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// One token's loss and its derivatives with respect to `logprob` and `seq_log_ratio`.
#[derive(CubeType, Clone, Copy)]
pub struct TokenValue<F: Float> {
    /// The per-token loss.
    pub value: F,
    /// d value / d logprob.
    pub d_logprob: F,
    /// d value / d seq_log_ratio (0 for losses that do not read it).
    pub d_seq_log_ratio: F,
}

/// A per-token loss callable from inside a kernel.
#[cube]
pub trait TokenLossFn: 'static + Send + Sync {
    /// The loss at one token; `params` are the loss's parameters in declaration order.
    fn eval<F: Float>(
        logprob: F,
        old_logprob: F,
        ref_logprob: F,
        advantage: F,
        seq_log_ratio: F,
        params: &Array<F>,
    ) -> TokenValue<F>;
}
