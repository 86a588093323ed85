//! Attention of one new query per sequence over its cached keys and values (grouped-query: query
//! head `h` reads key/value head `h / (heads / kv_heads)`, transformers' `repeat_kv` order).

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use super::qkv_rope_cache::rotate_half;
use super::skinny_matmul::sum_splits;
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
/// heads (with the new token's q/k/v when `new_token`): what decides whether a key/value head's
/// whole query group fits one cube.
pub fn shared_bytes(
    block: usize,
    group: usize,
    head_dim: usize,
    key_vectors: usize,
    max_keys: usize,
    new_token: bool,
) -> usize {
    let teams = block / key_vectors;
    // The new token's three staging arrays of the group's queries, its key and its value.
    let staging = if new_token {
        3 * (group + 2) * head_dim
    } else {
        0
    };
    // q, scores, the teams' partial sums, and cube_max/cube_sum's arrays (two per head).
    4 * (group * head_dim
        + group * max_keys
        + teams * group * head_dim
        + 2 * group * block
        + staging)
}

/// Cube (x, y) = (`group` consecutive query heads, row): with `group` the heads sharing one
/// key/value head (grouped-query attention), each cached key and value row is read once for the
/// whole group instead of once per head; `block` units (a power of two, at least `key_vectors`).
/// Row `r` attends to positions `0..=positions[r]` of cache slot `slots[r]`; `q` `[rows, heads
/// * head_dim]`, `out` the same shape; the caches are read as `key_vectors` vectors of `N` elements per position (`head_dim = key_vectors * N`, at most
/// `block` vectors). The scores of one row sit in shared memory: `max_keys` (comptime) bounds
/// the cached length ([`shared_bytes`] says what it costs). Each unit of the value pass has
/// `value_batch` value vectors in flight ([`VALUE_BATCH`]).
///
/// With `new_token` the cube first computes the new token's queries, key and value itself from
/// the q/k/v product (`qkv`, as [`super::qkv_rope_cache::qkv_rope_cache_kernel`] does: split
/// sums, `bias` when `has_bias`, the q/k norms when `qk_norm`, RoPE) and writes the key and value
/// into the caches; `q` is then unread. That needs the key/value head's whole query group in the
/// cube (`group = heads / kv_heads`: one cube writes each new key) and rows of different slots
/// (a decode step, not a prefill's many positions of one sequence). The new position's key and
/// value are used from shared memory, so no unit reads another's global write.
#[cube(launch, launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn decode_attention_kernel<F: Float, N: Size>(
    q: &Array<F>,
    cache_k: &mut Array<Vector<F, N>>,
    cache_v: &mut Array<Vector<F, N>>,
    positions: &Array<u32>,
    slots: &Array<u32>,
    out: &mut Array<F>,
    qkv: &Array<f32>,
    bias: &Array<F>,
    q_norm: &Array<F>,
    k_norm: &Array<F>,
    cos: &Array<F>,
    sin: &Array<F>,
    heads: u32,
    kv_heads: u32,
    max_len: u32,
    scale: f32,
    eps: f32,
    splits: u32,
    partial_rows: u32,
    #[comptime] head_dim: usize,
    #[comptime] key_vectors: usize,
    #[comptime] max_keys: usize,
    #[comptime] group: usize,
    #[comptime] value_batch: usize,
    #[comptime] block: usize,
    #[comptime] new_token: bool,
    #[comptime] qk_norm: bool,
    #[comptime] has_bias: bool,
) {
    let first = CUBE_POS_X as usize * group;
    let row = CUBE_POS_Y as usize;
    let tid = UNIT_POS as usize;
    let (heads, kv_heads) = (heads as usize, kv_heads as usize);
    let kvh = first / (heads / kv_heads);
    // The new token's position is the last one cached.
    let pos = positions[row] as usize;
    let len = pos + 1;
    let base = (slots[row] as usize * kv_heads + kvh) * max_len as usize * head_dim;
    // The group's heads are consecutive in `q` and `out`.
    let q_base = (row * heads + first) * head_dim;

    let mut qs = SharedMemory::<f32>::new(comptime![group * head_dim]);
    // The new token's key and value (rounded to `F`), where this cube computes them.
    let staged_size = comptime![if new_token { (group + 2) * head_dim } else { 1 }];
    let mut staged = SharedMemory::<f32>::new(staged_size);
    if comptime![new_token] {
        new_token_qkv::<F, N>(
            qkv,
            bias,
            q_norm,
            k_norm,
            cos,
            sin,
            cache_k,
            cache_v,
            &mut qs,
            &mut staged,
            row,
            first,
            kvh,
            pos,
            base,
            heads,
            kv_heads,
            scale,
            eps,
            splits as usize,
            partial_rows as usize,
            head_dim,
            group,
            block,
            qk_norm,
            has_bias,
        );
    } else {
        let mut d = tid;
        while d < comptime![group * head_dim] {
            qs[d] = f32::cast_from(q[q_base + d]) * scale;
            d += block;
        }
    }
    sync_cube();
    // Where the staged key and value sit in `staged`.
    let staged_key = comptime![group * head_dim];
    let staged_value = comptime![(group + 1) * head_dim];

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
            let kv = cached_or_new::<F, N>(
                cache_k,
                key + j,
                &staged,
                staged_key + j * N::value(),
                p == pos,
                new_token,
            );
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
                let v = Vector::<f32, N>::cast_from(cached_or_new::<F, N>(
                    cache_v,
                    (base + at * head_dim) / N::value() + lane,
                    &staged,
                    staged_value + lane * N::value(),
                    at == pos,
                    new_token,
                ));
                #[unroll]
                for g in 0..group {
                    acc[g] = acc[g] + v * Vector::<f32, N>::new(scores[g * max_keys + at]);
                }
            }
            p += value_batch * teams;
        }
        while p < len {
            let v = Vector::<f32, N>::cast_from(cached_or_new::<F, N>(
                cache_v,
                (base + p * head_dim) / N::value() + lane,
                &staged,
                staged_value + lane * N::value(),
                p == pos,
                new_token,
            ));
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

/// Vector `at` of a cache, or, for the new token's position (`is_new`) where the cube computed
/// it (`new_token`), the same vector from `staged` at `staged_at`: no unit reads another's
/// global write.
#[cube]
// The `comptime!` condition stays apart from the runtime one, so that without `new_token` no
// check is compiled.
#[allow(clippy::collapsible_if)]
fn cached_or_new<F: Float, N: Size>(
    cache: &Array<Vector<F, N>>,
    at: usize,
    staged: &SharedMemory<f32>,
    staged_at: usize,
    is_new: bool,
    #[comptime] new_token: bool,
) -> Vector<F, N> {
    let mut v = cache[at];
    if comptime![new_token] {
        if is_new {
            v = staged_vector::<F, N>(staged, staged_at);
        }
    }
    v
}

/// `N` consecutive values of `staged` from `at`, as a vector of `F`.
#[cube]
fn staged_vector<F: Float, N: Size>(staged: &SharedMemory<f32>, at: usize) -> Vector<F, N> {
    let mut v = Vector::<F, N>::empty();
    #[unroll]
    for t in 0..N::value() {
        v[t] = F::cast_from(staged[at + t]);
    }
    v
}

/// The new token's queries (scaled, into `qs`), key and value (into `staged` after the group's
/// queries, and into the caches at `pos`) for [`decode_attention_kernel`] with `new_token`:
/// the same arithmetic, in the same precision, as the separate RoPE kernel
/// ([`super::qkv_rope_cache::qkv_rope_cache_kernel`]). `staged` first holds the summed values
/// `[group queries | key | value]`, then the rotated ones.
#[cube]
#[allow(clippy::too_many_arguments, clippy::collapsible_if, unused_assignments)]
fn new_token_qkv<F: Float, N: Size>(
    qkv: &Array<f32>,
    bias: &Array<F>,
    q_norm: &Array<F>,
    k_norm: &Array<F>,
    cos: &Array<F>,
    sin: &Array<F>,
    cache_k: &mut Array<Vector<F, N>>,
    cache_v: &mut Array<Vector<F, N>>,
    qs: &mut SharedMemory<f32>,
    staged: &mut SharedMemory<f32>,
    row: usize,
    first: usize,
    kvh: usize,
    pos: usize,
    base: usize,
    heads: usize,
    kv_heads: usize,
    scale: f32,
    eps: f32,
    splits: usize,
    partial_rows: usize,
    #[comptime] head_dim: usize,
    #[comptime] group: usize,
    #[comptime] block: usize,
    #[comptime] qk_norm: bool,
    #[comptime] has_bias: bool,
) {
    let tid = UNIT_POS as usize;
    let total = comptime![(group + 2) * head_dim];
    let width = (heads + 2 * kv_heads) * head_dim;
    let plane = partial_rows * width;
    // Per-head sums of squares, then each head's norm factor; the normalised values.
    let mut squares = SharedMemory::<f32>::new(total);
    let mut normed = SharedMemory::<f32>::new(total);
    let mut e = tid;
    while e < total {
        let h = e / head_dim;
        let d = e % head_dim;
        let mut col = (first + h) * head_dim + d;
        if h == group {
            col = (heads + kvh) * head_dim + d;
        } else if h > group {
            col = (heads + kv_heads + kvh) * head_dim + d;
        }
        let mut v = sum_splits(qkv, row * width + col, plane, splits);
        if comptime![has_bias] {
            v += f32::cast_from(bias[col]);
        }
        v = f32::cast_from(F::cast_from(v));
        staged[e] = v;
        squares[e] = v * v;
        e += block;
    }
    sync_cube();
    if comptime![qk_norm] {
        // A tree within each head's `head_dim` entries (a power of two).
        let mut stride = comptime![head_dim / 2].runtime();
        while stride > 0 {
            let mut e = tid;
            while e < total {
                if e % head_dim < stride {
                    squares[e] += squares[e + stride];
                }
                e += block;
            }
            sync_cube();
            stride /= 2;
        }
    }
    let mut e = tid;
    while e < total {
        let h = e / head_dim;
        let d = e % head_dim;
        let mut v = staged[e];
        if comptime![qk_norm] {
            if h <= group {
                let inv = 1.0f32 / (squares[h * head_dim] / head_dim as f32 + eps).sqrt();
                let mut g = f32::cast_from(k_norm[d]);
                if h < group {
                    g = f32::cast_from(q_norm[d]);
                }
                // As the generic model: normalised in the model's precision, then rotated.
                v = f32::cast_from(F::cast_from(v * inv * g));
            }
        }
        normed[e] = v;
        e += block;
    }
    sync_cube();
    // RoPE (rotate_half: the first half pairs with the negated second half) of the queries and
    // the key; the value as it is.
    let mut e = tid;
    while e < total {
        let h = e / head_dim;
        let d = e % head_dim;
        if h <= group {
            let out = f32::cast_from(rotate_half::<F>(
                &normed,
                h * head_dim,
                d,
                cos,
                sin,
                pos,
                head_dim,
            ));
            if h < group {
                qs[e] = out * scale;
            } else {
                staged[e] = out;
            }
        }
        e += block;
    }
    sync_cube();
    // The new key and value into the caches, a vector a unit.
    let vectors = head_dim / N::value();
    if tid < vectors {
        let at = (base + pos * head_dim) / N::value() + tid;
        cache_k[at] = staged_vector::<F, N>(staged, comptime![group * head_dim] + tid * N::value());
        cache_v[at] =
            staged_vector::<F, N>(staged, comptime![(group + 1) * head_dim] + tid * N::value());
    }
}
