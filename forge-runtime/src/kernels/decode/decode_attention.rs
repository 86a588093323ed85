//! Attention of one new query per sequence over its cached keys and values (grouped-query: query
//! head `h` reads key/value head `h / (heads / kv_heads)`, transformers' `repeat_kv` order).

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use crate::kernels::cube_reduce::{cube_max, cube_sum};

/// Units per cube, unless `FORGE_DECODE_ATTENTION_BLOCK` says otherwise: with 256 units (16
/// teams of the value pass at head_dim 128) a step of Qwen3-0.6B ran 2.53 ms against 2.69 ms with
/// 128 (H100, bench/NOTES.md, session 15).
pub const BLOCK: usize = 256;

/// [`BLOCK`], or `FORGE_DECODE_ATTENTION_BLOCK` where set to a power of two from 32 to 1,024 (to
/// compare cube sizes on one build).
pub fn block() -> usize {
    super::units_from_env("FORGE_DECODE_ATTENTION_BLOCK", BLOCK)
}

/// Value rows each team of the value pass loads at once (their loads independent), unless
/// `FORGE_DECODE_VALUE_BATCH` says otherwise (to compare on one build). With 16 teams a cube
/// then has 64 value rows (16 KB of bf16 at head_dim 128) in flight.
pub const VALUE_BATCH: usize = 4;

/// [`VALUE_BATCH`], or `FORGE_DECODE_VALUE_BATCH` where set to a positive count.
pub fn value_batch() -> usize {
    std::env::var("FORGE_DECODE_VALUE_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&b: &usize| b > 0)
        .unwrap_or(VALUE_BATCH)
}

/// Bytes of shared memory the kernel declares for a cube of `block` units and `group` query
/// heads: what decides whether a key/value head's whole query group fits one cube.
pub fn shared_bytes(
    block: usize,
    group: usize,
    head_dim: usize,
    key_vectors: usize,
    max_keys: usize,
) -> usize {
    let teams = block / key_vectors;
    // q, scores, the teams' partial sums, and cube_max/cube_sum's arrays (two per head).
    4 * (group * head_dim + group * max_keys + teams * group * head_dim + 2 * group * block)
}

/// Cube (x, y) = (`group` consecutive query heads, row): with `group` the heads sharing one
/// key/value head (grouped-query attention), each cached key and value row is read once for the
/// whole group instead of once per head; `block` units (a power of two, at least `key_vectors`).
/// Row `r` attends to positions `0..=positions[r]` of cache slot `slots[r]`; `q` `[rows, heads * head_dim]`, `out` the same shape; the caches are read as
/// `key_vectors` vectors of `N` elements per position (`head_dim = key_vectors * N`, at most
/// `block` vectors). The scores of one row sit in shared memory: `max_keys` (comptime) bounds
/// the cached length ([`shared_bytes`] says what it costs). Each unit of the value pass has
/// `value_batch` value vectors in flight ([`VALUE_BATCH`]).
#[cube(launch, launch_unchecked)]
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
    #[comptime] group: usize,
    #[comptime] value_batch: usize,
    #[comptime] block: usize,
) {
    let first = CUBE_POS_X as usize * group;
    let row = CUBE_POS_Y as usize;
    let tid = UNIT_POS as usize;
    let (heads, kv_heads) = (heads as usize, kv_heads as usize);
    let kvh = first / (heads / kv_heads);
    // The new token's position is the last one cached.
    let len = positions[row] as usize + 1;
    let base = (slots[row] as usize * kv_heads + kvh) * max_len as usize * head_dim;
    // The group's heads are consecutive in `q` and `out`.
    let q_base = (row * heads + first) * head_dim;

    let mut qs = SharedMemory::<f32>::new(comptime![group * head_dim]);
    let mut d = tid;
    while d < comptime![group * head_dim] {
        qs[d] = f32::cast_from(q[q_base + d]) * scale;
        d += block;
    }
    sync_cube();

    let mut scores = SharedMemory::<f32>::new(comptime![group * max_keys]);
    let mut local_max = Array::<f32>::new(group);
    #[unroll]
    for g in 0..group {
        local_max[g] = f32::min_value();
    }
    let mut p = tid;
    while p < len {
        // A unit reads a whole key row, as vectors (scalar loads of 32 different rows per warp
        // kept L1 busy at 77% for 8% of DRAM bandwidth, ncu), all in flight (unrolled: head_dim
        // is known when compiling), and scores it against every head of the group.
        let key = (base + p * head_dim) / N::value();
        let mut s = Array::<f32>::new(group);
        #[unroll]
        for g in 0..group {
            s[g] = 0.0f32;
        }
        #[unroll]
        for j in 0..key_vectors {
            let kv = cache_k[key + j];
            #[unroll]
            for t in 0..N::value() {
                let k = f32::cast_from(kv[t]);
                #[unroll]
                for g in 0..group {
                    s[g] += qs[g * head_dim + j * N::value() + t] * k;
                }
            }
        }
        #[unroll]
        for g in 0..group {
            scores[g * max_keys + p] = s[g];
            local_max[g] = f32::max(local_max[g], s[g]);
        }
        p += block;
    }
    let mut sums = Array::<f32>::new(group);
    #[unroll]
    for g in 0..group {
        let max = cube_max(local_max[g], block);
        let mut local_sum = 0.0f32;
        let mut p = tid;
        while p < len {
            let e = (scores[g * max_keys + p] - max).exp();
            scores[g * max_keys + p] = e;
            local_sum += e;
            p += block;
        }
        // cube_sum synchronises, so every probability is in place after it.
        sums[g] = cube_sum(local_sum, block);
    }
    // The weighted sum of values: the cube splits into `teams` teams of `key_vectors` units,
    // one vector of the head's dimensions per unit, each team a share of the positions (one value
    // row per team and step, read whole, weighted for every head of the group); then the teams'
    // sums are added in shared memory. (One unit per dimension walking every position made this
    // loop ~30 dependent rounds of loads at 256 cached positions: most of the kernel's time.)
    let teams = comptime![block / key_vectors];
    let team = tid / key_vectors;
    let lane = tid % key_vectors;
    let mut partial = SharedMemory::<f32>::new(comptime![teams * group * head_dim]);
    if team < teams {
        let mut acc = Array::<Vector<f32, N>>::new(group);
        #[unroll]
        for g in 0..group {
            acc[g] = Vector::<f32, N>::new(0.0f32);
        }
        let mut p = team;
        // `value_batch` positions per iteration, their loads independent.
        while p + (value_batch - 1) * teams < len {
            #[unroll]
            for i in 0..value_batch {
                let at = p + i * teams;
                let v = Vector::<f32, N>::cast_from(
                    cache_v[(base + at * head_dim) / N::value() + lane],
                );
                #[unroll]
                for g in 0..group {
                    acc[g] = acc[g] + v * Vector::<f32, N>::new(scores[g * max_keys + at]);
                }
            }
            p += value_batch * teams;
        }
        while p < len {
            let v = Vector::<f32, N>::cast_from(cache_v[(base + p * head_dim) / N::value() + lane]);
            #[unroll]
            for g in 0..group {
                acc[g] = acc[g] + v * Vector::<f32, N>::new(scores[g * max_keys + p]);
            }
            p += teams;
        }
        #[unroll]
        for g in 0..group {
            let a = acc[g];
            #[unroll]
            for t in 0..N::value() {
                partial[(team * group + g) * head_dim + lane * N::value() + t] = a[t];
            }
        }
    }
    sync_cube();
    #[unroll]
    for g in 0..group {
        let mut d = tid;
        while d < head_dim {
            let mut total = 0.0f32;
            for t in 0..teams {
                total += partial[(t * group + g) * head_dim + d];
            }
            out[q_base + g * head_dim + d] = F::cast_from(total / sums[g]);
            d += block;
        }
    }
}
