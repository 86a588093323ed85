//! d loss / d logits from d loss / d logprob: `grad[n, j] = g[n] · (onehot(target)[j] - p[n, j]) / T`
//! with `p = exp(x/T - lse)`, written in one pass over each row.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// One cube per row; rows whose `g` is 0 (masked, ignored) get zeros. Reads and writes vectors of
/// `N` elements (`V` a multiple of `N`).
#[cube(launch)]
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
        let base = row * vectors;
        let g = d_logprob[row] * inv_temperature;
        let row_lse = lse[row];
        let target = targets[row];
        let mut j = UNIT_POS as usize;
        while j < vectors {
            let packed = logits[base + j];
            let mut out = Vector::empty();
            #[unroll]
            for k in 0..N::value() {
                let p = (f32::cast_from(packed[k]) * inv_temperature - row_lse).exp();
                let mut onehot = 0.0f32;
                if target >= 0 && j * N::value() + k == target as usize {
                    onehot = 1.0f32;
                }
                out[k] = F::cast_from(g * (onehot - p));
            }
            grad_logits[base + j] = out;
            j += block;
        }
    }
}
