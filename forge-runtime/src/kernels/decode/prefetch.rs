//! A product's weights pulled into L2 by extra cubes of the small kernel before it (residual +
//! RMSNorm before q/k/v and gate/up, SwiGLU before down), so the product then reads them from L2.
//!
//! Why: those kernels are chains of dependent steps over a few hundred KB (4-5 us on an H100,
//! bench/NOTES.md) during which DRAM is idle, and the cuBLAS products after them ran 1.5-3.3 us
//! faster on weights already in L2 than on weights from DRAM (products bench, session 16). The
//! extra cubes read the next weights, as words, while the kernel's own cubes do their work.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;
use cubecl::server::Handle;

/// Cubes a kernel adds for a prefetch: two per multiprocessor of an H100 or H200 (132).
pub const CUBES: usize = 264;

/// Weights to pull into L2 during a launch: `words` u32 words of `weights`, and a 4-byte `sink`
/// the reading cubes may write (so the compiler keeps their loads; what they write is never
/// read).
#[derive(Debug, Clone, Copy)]
pub struct Prefetch<'a> {
    /// The next product's weights.
    pub weights: &'a Handle,
    /// Their size in u32 words.
    pub words: usize,
    /// Four bytes of scratch.
    pub sink: &'a Handle,
}

impl Prefetch<'_> {
    /// Cubes to add to a launch for it: [`CUBES`], or none for `None`.
    pub fn cubes(prefetch: Option<&Self>) -> usize {
        prefetch.map_or(0, |_| CUBES)
    }
}

/// The reading done by prefetch cube `cube` of `cubes` (of `block` units): every `cubes *
/// block`-th word of `weights[..words]` from its own, four loads in flight per unit.
#[cube]
pub fn prefetch_l2(
    weights: &Array<u32>,
    words: usize,
    cube: usize,
    cubes: usize,
    sink: &mut Array<u32>,
    #[comptime] block: usize,
) {
    let stride = cubes * block;
    let mut i = cube * block + UNIT_POS as usize;
    let mut acc = 0u32;
    while i + 3 * stride < words {
        acc ^= weights[i] ^ weights[i + stride] ^ weights[i + 2 * stride] ^ weights[i + 3 * stride];
        i += 4 * stride;
    }
    while i < words {
        acc ^= weights[i];
        i += stride;
    }
    // Depends on every load, so none is dropped; the sink is scratch, whatever lands there.
    if acc == 0x7fc0_0001u32 {
        sink[0] = acc;
    }
}
