//! A layer's residual add fused with the RMSNorm that follows it: the o (or down) product's
//! split-k partials summed into the residual stream, then that row normalised for the next
//! product. One launch where the engine had two (the product's epilogue, then RMSNorm), and the
//! residual stream read once.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use super::rms_norm::write_scaled;
use super::skinny_matmul::sum_splits;
use crate::kernels::cube_reduce::cube_sum;

/// Units per cube for rows of `width` elements: one element per unit up to 1,024 (a power of
/// two, as the shared-memory tree needs).
pub fn block(width: usize) -> usize {
    width.next_power_of_two().clamp(32, 1024)
}

/// Cube `r` (one per row): `hidden[r, :] += Σ_s partial[s, r, :]` (rounded to `F`, as the
/// separate epilogue stored it), then `out[r, :] = weight * hidden[r, :] / sqrt(mean(hidden[r,
/// :]²) + eps)`. `partial` is `[splits, partial_rows, width]` f32.
#[cube(launch, launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm_kernel<F: Float>(
    partial: &Array<f32>,
    hidden: &mut Array<F>,
    weight: &Array<F>,
    out: &mut Array<F>,
    splits: u32,
    partial_rows: u32,
    width: u32,
    eps: f32,
    #[comptime] block: usize,
) {
    let row = CUBE_POS;
    let w = width as usize;
    let base = row * w;
    let plane = partial_rows as usize * w;
    let mut squares = 0.0f32;
    let mut j = UNIT_POS as usize;
    while j < w {
        let y = sum_splits(partial, base + j, plane, splits as usize)
            + f32::cast_from(hidden[base + j]);
        let stored = F::cast_from(y);
        hidden[base + j] = stored;
        let v = f32::cast_from(stored);
        squares += v * v;
        j += block;
    }
    let total = cube_sum(squares, block);
    let inv = 1.0f32 / (total / width as f32 + eps).sqrt();
    // Each unit rereads only the elements it wrote.
    write_scaled(hidden, weight, out, base, w, inv, block);
}
