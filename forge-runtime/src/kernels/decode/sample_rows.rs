//! One token per row of logits, drawn on the device from softmax(logits / T) with a uniform
//! number the host drew from the row's own random stream (so the draws do not depend on where
//! they run), or the most likely token; with its log-probability over the whole vocabulary. Only
//! the tokens and log-probabilities go back to the host, not the `[rows, vocab]` logits.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use crate::kernels::cube_reduce::cube_max;

/// Units per cube; one cube per row, each unit owning a contiguous chunk of the vocabulary for the
/// draw's order (the draw walks the vocabulary in order, as the host's sampler does).
pub const BLOCK: usize = 256;

/// Vectors each unit loads at once in the passes over a row (their loads independent).
const IN_FLIGHT: usize = 4;

/// Row `r` = the cube's position. Sampling (`greedy` false): the first token `i` whose cumulative
/// weight Σ_{j<=i} exp((x_j - max) / T) exceeds `uniforms[r]` times the total. Greedy: the first
/// most likely token. `logprobs[r]` = log softmax(x · inv_temperature) at the token. The logits
/// are read as vectors of `N` (`vocab` a multiple of it).
///
/// Three passes over the row: the maximum, strided so that consecutive units read consecutive
/// vectors; each unit's weight sum over its own chunk (vectors, several in flight); then the
/// chunk holding the draw, staged in shared memory by the whole cube and walked in order by one
/// unit. (Each unit walking its own chunk one logit at a time, and one unit walking the drawn
/// chunk from global memory, made this 176 us a step for 64 rows on an H100: bench/NOTES.md.)
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
) {
    let row = CUBE_POS;
    let tid = UNIT_POS as usize;
    let width = N::value();
    let v = vocab as usize;
    let vectors = v / width;
    let base = row * vectors;
    let chunk = (vectors + BLOCK - 1) / BLOCK;
    let begin = usize::min(tid * chunk, vectors);
    let end = usize::min(begin + chunk, vectors);

    // The maximum, and each unit's first argmax in its (increasing) order.
    let mut local_max = f32::min_value();
    let mut local_arg = v;
    let mut j = tid;
    while j + (IN_FLIGHT - 1) * BLOCK < vectors {
        #[unroll]
        for i in 0..IN_FLIGHT {
            let at = j + i * BLOCK;
            let x = logits[base + at];
            #[unroll]
            for t in 0..width {
                if x[t] > local_max {
                    local_max = x[t];
                    local_arg = at * width + t;
                }
            }
        }
        j += IN_FLIGHT * BLOCK;
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
        j += BLOCK;
    }
    let max = cube_max(local_max, BLOCK);

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
    let mut weights = SharedMemory::<f32>::new(BLOCK);
    let mut firsts = SharedMemory::<u32>::new(BLOCK);
    weights[tid] = weight;
    let mut first = v as u32;
    if local_max == max {
        first = local_arg as u32;
    }
    firsts[tid] = first;
    sync_cube();
    // Unit 0 finds the chunk holding the draw (a serial scan over BLOCK sums is cheap) and leaves
    // it, the weight before it, and the total in shared memory.
    let mut picked = SharedMemory::<f32>::new(3usize);
    if tid == 0 {
        let mut total = 0.0f32;
        for u in 0usize..BLOCK {
            total += weights[u];
        }
        let target = uniforms[row] * total;
        let mut before = 0.0f32;
        let mut unit = BLOCK.runtime();
        let mut last_nonzero = 0usize;
        let mut acc = 0.0f32;
        for u in 0usize..BLOCK {
            if weights[u] > 0.0f32 {
                last_nonzero = u;
            }
            if unit == BLOCK && target < acc + weights[u] {
                unit = u;
                before = acc;
            }
            acc += weights[u];
        }
        if unit == BLOCK {
            // Rounding put the target past the total: the last chunk with weight, as the host's
            // sampler falls back to its last candidate.
            unit = last_nonzero;
            before = acc - weights[last_nonzero];
        }
        picked[0] = unit as f32;
        picked[1] = before;
        picked[2] = total;
        if comptime![greedy] {
            let mut best = v as u32;
            for u in 0usize..BLOCK {
                best = u32::min(best, firsts[u]);
            }
            // The greedy token's logit is the maximum.
            tokens[row] = best;
            logprobs[row] = -total.ln();
        }
    }
    sync_cube();
    if !comptime![greedy] {
        // The drawn chunk, BLOCK vectors at a time: the cube stages the logits and their
        // weights in shared memory, unit 0 walks them in order.
        let mut xs = SharedMemory::<f32>::new(comptime![BLOCK * width]);
        let mut ws = SharedMemory::<f32>::new(comptime![BLOCK * width]);
        let start = picked[0] as usize * chunk;
        let stop = usize::min(start + chunk, vectors);
        let target = uniforms[row] * picked[2];
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
                let count = usize::min(BLOCK, stop - window) * width;
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
            window += BLOCK;
        }
        if tid == 0 {
            if token == v {
                token = last;
                token_logit = last_logit;
            }
            tokens[row] = token as u32;
            logprobs[row] = (token_logit - max) * inv_temperature - picked[2].ln();
        }
    }
}
