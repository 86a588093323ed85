//! One token per row of logits, drawn on the device from softmax(logits / T) with a uniform
//! number the host drew from the row's own random stream (so the draws do not depend on where
//! they run), or the most likely token; with its log-probability over the whole vocabulary. Only
//! the tokens and log-probabilities go back to the host, not the `[rows, vocab]` logits.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use crate::kernels::cube_reduce::cube_max;

/// Units per cube (one cube per row, each unit owning a contiguous chunk of the vocabulary for
/// the draw's order: the draw walks the vocabulary in order, as the host's sampler does), unless
/// `FORGE_DECODE_SAMPLE_BLOCK` says otherwise. 1,024 units (more loads in flight on the 64
/// multiprocessors a 64-row step occupies) ran no faster than 256 (H100: 2.41 and 2.45 ms a step
/// against 2.38; bench/NOTES.md, session 15).
pub const BLOCK: usize = 256;

/// [`BLOCK`], or `FORGE_DECODE_SAMPLE_BLOCK` where set to a power of two from 32 to 1,024.
pub fn block() -> usize {
    super::units_from_env("FORGE_DECODE_SAMPLE_BLOCK", BLOCK)
}

/// Bytes of shared memory the kernel declares at `block` units reading vectors of `width`: what
/// decides the largest cube a runtime can launch it with.
pub fn shared_bytes(block: usize, width: usize, greedy: bool) -> usize {
    // Two cube-wide maxima and the scan; sampling stages `block` vectors and their weights.
    let staged = if greedy { 0 } else { 2 * block * width + 2 };
    4 * (3 * block + staged)
}

/// Vectors each unit loads at once in the passes over a row (their loads independent).
const IN_FLIGHT: usize = 4;

/// Row `r` = the cube's position. Sampling (`greedy` false): the first token `i` whose cumulative
/// weight Σ_{j<=i} exp((x_j - max) / T) exceeds `uniforms[r]` times the total. Greedy: the first
/// most likely token. `logprobs[r]` = log softmax(x · inv_temperature) at the token. The logits
/// are read as vectors of `N` (`vocab` a multiple of it).
///
/// Three passes over the row: the maximum, strided so that consecutive units read consecutive
/// vectors; each unit's weight sum over its own chunk (vectors, several in flight), the chunks'
/// sums scanned across the cube; then the chunk holding the draw, staged in shared memory by the
/// whole cube and walked in order by one unit. `block` units, a power of two ([`shared_bytes`]
/// says what it costs). (Each unit walking its own chunk one logit at a time, and one unit
/// walking the drawn chunk from global memory, made this 176 us a step for 64 rows on an H100:
/// bench/NOTES.md.)
#[cube(launch, launch_unchecked)]
// cubecl's kernels have no `div_ceil`.
#[allow(unused_assignments, clippy::manual_div_ceil)]
pub fn sample_rows_kernel<N: Size>(
    logits: &Array<Vector<f32, N>>,
    uniforms: &Array<f32>,
    tokens: &mut Array<u32>,
    logprobs: &mut Array<f32>,
    vocab: u32,
    inv_temperature: f32,
    #[comptime] greedy: bool,
    #[comptime] block: usize,
) {
    let row = CUBE_POS;
    let tid = UNIT_POS as usize;
    let width = N::value();
    let v = vocab as usize;
    let vectors = v / width;
    let base = row * vectors;
    let chunk = (vectors + block - 1) / block;
    let begin = usize::min(tid * chunk, vectors);
    let end = usize::min(begin + chunk, vectors);

    // The maximum, and each unit's first argmax in its (increasing) order.
    let mut local_max = f32::min_value();
    let mut local_arg = v;
    let mut j = tid;
    while j + (IN_FLIGHT - 1) * block < vectors {
        #[unroll]
        for i in 0..IN_FLIGHT {
            let at = j + i * block;
            let x = logits[base + at];
            #[unroll]
            for t in 0..width {
                if x[t] > local_max {
                    local_max = x[t];
                    local_arg = at * width + t;
                }
            }
        }
        j += IN_FLIGHT * block;
    }
    while j < vectors {
        let x = logits[base + j];
        #[unroll]
        for t in 0..width {
            if x[t] > local_max {
                local_max = x[t];
                local_arg = j * width + t;
            }
        }
        j += block;
    }
    let max = cube_max(local_max, block);

    // Each unit's weight over its chunk, summed in order (the draw below re-adds the drawn
    // chunk in the same order).
    let mut weight = 0.0f32;
    let mut j = begin;
    while j + IN_FLIGHT <= end {
        #[unroll]
        for i in 0..IN_FLIGHT {
            let x = logits[base + j + i];
            #[unroll]
            for t in 0..width {
                weight += ((x[t] - max) * inv_temperature).exp();
            }
        }
        j += IN_FLIGHT;
    }
    while j < end {
        let x = logits[base + j];
        #[unroll]
        for t in 0..width {
            weight += ((x[t] - max) * inv_temperature).exp();
        }
        j += 1;
    }
    // The chunks' weights summed in order by a scan over the cube: log2(block) rounds, where a
    // serial sum by one unit is `block` dependent shared-memory reads.
    let mut scan = SharedMemory::<f32>::new(block);
    scan[tid] = weight;
    sync_cube();
    let mut offset = 1usize.runtime();
    while offset < block {
        let mut add = 0.0f32;
        if tid >= offset {
            add = scan[tid - offset];
        }
        sync_cube();
        scan[tid] += add;
        sync_cube();
        offset *= 2;
    }
    let total = scan[block - 1];
    let mut before = 0.0f32;
    if tid > 0 {
        before = scan[tid - 1];
    }
    if comptime![greedy] {
        // The first most likely token: the smallest of the units' first argmax where it
        // reached the row's maximum (token ids are below 2^24: exact in f32).
        let mut first = f32::cast_from(v);
        if local_max == max {
            first = f32::cast_from(local_arg);
        }
        let best = -cube_max(-first, block);
        if tid == 0 {
            // The greedy token's logit is the maximum.
            tokens[row] = u32::cast_from(best);
            logprobs[row] = -total.ln();
        }
    } else {
        let target = uniforms[row] * total;
        // The unit whose chunk holds the target (ranked above all others), else, where rounding
        // put the target past the total, the last chunk with weight, as the host's sampler
        // falls back to its last candidate: one maximum over the cube finds either.
        let mut rank = f32::new(-1.0);
        if weight > 0.0f32 {
            rank = f32::cast_from(tid);
            if target >= before && target < before + weight {
                rank = f32::cast_from(tid + block);
            }
        }
        let top = cube_max(rank, block);
        let mut unit = top;
        let ranked = comptime![block as f32].runtime();
        if top >= ranked {
            unit = top - ranked;
        }
        let mut picked = SharedMemory::<f32>::new(2usize);
        if f32::cast_from(tid) == unit {
            picked[0] = unit;
            picked[1] = before;
        }
        sync_cube();
        // The drawn chunk, `block` vectors at a time: the cube stages the logits and their
        // weights in shared memory, unit 0 walks them in order.
        let mut xs = SharedMemory::<f32>::new(comptime![block * width]);
        let mut ws = SharedMemory::<f32>::new(comptime![block * width]);
        let start = picked[0] as usize * chunk;
        let stop = usize::min(start + chunk, vectors);
        let mut acc = picked[1];
        let mut token = v;
        let mut token_logit = 0.0f32;
        let mut last = start * width;
        let mut last_logit = 0.0f32;
        let mut window = start;
        while window < stop {
            let e = window + tid;
            if e < stop {
                let x = logits[base + e];
                #[unroll]
                for t in 0..width {
                    xs[tid * width + t] = x[t];
                    ws[tid * width + t] = ((x[t] - max) * inv_temperature).exp();
                }
            }
            sync_cube();
            if tid == 0 {
                let count = usize::min(block, stop - window) * width;
                for i in 0..count {
                    let w = ws[i];
                    if token == v && target < acc + w {
                        token = window * width + i;
                        token_logit = xs[i];
                    }
                    if w > 0.0f32 {
                        last = window * width + i;
                        last_logit = xs[i];
                    }
                    acc += w;
                }
            }
            sync_cube();
            window += block;
        }
        if tid == 0 {
            if token == v {
                token = last;
                token_logit = last_logit;
            }
            tokens[row] = token as u32;
            logprobs[row] = (token_logit - max) * inv_temperature - total.ln();
        }
    }
}
