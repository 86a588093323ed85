//! A layer's residual add fused with the RMSNorm that follows it: the o (or down) product's
//! split-k partials summed into the residual stream, then that row normalised for the next
//! product. One launch where the engine had two (the product's epilogue, then RMSNorm), and the
//! residual stream read once.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use crate::kernels::cube_reduce::cube_sum;

/// Units per cube for rows of `width` elements: one per four elements, a power of two from 32
/// to 256. Fewer units with several elements each shorten the cube-wide sum (a 1,024-unit tree
/// took 10 barrier rounds of 32 warps for Qwen3-0.6B's 1,024-wide rows).
pub fn block(width: usize) -> usize {
    width.div_ceil(4).next_power_of_two().clamp(32, 256)
}

/// Elements of a row each unit of a [`block`]-unit cube takes.
pub fn per_unit(width: usize) -> usize {
    width.div_ceil(block(width)).max(1)
}

/// Cube `r` (one per row): `hidden[r, :] += Σ_s partial[s, r, :]` (rounded to `F`, as the
/// separate epilogue stored it), then `out[r, :] = weight * hidden[r, :] / sqrt(mean(hidden[r,
/// :]²) + eps)`. `partial` is `[splits, partial_rows, width]` f32. Unit `u` takes elements `u,
/// u + block, ...` (`per_unit` of them, [`per_unit`]); `splits` and `per_unit` are known when
/// compiling, so every load of a unit (each split, the residual, the norm's weight) is issued
/// before the first is used.
#[cube(launch, launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm_kernel<F: Float>(
    partial: &Array<f32>,
    hidden: &mut Array<F>,
    weight: &Array<F>,
    out: &mut Array<F>,
    partial_rows: u32,
    width: u32,
    eps: f32,
    #[comptime] splits: usize,
    #[comptime] block: usize,
    #[comptime] per_unit: usize,
) {
    let w = width as usize;
    let base = CUBE_POS * w;
    let plane = partial_rows as usize * w;
    let mut ys = Array::<f32>::new(per_unit);
    let mut gs = Array::<f32>::new(per_unit);
    let mut squares = 0.0f32;
    #[unroll]
    for i in 0..per_unit {
        let j = UNIT_POS as usize + i * block;
        let mut y = 0.0f32;
        let mut g = 0.0f32;
        if j < w {
            let mut sum = f32::cast_from(hidden[base + j]);
            #[unroll]
            for s in 0..splits {
                sum += partial[s * plane + base + j];
            }
            let stored = F::cast_from(sum);
            hidden[base + j] = stored;
            y = f32::cast_from(stored);
            g = f32::cast_from(weight[j]);
        }
        ys[i] = y;
        gs[i] = g;
        squares += y * y;
    }
    let total = cube_sum(squares, block);
    let inv = 1.0f32 / (total / width as f32 + eps).sqrt();
    #[unroll]
    for i in 0..per_unit {
        let j = UNIT_POS as usize + i * block;
        if j < w {
            out[base + j] = F::cast_from(ys[i] * inv * gs[i]);
        }
    }
}
