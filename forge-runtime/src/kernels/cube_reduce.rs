//! Sums and maxima of one value per unit over a cube, through a shared-memory tree: the decode
//! kernels' reductions over a row or a head, and the loss value's sum over tokens.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Σ over the cube of each unit's `value`, the same in every unit. Every unit must call it;
/// `block` (the cube's units) is a power of two.
#[cube]
pub fn cube_sum(value: f32, #[comptime] block: usize) -> f32 {
    cube_reduce(value, block, false)
}

/// The largest of each unit's `value` over the cube, the same in every unit (as [`cube_sum`]).
#[cube]
pub fn cube_max(value: f32, #[comptime] block: usize) -> f32 {
    cube_reduce(value, block, true)
}

/// The tree both share: `max` (decided when compiling) picks the operation.
#[cube]
fn cube_reduce(value: f32, #[comptime] block: usize, #[comptime] max: bool) -> f32 {
    let tid = UNIT_POS as usize;
    let mut shared = SharedMemory::<f32>::new(block);
    shared[tid] = value;
    sync_cube();
    let mut stride = (block / 2).runtime();
    while stride > 0 {
        if tid < stride {
            if comptime![max] {
                shared[tid] = f32::max(shared[tid], shared[tid + stride]);
            } else {
                shared[tid] += shared[tid + stride];
            }
        }
        sync_cube();
        stride /= 2;
    }
    let total = shared[0];
    // The next call overwrites the array.
    sync_cube();
    total
}
