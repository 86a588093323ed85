//! d loss / d logits from d loss / d logprob: `grad[n, j] = g[n] · (onehot(target)[j] - p[n, j]) / T`
//! with `p = exp(x/T - lse)`, written in one pass over each row.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use super::logprob_row::{fast_math, write_row_grad};

/// One cube per row; rows whose `g` is 0 (masked, ignored) get zeros. Reads and writes vectors of
/// `N` elements (`V` a multiple of `N`).
#[cube(launch, fast_math = fast_math())]
pub fn logprob_backward_kernel<F: Float, N: Size>(
    logits: &Array<Vector<F, N>>,
    targets: &Array<i32>,
    lse: &Array<f32>,
    d_logprob: &Array<f32>,
    inv_temperature: f32,
    vocab: u32,
    grad_logits: &mut Array<Vector<F, N>>,
    #[comptime] block: usize,
) {
    let row = CUBE_POS;
    if row < targets.len() {
        let vectors = vocab as usize / N::value();
        write_row_grad::<F, N>(
            logits,
            grad_logits,
            row * vectors,
            vectors,
            targets[row],
            lse[row],
            d_logprob[row] * inv_temperature,
            inv_temperature,
            block,
        );
    }
}
