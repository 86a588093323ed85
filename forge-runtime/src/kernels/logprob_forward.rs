//! Target log-probabilities and entropies from logits, in one read of each row (see
//! [`row_stats`]). The [N, V] log-softmax is never materialised.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use super::logprob_row::{fast_math, row_stats};

/// Units per cube; one cube handles one row. A power of two (the shared-memory tree needs it).
pub const BLOCK: usize = 256;

/// Per row `n` of `logits` [N, V] at temperature `1 / inv_temperature`: `lse[n]` = log Σ exp(x/T),
/// `logprob[n]` = x[target]/T - lse (0 where the target is negative, i.e. ignored), `entropy[n]`.
///
/// `logits` is read as vectors of `N` elements (16-byte loads for bf16 x 8), so `V` must be a
/// multiple of `N`; `logits_scalar` is the same buffer, for the one target element per row.
#[cube(launch, fast_math = fast_math())]
pub fn logprob_forward_kernel<F: Float, N: Size>(
    logits: &Array<Vector<F, N>>,
    logits_scalar: &Array<F>,
    targets: &Array<i32>,
    inv_temperature: f32,
    vocab: u32,
    logprob: &mut Array<f32>,
    entropy: &mut Array<f32>,
    lse: &mut Array<f32>,
    #[comptime] block: usize,
) {
    let row = CUBE_POS;
    if row < targets.len() {
        let v = vocab as usize;
        let vectors = v / N::value();
        let stats = row_stats::<F, N>(logits, row * vectors, vectors, inv_temperature, block);
        if UNIT_POS == 0 {
            lse[row] = stats.lse;
            entropy[row] = stats.entropy;
            let target = targets[row];
            let mut lp = 0.0f32;
            if target >= 0 {
                lp = f32::cast_from(logits_scalar[row * v + target as usize]) * inv_temperature
                    - stats.lse;
            }
            logprob[row] = lp;
        }
    }
}
