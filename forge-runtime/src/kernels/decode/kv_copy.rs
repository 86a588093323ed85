//! Copies a prompt's prefill keys (or values) into the decode engine's cache slots of its samples.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// `cache[slot, h, p, d] = src[h, p, d]` for every slot in `slots`, `p < len`. `src` is
/// `[kv_heads, len, head_dim]`, `cache` `[slots, kv_heads, max_len, head_dim]`; one unit per
/// element of `src`.
#[cube(launch)]
pub fn kv_copy_kernel<F: Float>(
    src: &Array<F>,
    cache: &mut Array<F>,
    slots: &Array<u32>,
    kv_heads: u32,
    len: u32,
    max_len: u32,
    head_dim: u32,
) {
    let i = ABSOLUTE_POS;
    let (len, max_len, hd) = (len as usize, max_len as usize, head_dim as usize);
    if i < kv_heads as usize * len * hd {
        let d = i % hd;
        let p = (i / hd) % len;
        let h = i / (hd * len);
        let value = src[i];
        for s in 0..slots.len() {
            let slot = slots[s] as usize;
            cache[((slot * kv_heads as usize + h) * max_len + p) * hd + d] = value;
        }
    }
}
