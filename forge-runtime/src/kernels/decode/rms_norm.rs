//! RMSNorm of rows: `weight * x / sqrt(mean(x²) + eps)`, computed in f32.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Units per cube; one cube per row. A power of two (the shared-memory tree needs it).
pub const BLOCK: usize = 128;

/// Σ over the cube of each unit's `value`, the same in every unit. Every unit must call it.
#[cube]
pub fn cube_sum(value: f32, #[comptime] block: usize) -> f32 {
    let tid = UNIT_POS as usize;
    let mut shared = SharedMemory::<f32>::new(block);
    shared[tid] = value;
    sync_cube();
    let mut stride = (block / 2).runtime();
    while stride > 0 {
        if tid < stride {
            shared[tid] += shared[tid + stride];
        }
        sync_cube();
        stride /= 2;
    }
    let total = shared[0];
    // The next call overwrites the array.
    sync_cube();
    total
}

/// The largest of each unit's `value` over the cube, the same in every unit.
#[cube]
pub fn cube_max(value: f32, #[comptime] block: usize) -> f32 {
    let tid = UNIT_POS as usize;
    let mut shared = SharedMemory::<f32>::new(block);
    shared[tid] = value;
    sync_cube();
    let mut stride = (block / 2).runtime();
    while stride > 0 {
        if tid < stride {
            shared[tid] = f32::max(shared[tid], shared[tid + stride]);
        }
        sync_cube();
        stride /= 2;
    }
    let total = shared[0];
    sync_cube();
    total
}

/// `out[r, :] = weight * x[r, :] / sqrt(mean(x[r, :]²) + eps)` for row `r` = the cube's position.
#[cube(launch)]
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
        let mut j = UNIT_POS as usize;
        while j < w {
            out[base + j] =
                F::cast_from(f32::cast_from(x[base + j]) * inv * f32::cast_from(weight[j]));
            j += block;
        }
    }
}
