//! The loss operation's two scalars, kept on the device so that calling the loss and running
//! its backward pass never waits for the GPU: the aggregated loss (Σ weight × value over tokens)
//! and the upstream gradient's factor applied to d loss / d logits (nothing to do when it is 1,
//! the usual case, without the host reading it to find out).

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use super::cube_reduce::cube_sum;

/// Units of the one cube that sums the loss. A power of two (the shared-memory tree needs it).
pub const SUM_BLOCK: usize = 256;

/// Units per cube of the scaling kernel, which loops over the gradient with a fixed grid.
pub const SCALE_BLOCK: usize = 256;

/// `out[0] = Σ_i values[values_at + i] × weights[weights_at + i]` over `len` tokens, in one cube
/// of [`SUM_BLOCK`] units, accumulated in f32 and written in the loss tensor's element type.
#[cube(launch)]
pub fn weighted_sum_kernel<F: Float>(
    values: &Array<f32>,
    weights: &Array<f32>,
    values_at: u32,
    weights_at: u32,
    len: u32,
    out: &mut Array<F>,
    #[comptime] block: usize,
) {
    let mut partial = 0.0f32;
    let mut i = UNIT_POS as usize;
    while i < len as usize {
        partial += values[values_at as usize + i] * weights[weights_at as usize + i];
        i += block;
    }
    let total = cube_sum(partial, block);
    if UNIT_POS == 0 {
        out[0] = F::cast_from(total);
    }
}

/// `grad *= factor[0]` in place, unless the factor is exactly 1 (then no unit touches `grad`).
/// A grid-stride loop, so a launch of a few cubes per multiprocessor covers a [tokens, vocab]
/// gradient.
#[cube(launch)]
pub fn scale_unless_one_kernel<F: Float>(grad: &mut Array<F>, factor: &Array<F>) {
    let scale = f32::cast_from(factor[0]);
    if scale != 1.0f32 {
        let stride = CUBE_COUNT_X as usize * CUBE_DIM_X as usize;
        let mut i = ABSOLUTE_POS;
        while i < grad.len() {
            grad[i] = F::cast_from(f32::cast_from(grad[i]) * scale);
            i += stride;
        }
    }
}
