//! Attention of one new query per sequence over its cached keys and values (grouped-query: query
//! head `h` reads key/value head `h / (heads / kv_heads)`, transformers' `repeat_kv` order).

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use crate::kernels::cube_reduce::{cube_max, cube_sum};

/// Units per cube.
pub const BLOCK: usize = 128;

/// Cube (x, y) = (query head, row). Row `r` attends to positions `0..=positions[r]` of cache slot
/// `slots[r]`; `q` `[rows, heads * head_dim]`, `out` the same shape; `cache_k` is read as
/// `key_vectors` vectors of `N` elements per key (`head_dim = key_vectors * N`). The scores of one row sit in
/// shared memory: `max_keys` (comptime) bounds the cached length.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn decode_attention_kernel<F: Float, N: Size>(
    q: &Array<F>,
    cache_k: &Array<Vector<F, N>>,
    cache_v: &Array<F>,
    positions: &Array<u32>,
    slots: &Array<u32>,
    out: &mut Array<F>,
    heads: u32,
    kv_heads: u32,
    max_len: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[comptime] key_vectors: usize,
    #[comptime] max_keys: usize,
) {
    let head = CUBE_POS_X as usize;
    let row = CUBE_POS_Y as usize;
    let tid = UNIT_POS as usize;
    let (heads, kv_heads) = (heads as usize, kv_heads as usize);
    let kvh = head / (heads / kv_heads);
    // The new token's position is the last one cached.
    let len = positions[row] as usize + 1;
    let base = (slots[row] as usize * kv_heads + kvh) * max_len as usize * head_dim;
    let q_base = (row * heads + head) * head_dim;

    let mut qs = SharedMemory::<f32>::new(head_dim);
    let mut d = tid;
    while d < head_dim {
        qs[d] = f32::cast_from(q[q_base + d]) * scale;
        d += BLOCK;
    }
    sync_cube();

    let mut scores = SharedMemory::<f32>::new(max_keys);
    let mut local_max = f32::min_value();
    let mut p = tid;
    while p < len {
        // A unit reads a whole key row, as vectors (scalar loads of 32 different rows per warp
        // kept L1 busy at 77% for 8% of DRAM bandwidth, ncu), all in flight (unrolled: head_dim
        // is known when compiling).
        let key = (base + p * head_dim) / N::value();
        let mut s = 0.0f32;
        #[unroll]
        for j in 0..key_vectors {
            let kv = cache_k[key + j];
            #[unroll]
            for t in 0..N::value() {
                s += qs[j * N::value() + t] * f32::cast_from(kv[t]);
            }
        }
        scores[p] = s;
        local_max = f32::max(local_max, s);
        p += BLOCK;
    }
    let max = cube_max(local_max, BLOCK);
    let mut local_sum = 0.0f32;
    let mut p = tid;
    while p < len {
        let e = (scores[p] - max).exp();
        scores[p] = e;
        local_sum += e;
        p += BLOCK;
    }
    // cube_sum synchronises, so every probability is in place after it.
    let sum = cube_sum(local_sum, BLOCK);
    let mut d = tid;
    while d < head_dim {
        let mut acc = 0.0f32;
        // Eight independent loads per iteration: one at a time, each waited for, made this loop
        // bound by memory latency.
        let mut p = 0usize;
        while p + 8 <= len {
            let v = base + p * head_dim + d;
            let mut part = 0.0f32;
            #[unroll]
            for i in 0..8usize {
                part += scores[p + i] * f32::cast_from(cache_v[v + i * head_dim]);
            }
            acc += part;
            p += 8;
        }
        while p < len {
            acc += scores[p] * f32::cast_from(cache_v[base + p * head_dim + d]);
            p += 1;
        }
        out[q_base + d] = F::cast_from(acc / sum);
        d += BLOCK;
    }
}
