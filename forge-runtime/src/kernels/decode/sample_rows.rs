//! One token per row of logits, drawn on the device from softmax(logits / T) with a uniform
//! number the host drew from the row's own random stream (so the draws do not depend on where
//! they run), or the most likely token; with its log-probability over the whole vocabulary. Only
//! the tokens and log-probabilities go back to the host, not the `[rows, vocab]` logits.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

use crate::kernels::cube_reduce::cube_max;

/// Units per cube; one cube per row, each unit owning a contiguous chunk of the vocabulary (the
/// draw walks the vocabulary in order, as the host's sampler does).
pub const BLOCK: usize = 256;

/// Row `r` = the cube's position. Sampling (`greedy` false): the first token `i` whose cumulative
/// weight Σ_{j<=i} exp((x_j - max) / T) exceeds `uniforms[r]` times the total. Greedy: the first
/// most likely token. `logprobs[r]` = log softmax(x · inv_temperature) at the token.
#[cube(launch, launch_unchecked)]
// cubecl's kernels have no `div_ceil`; the outer `if` is decided when compiling the kernel.
#[allow(unused_assignments, clippy::manual_div_ceil, clippy::collapsible_if)]
pub fn sample_rows_kernel(
    logits: &Array<f32>,
    uniforms: &Array<f32>,
    tokens: &mut Array<u32>,
    logprobs: &mut Array<f32>,
    vocab: u32,
    inv_temperature: f32,
    #[comptime] greedy: bool,
) {
    let row = CUBE_POS;
    let tid = UNIT_POS as usize;
    let v = vocab as usize;
    let chunk = (v + BLOCK - 1) / BLOCK;
    let base = row * v;
    let begin = usize::min(tid * chunk, v);
    let end = usize::min(begin + chunk, v);

    // The maximum (and each unit's first argmax) over a strided pass, consecutive units on
    // consecutive logits: the contiguous chunks are needed only for the draw's order below.
    let mut local_max = f32::min_value();
    let mut local_arg = v;
    let mut j = tid;
    while j < v {
        let x = logits[base + j];
        if x > local_max {
            local_max = x;
            local_arg = j;
        }
        j += BLOCK;
    }
    let max = cube_max(local_max, BLOCK);
    let mut weight = 0.0f32;
    for j in begin..end {
        weight += ((logits[base + j] - max) * inv_temperature).exp();
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
            tokens[row] = best;
            logprobs[row] = (logits[base + best as usize] - max) * inv_temperature - total.ln();
        }
    }
    sync_cube();
    if !comptime![greedy] {
        if tid == picked[0] as usize {
            let target = uniforms[row] * picked[2];
            let mut acc = picked[1];
            let mut token = v;
            let mut last = begin;
            for j in begin..end {
                let w = ((logits[base + j] - max) * inv_temperature).exp();
                if token == v && target < acc + w {
                    token = j;
                }
                if w > 0.0f32 {
                    last = j;
                }
                acc += w;
            }
            if token == v {
                token = last;
            }
            tokens[row] = token as u32;
            logprobs[row] = (logits[base + token] - max) * inv_temperature - picked[2].ln();
        }
    }
}
