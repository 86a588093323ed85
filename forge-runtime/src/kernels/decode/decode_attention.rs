//! Attention of one new query per sequence over its cached keys and values (grouped-query: query
//! head `h` reads key/value head `h / (heads / kv_heads)`, transformers' `repeat_kv` order).

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use crate::kernels::cube_reduce::{cube_max, cube_sum};

/// Units per cube.
pub const BLOCK: usize = 128;

/// Cube (x, y) = (query head, row). Row `r` attends to positions `0..=positions[r]` of cache slot
/// `slots[r]`; `q` `[rows, heads * head_dim]`, `out` the same shape; the caches are read as
/// `key_vectors` vectors of `N` elements per position (`head_dim = key_vectors * N`, at most
/// [`BLOCK`] vectors). The scores of one row sit in shared memory: `max_keys` (comptime) bounds
/// the cached length.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn decode_attention_kernel<F: Float, N: Size>(
    q: &Array<F>,
    cache_k: &Array<Vector<F, N>>,
    cache_v: &Array<Vector<F, N>>,
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
    // The weighted sum of values: the cube splits into `groups` groups of `key_vectors` units,
    // one vector of the head's dimensions per unit, each group a share of the positions (one value
    // row per group and step, read whole); then the groups' sums are added in shared memory.
    // (One unit per dimension walking every position made this loop ~30 dependent rounds of
    // loads at 256 cached positions: most of the kernel's time.)
    let groups = comptime![BLOCK / key_vectors];
    let group = tid / key_vectors;
    let lane = tid % key_vectors;
    let mut sums = SharedMemory::<f32>::new(comptime![groups * head_dim]);
    if group < groups {
        let mut acc = Vector::<f32, N>::new(0.0f32);
        let mut p = group;
        // Four positions per iteration, their loads independent.
        while p + 3 * groups < len {
            #[unroll]
            for i in 0..4usize {
                let at = p + i * groups;
                let v = Vector::<f32, N>::cast_from(
                    cache_v[(base + at * head_dim) / N::value() + lane],
                );
                acc += v * Vector::<f32, N>::new(scores[at]);
            }
            p += 4 * groups;
        }
        while p < len {
            let v = Vector::<f32, N>::cast_from(cache_v[(base + p * head_dim) / N::value() + lane]);
            acc += v * Vector::<f32, N>::new(scores[p]);
            p += groups;
        }
        #[unroll]
        for t in 0..N::value() {
            sums[group * head_dim + lane * N::value() + t] = acc[t];
        }
    }
    sync_cube();
    let mut d = tid;
    while d < head_dim {
        let mut total = 0.0f32;
        for g in 0..groups {
            total += sums[g * head_dim + d];
        }
        out[q_base + d] = F::cast_from(total / sum);
        d += BLOCK;
    }
}
