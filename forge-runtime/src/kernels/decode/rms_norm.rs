//! RMSNorm of rows: `weight * x / sqrt(mean(x²) + eps)`, computed in f32.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use crate::kernels::cube_reduce::cube_sum;

/// Units per cube; one cube per row. A power of two (the shared-memory tree needs it).
pub const BLOCK: usize = 128;

/// `out[r, :] = weight * x[r, :] / sqrt(mean(x[r, :]²) + eps)` for row `r` = the cube's position.
#[cube(launch, launch_unchecked)]
pub fn rms_norm_kernel<F: Float>(
    x: &Array<F>,
    weight: &Array<F>,
    out: &mut Array<F>,
    rows: u32,
    width: u32,
    eps: f32,
    #[comptime] block: usize,
) {
    let row = CUBE_POS;
    // Whole cubes leave together, so the cube-wide barriers below see every unit.
    if row < rows as usize {
        let w = width as usize;
        let base = row * w;
        let mut squares = 0.0f32;
        let mut j = UNIT_POS as usize;
        while j < w {
            let v = f32::cast_from(x[base + j]);
            squares += v * v;
            j += block;
        }
        let total = cube_sum(squares, block);
        let inv = 1.0f32 / (total / width as f32 + eps).sqrt();
        write_scaled(x, weight, out, base, w, inv, block);
    }
}

/// `out[base + j] = x[base + j] * inv * weight[j]` for `j < width`, unit `u` taking `j = u,
/// u + block, ...` (the elements it read in its sum of squares).
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn write_scaled<F: Float>(
    x: &Array<F>,
    weight: &Array<F>,
    out: &mut Array<F>,
    base: usize,
    width: usize,
    inv: f32,
    #[comptime] block: usize,
) {
    let mut j = UNIT_POS as usize;
    while j < width {
        out[base + j] = F::cast_from(f32::cast_from(x[base + j]) * inv * f32::cast_from(weight[j]));
        j += block;
    }
}
