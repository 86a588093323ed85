//! The two passes over one row of logits that the logprob kernels share, one cube per row at a time:
//! the online log-sum-exp and entropy (merged across the cube in shared memory), and the
//! gradient `g · (onehot(target) - softmax)` written in place of the row.

// `#[cube]` generates public helper items (expand types and functions) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Float modes of the row kernels: `exp` and `ln` as the hardware's approximations (`__expf`,
/// `__logf` on CUDA; a few ulp, against ~20 instructions each for the exact ones, which made the
/// forward pass compute-bound). Logits are assumed finite.
pub fn fast_math() -> enumset::EnumSet<FastMath> {
    FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf
}

/// A row's log-sum-exp and entropy at the kernel's temperature, the same in every unit.
#[derive(CubeType, Clone, Copy)]
pub struct RowStats {
    /// log Σ exp(x / T).
    pub lse: f32,
    /// -Σ p log p of softmax(x / T).
    pub entropy: f32,
}

/// Reads the `vectors` vectors of the row at `base` once. Every unit of the cube must call it
/// (it synchronises the cube) and gets the same result.
#[cube]
pub fn row_stats<F: Float, N: Size>(
    logits: &Array<Vector<F, N>>,
    base: usize,
    vectors: usize,
    inv_temperature: f32,
    #[comptime] block: usize,
) -> RowStats {
    let tid = UNIT_POS as usize;
    // Online: m = max, s = Σ exp(x - m), t = Σ exp(x - m)·x over this unit's columns.
    let mut m = f32::min_value();
    let mut s = 0.0f32;
    let mut t = 0.0f32;
    let mut j = tid;
    while j < vectors {
        let packed = logits[base + j];
        // The vector's max first: one rescale per vector and a branch-free sum per element (a
        // per-element `if x > m` rescale diverges and ran at half the copy bandwidth).
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
    let total = sm_s[0];
    let lse = sm_m[0] + total.ln();
    // H = -Σ p (x - lse) = lse - Σ p x.
    let entropy = lse - sm_t[0] / total;
    // A cube that goes on to another row overwrites these arrays.
    sync_cube();
    RowStats { lse, entropy }
}

/// Writes `grad[j] = g · (onehot(target)[j] - exp(x[j] / T - lse))` over the row at `base`
/// (`target` < 0: no one-hot). `g` includes the 1/T of d(x/T)/dx.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn write_row_grad<F: Float, N: Size>(
    logits: &Array<Vector<F, N>>,
    grad_logits: &mut Array<Vector<F, N>>,
    base: usize,
    vectors: usize,
    target: i32,
    lse: f32,
    g: f32,
    inv_temperature: f32,
    #[comptime] block: usize,
) {
    let mut j = UNIT_POS as usize;
    while j < vectors {
        let packed = logits[base + j];
        let mut out = Vector::empty();
        #[unroll]
        for k in 0..N::value() {
            let p = (f32::cast_from(packed[k]) * inv_temperature - lse).exp();
            let mut onehot = 0.0f32;
            if target >= 0 && j * N::value() + k == target as usize {
                onehot = 1.0f32;
            }
            out[k] = F::cast_from(g * (onehot - p));
        }
        grad_logits[base + j] = out;
        j += block;
    }
}
