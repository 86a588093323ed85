//! `x [m, k] · w [k, n]` for few rows (a decode step: one row per sequence), with the reduction
//! over `k` split across cubes so that a 64-row product still fills the GPU, and an epilogue that
//! sums the splits and applies what the layer does next (bias, residual add, SwiGLU).
//!
//! Each cube computes a `TILE x TILE` tile of the output for one slice of `k`; its 256 units
//! each hold a 4 x 4 block of accumulators. The current chunk of `k` of both `x` and `w` is staged
//! in shared memory; `w` is read once per row tile (once overall for `m <= 64`), coalesced.

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Rows and columns of the output one cube computes.
pub const TILE: usize = 64;
/// Output rows (and columns) per unit.
pub const PER_UNIT: usize = 4;
/// Units per cube along each axis (`TILE / PER_UNIT`).
pub const UNITS: usize = TILE / PER_UNIT;
/// Elements of `k` staged in shared memory at a time.
pub const K_CHUNK: usize = 32;

/// Elements of x (and of w) each unit loads per chunk.
const LOADS: usize = TILE * K_CHUNK / (UNITS * UNITS);

/// Loads chunk `chunk..chunk + K_CHUNK` of `x[row_tile..]` and `w[.., col_tile..]` into this
/// unit's registers (zeros past the edges): element `tid + i * units` of each `[TILE, K_CHUNK]`
/// (x) and `[K_CHUNK, TILE]` (w) tile, so consecutive units read consecutive addresses.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_chunk<F: Float>(
    x: &Array<F>,
    w: &Array<F>,
    rx: &mut Array<f32>,
    rw: &mut Array<f32>,
    chunk: usize,
    k_end: usize,
    m: usize,
    k: usize,
    n: usize,
    row_tile: usize,
    col_tile: usize,
    tid: usize,
) {
    #[unroll]
    for i in 0..LOADS {
        let e = tid + i * UNITS * UNITS;
        let r = row_tile + e / K_CHUNK;
        let j = chunk + e % K_CHUNK;
        let mut v = 0.0f32;
        if r < m && j < k_end {
            v = f32::cast_from(x[r * k + j]);
        }
        rx[i] = v;
        let j = chunk + e / TILE;
        let col = col_tile + e % TILE;
        let mut u = 0.0f32;
        if j < k_end && col < n {
            u = f32::cast_from(w[j * n + col]);
        }
        rw[i] = u;
    }
}

/// `partial[s, r, c] = Σ_{j in split s} x[r, j] · w[j, c]`: cube (x, y, z) = (column tile, row
/// tile, split); each split covers `k_split` (a multiple of [`K_CHUNK`]) elements of `k`.
#[cube(launch, launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn skinny_matmul_kernel<F: Float>(
    x: &Array<F>,
    w: &Array<F>,
    partial: &mut Array<f32>,
    m: u32,
    k: u32,
    n: u32,
    k_split: u32,
) {
    let (m, k, n) = (m as usize, k as usize, n as usize);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let tid = ty * UNITS + tx;
    let col0 = CUBE_POS_X as usize * TILE + tx * PER_UNIT;
    let row_tile = CUBE_POS_Y as usize * TILE;
    let k_begin = CUBE_POS_Z as usize * k_split as usize;
    let k_end = usize::min(k, k_begin + k_split as usize);

    let mut xs = SharedMemory::<f32>::new(TILE * K_CHUNK);
    let mut ws = SharedMemory::<f32>::new(K_CHUNK * TILE);
    let mut acc = Array::<f32>::new(PER_UNIT * PER_UNIT);
    #[unroll]
    for i in 0..PER_UNIT * PER_UNIT {
        acc[i] = 0.0f32;
    }
    let col_tile = CUBE_POS_X as usize * TILE;
    // The next chunk of x and w, loaded into registers while the current one is multiplied:
    // with the loads waited for at each chunk, warps spent ~12 of every ~18 cycles stalled on
    // them (ncu, bench/NOTES.md).
    let mut rx = Array::<f32>::new(LOADS);
    let mut rw = Array::<f32>::new(LOADS);
    load_chunk::<F>(
        x, w, &mut rx, &mut rw, k_begin, k_end, m, k, n, row_tile, col_tile, tid,
    );
    let mut chunk = k_begin;
    while chunk < k_end {
        #[unroll]
        for i in 0..LOADS {
            xs[tid + i * UNITS * UNITS] = rx[i];
            ws[tid + i * UNITS * UNITS] = rw[i];
        }
        sync_cube();
        let next = chunk + K_CHUNK;
        if next < k_end {
            load_chunk::<F>(
                x, w, &mut rx, &mut rw, next, k_end, m, k, n, row_tile, col_tile, tid,
            );
        }
        #[unroll]
        for kk in 0..K_CHUNK {
            #[unroll]
            for r in 0..PER_UNIT {
                let a = xs[(ty * PER_UNIT + r) * K_CHUNK + kk];
                #[unroll]
                for c in 0..PER_UNIT {
                    acc[r * PER_UNIT + c] += a * ws[kk * TILE + tx * PER_UNIT + c];
                }
            }
        }
        sync_cube();
        chunk = next;
    }
    let base = CUBE_POS_Z as usize * m * n;
    #[unroll]
    for r in 0..PER_UNIT {
        let row = row_tile + ty * PER_UNIT + r;
        #[unroll]
        for c in 0..PER_UNIT {
            let col = col0 + c;
            if row < m && col < n {
                partial[base + row * n + col] = acc[r * PER_UNIT + c];
            }
        }
    }
}

/// What the epilogue does with the summed product `y [m, n]`.
pub mod epilogue {
    /// `out = y (+ bias)`, `out` `[m, n]`.
    pub const WRITE: u32 = 0;
    /// `out += y` (a residual connection), `out` `[m, n]`.
    pub const ADD: u32 = 1;
    /// `out = silu(y[:, :n/2]) * y[:, n/2:]` (gate and up projections side by side), `out`
    /// `[m, n/2]`.
    pub const SWIGLU: u32 = 2;
}

/// `Σ_s partial[s * plane + index]` over `splits` partial products, four independent loads a
/// round: the kernels that summed 16-24 splits one load at a time took ~7 us a launch on an
/// H100 (bench/NOTES.md, session 13; this form is not yet measured there).
#[cube]
pub fn sum_splits(partial: &Array<f32>, index: usize, plane: usize, splits: usize) -> f32 {
    let mut a = 0.0f32;
    let mut b = 0.0f32;
    let mut c = 0.0f32;
    let mut d = 0.0f32;
    let full = splits / 4 * 4;
    let mut s = 0usize;
    while s < full {
        let at = s * plane + index;
        a += partial[at];
        b += partial[at + plane];
        c += partial[at + 2 * plane];
        d += partial[at + 3 * plane];
        s += 4;
    }
    while s < splits {
        a += partial[s * plane + index];
        s += 1;
    }
    (a + b) + (c + d)
}

/// Sums the `splits` partial products `[splits, rows, n]` (`rows >= m`: the tensor-core kernel
/// rounds up to whole tiles) and applies `mode` (see [`epilogue`]); one unit per element of `out`.
#[cube(launch, launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matmul_epilogue_kernel<F: Float>(
    partial: &Array<f32>,
    bias: &Array<F>,
    out: &mut Array<F>,
    splits: u32,
    m: u32,
    rows: u32,
    n: u32,
    #[comptime] mode: u32,
    #[comptime] has_bias: bool,
) {
    let i = ABSOLUTE_POS;
    let (m, n) = (m as usize, n as usize);
    let plane = rows as usize * n;
    if comptime![mode == epilogue::SWIGLU] {
        let half = n / 2;
        if i < m * half {
            let r = i / half;
            let c = i % half;
            let g = sum_splits(partial, r * n + c, plane, splits as usize);
            let u = sum_splits(partial, r * n + half + c, plane, splits as usize);
            let silu = g / (1.0f32 + (-g).exp());
            out[i] = F::cast_from(silu * u);
        }
    } else if i < m * n {
        let mut y = sum_splits(partial, i, plane, splits as usize);
        if comptime![has_bias] {
            y += f32::cast_from(bias[i % n]);
        }
        if comptime![mode == epilogue::ADD] {
            y += f32::cast_from(out[i]);
        }
        out[i] = F::cast_from(y);
    }
}
