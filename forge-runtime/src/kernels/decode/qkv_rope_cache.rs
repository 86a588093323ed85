//! After the fused q/k/v projection of one new token per sequence: the projection's split-k
//! partials summed (with Qwen2's bias), Qwen3's per-head RMSNorm of queries and keys, RoPE
//! (Hugging Face's `rotate_half` layout), and the new key and value written into the KV cache at
//! the token's position. Summing the partials here saves the product its own epilogue launch.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use super::skinny_matmul::sum_splits;
use crate::kernels::cube_reduce::cube_sum;

/// Cube (x, y) = (head among `heads + 2 * kv_heads`, row); `block` units (a power of two, at
/// least `head_dim`), one per element of the head.
///
/// `partial` `[splits, partial_rows, (heads + 2 kv_heads) * head_dim]` (f32) holds the split sums
/// of queries, keys, values side by side (`bias` added when `has_bias`; the sum is rounded to `F`,
/// as a separate epilogue stored it);
/// queries go to `q` `[rows, heads * head_dim]`, keys and values to `cache_k` / `cache_v`
/// `[slots, kv_heads, max_len, head_dim]` at `(slot[row], position[row])`. `cos` / `sin` are
/// `[positions, head_dim]`.
#[cube(launch, launch_unchecked)]
#[allow(clippy::too_many_arguments, unused_assignments)]
pub fn qkv_rope_cache_kernel<F: Float>(
    partial: &Array<f32>,
    bias: &Array<F>,
    q_norm: &Array<F>,
    k_norm: &Array<F>,
    cos: &Array<F>,
    sin: &Array<F>,
    positions: &Array<u32>,
    slots: &Array<u32>,
    q: &mut Array<F>,
    cache_k: &mut Array<F>,
    cache_v: &mut Array<F>,
    heads: u32,
    kv_heads: u32,
    max_len: u32,
    eps: f32,
    splits: u32,
    partial_rows: u32,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] qk_norm: bool,
    #[comptime] has_bias: bool,
) {
    let head = CUBE_POS_X as usize;
    let row = CUBE_POS_Y as usize;
    let d = UNIT_POS as usize;
    let (heads, kv_heads) = (heads as usize, kv_heads as usize);
    let width = (heads + 2 * kv_heads) * head_dim;
    let pos = positions[row] as usize;
    let slot = slots[row] as usize;
    let mut v = 0.0f32;
    if d < head_dim {
        let col = head * head_dim + d;
        let plane = partial_rows as usize * width;
        v = sum_splits(partial, row * width + col, plane, splits as usize);
        if comptime![has_bias] {
            v += f32::cast_from(bias[col]);
        }
        v = f32::cast_from(F::cast_from(v));
    }
    if head >= heads + kv_heads {
        // A value head: into the cache as it is.
        let kvh = head - heads - kv_heads;
        if d < head_dim {
            cache_v[((slot * kv_heads + kvh) * max_len as usize + pos) * head_dim + d] =
                F::cast_from(v);
        }
    } else {
        let is_query = head < heads;
        if comptime![qk_norm] {
            let total = cube_sum(v * v, block);
            let inv = 1.0f32 / (total / head_dim as f32 + eps).sqrt();
            if d < head_dim {
                let mut g = 0.0f32;
                if is_query {
                    g = f32::cast_from(q_norm[d]);
                } else {
                    g = f32::cast_from(k_norm[d]);
                }
                // As the generic model: normalised in the model's precision, then rotated.
                v = f32::cast_from(F::cast_from(v * inv * g));
            }
        }
        // rotate_half: the first half pairs with the negated second half.
        let mut shared = SharedMemory::<f32>::new(block);
        shared[d] = v;
        sync_cube();
        if d < head_dim {
            let out = rotate_half::<F>(&shared, 0, d, cos, sin, pos, head_dim);
            if is_query {
                q[(row * heads + head) * head_dim + d] = out;
            } else {
                let kvh = head - heads;
                cache_k[((slot * kv_heads + kvh) * max_len as usize + pos) * head_dim + d] = out;
            }
        }
    }
}

/// RoPE of element `d` of a head whose values sit in `head` from `at`, at position `pos`
/// (Hugging Face's `rotate_half` layout: the first half pairs with the negated second half),
/// rounded to `F`. Shared with attention's own q/k/v ([`super::decode_attention`]), so the two
/// paths round alike.
#[cube]
#[allow(unused_assignments)]
pub fn rotate_half<F: Float>(
    head: &SharedMemory<f32>,
    at: usize,
    d: usize,
    cos: &Array<F>,
    sin: &Array<F>,
    pos: usize,
    #[comptime] head_dim: usize,
) -> F {
    let half = head_dim / 2;
    let mut rotated = 0.0f32;
    if d < half {
        rotated = -head[at + d + half];
    } else {
        rotated = head[at + d - half];
    }
    let c = f32::cast_from(cos[pos * head_dim + d]);
    let s = f32::cast_from(sin[pos * head_dim + d]);
    F::cast_from(head[at + d] * c + rotated * s)
}
