//! Copies a prompt's prefill keys (or values) into the decode engine's cache slots of its samples.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// `cache[slot, h, p, d] = src[b, h, p, d]` for every slot `slots[b * per_row..(b + 1) *
/// per_row]`. `src` is `[rows, kv_heads, len, head_dim]`, `cache` `[slots, kv_heads, max_len,
/// head_dim]`; units stride over the elements of `src` (any launch size covers it).
#[cube(launch, launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn kv_copy_kernel<F: Float>(
    src: &Array<F>,
    cache: &mut Array<F>,
    slots: &Array<u32>,
    per_row: u32,
    kv_heads: u32,
    len: u32,
    max_len: u32,
    head_dim: u32,
) {
    let (kv, len, max_len, hd) = (
        kv_heads as usize,
        len as usize,
        max_len as usize,
        head_dim as usize,
    );
    let row_elems = kv * len * hd;
    let stride = CUBE_COUNT_X as usize * CUBE_DIM_X as usize;
    let mut i = ABSOLUTE_POS;
    while i < src.len() {
        let b = i / row_elems;
        let r = i % row_elems;
        let value = src[i];
        for s in 0..per_row as usize {
            let slot = slots[b * per_row as usize + s] as usize;
            cache[cache_index(slot, r, kv, len, max_len, hd)] = value;
        }
        i += stride;
    }
}

/// `cache[to, h, p, d] = cache[from, h, p, d]` for positions `p < len` of every pair `(from, to)`
/// in `pairs` (`count` pairs, flattened): a prompt's cache, prefilled into one of its samples'
/// slots, copied to the others. `cache` is `[slots, kv_heads, max_len, head_dim]`; no slot is
/// both a source and a target. Units stride over the copied elements (any launch size covers
/// them).
#[cube(launch, launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn kv_slot_copy_kernel<F: Float>(
    cache: &mut Array<F>,
    pairs: &Array<u32>,
    count: u32,
    kv_heads: u32,
    len: u32,
    max_len: u32,
    head_dim: u32,
) {
    let (kv, len, max_len, hd) = (
        kv_heads as usize,
        len as usize,
        max_len as usize,
        head_dim as usize,
    );
    let per_pair = kv * len * hd;
    let total = count as usize * per_pair;
    let stride = CUBE_COUNT_X as usize * CUBE_DIM_X as usize;
    let mut i = ABSOLUTE_POS;
    while i < total {
        let pair = i / per_pair;
        let r = i % per_pair;
        let from = cache_index(pairs[2 * pair] as usize, r, kv, len, max_len, hd);
        let to = cache_index(pairs[2 * pair + 1] as usize, r, kv, len, max_len, hd);
        cache[to] = cache[from];
        i += stride;
    }
}

/// Where element `r` of a `[kv, len, hd]` block of one sequence's keys (or values) sits in a
/// cache `[slots, kv, max_len, hd]`, in slot `slot`.
#[cube]
fn cache_index(slot: usize, r: usize, kv: usize, len: usize, max_len: usize, hd: usize) -> usize {
    let d = r % hd;
    let p = (r / hd) % len;
    let h = r / (hd * len);
    ((slot * kv + h) * max_len + p) * hd + d
}
