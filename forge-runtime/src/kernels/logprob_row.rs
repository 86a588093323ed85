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

/// Running online log-sum-exp state of one unit: m = max, s = Σ exp(x - m), t = Σ exp(x - m)·x.
#[derive(CubeType, Clone, Copy)]
struct Online {
    m: f32,
    s: f32,
    t: f32,
}

/// Adds `count` (1 or 4) vectors to the state `(m, s, t)`: their max first, so one rescale per group and a
/// branch-free sum per element (a per-element `if x > m` rescale diverges and ran at half the copy
/// bandwidth).
#[cube]
#[allow(clippy::too_many_arguments)]
fn online_add<F: Float, N: Size>(
    m: f32,
    s: f32,
    t: f32,
    a: Vector<F, N>,
    b: Vector<F, N>,
    c: Vector<F, N>,
    d: Vector<F, N>,
    inv_temperature: f32,
    #[comptime] count: usize,
) -> Online {
    let mut vmax = m;
    #[unroll]
    for k in 0..N::value() {
        vmax = f32::max(vmax, f32::cast_from(a[k]) * inv_temperature);
        if comptime![count > 1] {
            vmax = f32::max(vmax, f32::cast_from(b[k]) * inv_temperature);
            vmax = f32::max(vmax, f32::cast_from(c[k]) * inv_temperature);
            vmax = f32::max(vmax, f32::cast_from(d[k]) * inv_temperature);
        }
    }
    let scale = (m - vmax).exp();
    let mut s = s * scale;
    let mut t = t * scale;
    #[unroll]
    for k in 0..N::value() {
        let x = f32::cast_from(a[k]) * inv_temperature;
        let e = (x - vmax).exp();
        s += e;
        t += e * x;
        if comptime![count > 1] {
            let x = f32::cast_from(b[k]) * inv_temperature;
            let e = (x - vmax).exp();
            s += e;
            t += e * x;
            let x = f32::cast_from(c[k]) * inv_temperature;
            let e = (x - vmax).exp();
            s += e;
            t += e * x;
            let x = f32::cast_from(d[k]) * inv_temperature;
            let e = (x - vmax).exp();
            s += e;
            t += e * x;
        }
    }
    Online { m: vmax, s, t }
}

/// Reads the `vectors` vectors of the row at `base` once. Every unit of the cube must call it
/// (it synchronises the cube) and gets the same result. Each unit keeps four loads in flight, so
/// that few cubes per multiprocessor still saturate memory.
#[cube]
pub fn row_stats<F: Float, N: Size>(
    logits: &Array<Vector<F, N>>,
    base: usize,
    vectors: usize,
    inv_temperature: f32,
    #[comptime] block: usize,
) -> RowStats {
    let tid = UNIT_POS as usize;
    let mut m = f32::min_value();
    let mut s = 0.0f32;
    let mut t = 0.0f32;
    let mut j = tid;
    while j + 3 * block < vectors {
        let a = logits[base + j];
        let b = logits[base + j + block];
        let c = logits[base + j + 2 * block];
        let d = logits[base + j + 3 * block];
        let acc = online_add::<F, N>(m, s, t, a, b, c, d, inv_temperature, 4usize);
        m = acc.m;
        s = acc.s;
        t = acc.t;
        j += 4 * block;
    }
    while j < vectors {
        let a = logits[base + j];
        let acc = online_add::<F, N>(m, s, t, a, a, a, a, inv_temperature, 1usize);
        m = acc.m;
        s = acc.s;
        t = acc.t;
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
/// (`target` < 0: no one-hot), four vectors in flight per unit. `g` includes the 1/T of
/// d(x/T)/dx.
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
    while j + 3 * block < vectors {
        let a = logits[base + j];
        let b = logits[base + j + block];
        let c = logits[base + j + 2 * block];
        let d = logits[base + j + 3 * block];
        grad_logits[base + j] = grad_vector::<F, N>(a, j, target, lse, g, inv_temperature);
        grad_logits[base + j + block] =
            grad_vector::<F, N>(b, j + block, target, lse, g, inv_temperature);
        grad_logits[base + j + 2 * block] =
            grad_vector::<F, N>(c, j + 2 * block, target, lse, g, inv_temperature);
        grad_logits[base + j + 3 * block] =
            grad_vector::<F, N>(d, j + 3 * block, target, lse, g, inv_temperature);
        j += 4 * block;
    }
    while j < vectors {
        let a = logits[base + j];
        grad_logits[base + j] = grad_vector::<F, N>(a, j, target, lse, g, inv_temperature);
        j += block;
    }
}

/// [`write_row_grad`] over the logits' own buffer: each unit reads a vector and writes its
/// gradient in the same place, so the row's logits are gone afterwards. For callers that own the
/// logits (nothing else reads them), which saves the gradient's allocation and its memory.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn write_row_grad_in_place<F: Float, N: Size>(
    logits: &mut Array<Vector<F, N>>,
    base: usize,
    vectors: usize,
    target: i32,
    lse: f32,
    g: f32,
    inv_temperature: f32,
    #[comptime] block: usize,
) {
    let mut j = UNIT_POS as usize;
    while j + 3 * block < vectors {
        let a = logits[base + j];
        let b = logits[base + j + block];
        let c = logits[base + j + 2 * block];
        let d = logits[base + j + 3 * block];
        logits[base + j] = grad_vector::<F, N>(a, j, target, lse, g, inv_temperature);
        logits[base + j + block] =
            grad_vector::<F, N>(b, j + block, target, lse, g, inv_temperature);
        logits[base + j + 2 * block] =
            grad_vector::<F, N>(c, j + 2 * block, target, lse, g, inv_temperature);
        logits[base + j + 3 * block] =
            grad_vector::<F, N>(d, j + 3 * block, target, lse, g, inv_temperature);
        j += 4 * block;
    }
    while j < vectors {
        let a = logits[base + j];
        logits[base + j] = grad_vector::<F, N>(a, j, target, lse, g, inv_temperature);
        j += block;
    }
}

/// Element `column` of the row at `base`, read from its vector (every unit reads the same one).
#[cube]
pub fn row_element<F: Float, N: Size>(
    logits: &Array<Vector<F, N>>,
    base: usize,
    column: usize,
) -> f32 {
    let packed = logits[base + column / N::value()];
    let lane = column % N::value();
    let mut value = 0.0f32;
    #[unroll]
    for k in 0..N::value() {
        value = select(k == lane, f32::cast_from(packed[k]), value);
    }
    value
}

/// The gradient of the `j`-th vector of a row.
#[cube]
fn grad_vector<F: Float, N: Size>(
    packed: Vector<F, N>,
    j: usize,
    target: i32,
    lse: f32,
    g: f32,
    inv_temperature: f32,
) -> Vector<F, N> {
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
    out
}
