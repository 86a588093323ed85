//! Target log-probabilities and entropies from logits, in one read of each row: an online
//! log-sum-exp (running max, running sum of exp, running sum of exp·x) per unit, merged across the
//! cube in shared memory. The [N, V] log-softmax is never materialised.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Units per cube; one cube handles one row. A power of two (the shared-memory tree needs it).
pub const BLOCK: usize = 256;

/// Per row `n` of `logits` [N, V] at temperature `1 / inv_temperature`: `lse[n]` = log Σ exp(x/T),
/// `logprob[n]` = x[target]/T - lse (0 where the target is negative, i.e. ignored), `entropy[n]`.
///
/// `logits` is read as vectors of `N` elements (16-byte loads for bf16 x 8), so `V` must be a
/// multiple of `N`; `logits_scalar` is the same buffer, for the one target element per row.
#[cube(launch)]
pub fn logprob_forward_kernel<F: Float, N: Size>(
    logits: &Array<Vector<F, N>>,
    logits_scalar: &Array<F>,
    targets: &Array<i32>,
    inv_temperature: f32,
    vocab: u32,
    logprob: &mut Array<f32>,
    entropy: &mut Array<f32>,
    lse: &mut Array<f32>,
    #[comptime] block: usize,
) {
    let row = CUBE_POS;
    if row < targets.len() {
        let v = vocab as usize;
        let vectors = v / N::value();
        let base = row * vectors;
        let tid = UNIT_POS as usize;

        // Online: m = max, s = Σ exp(x - m), t = Σ exp(x - m)·x over this unit's columns.
        let mut m = f32::min_value();
        let mut s = 0.0f32;
        let mut t = 0.0f32;
        let mut j = tid;
        while j < vectors {
            let packed = logits[base + j];
            // The vector's max first: one rescale per vector and a branch-free sum per element
            // (a per-element `if x > m` rescale diverges and ran at half the copy bandwidth).
            let mut vmax = f32::cast_from(packed[0]) * inv_temperature;
            #[unroll]
            for k in 1..N::value() {
                vmax = f32::max(vmax, f32::cast_from(packed[k]) * inv_temperature);
            }
            let new_m = f32::max(m, vmax);
            let scale = (m - new_m).exp();
            s *= scale;
            t *= scale;
            #[unroll]
            for k in 0..N::value() {
                let x = f32::cast_from(packed[k]) * inv_temperature;
                let e = (x - new_m).exp();
                s += e;
                t += e * x;
            }
            m = new_m;
            j += block;
        }

        let mut sm_m = SharedMemory::<f32>::new(block);
        let mut sm_s = SharedMemory::<f32>::new(block);
        let mut sm_t = SharedMemory::<f32>::new(block);
        sm_m[tid] = m;
        sm_s[tid] = s;
        sm_t[tid] = t;
        sync_cube();
        let mut stride = (block / 2).runtime();
        while stride > 0 {
            if tid < stride {
                let m1 = sm_m[tid];
                let m2 = sm_m[tid + stride];
                let mx = f32::max(m1, m2);
                let a = (m1 - mx).exp();
                let b = (m2 - mx).exp();
                sm_s[tid] = sm_s[tid] * a + sm_s[tid + stride] * b;
                sm_t[tid] = sm_t[tid] * a + sm_t[tid + stride] * b;
                sm_m[tid] = mx;
            }
            sync_cube();
            stride /= 2;
        }

        if tid == 0 {
            let total = sm_s[0];
            let row_lse = sm_m[0] + total.ln();
            lse[row] = row_lse;
            // H = -Σ p (x - lse) = lse - Σ p x.
            entropy[row] = row_lse - sm_t[0] / total;
            let target = targets[row];
            let mut lp = 0.0f32;
            if target >= 0 {
                lp = f32::cast_from(logits_scalar[row * v + target as usize]) * inv_temperature
                    - row_lse;
            }
            logprob[row] = lp;
        }
    }
}
