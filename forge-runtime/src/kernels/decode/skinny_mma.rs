//! `x [m, k] · w [k, n]` for few rows on tensor cores (cubecl's `cmma`: 16 x 16 x 16 tiles, f16
//! or bf16 inputs, f32 accumulation), where the runtime has them; the CUDA-core kernel
//! ([`super::skinny_matmul`]) is the fallback and shares its epilogue.
//!
//! Why: a decode step's products have 64 rows, so each weight element feeds 64 multiply-adds.
//! On CUDA cores that is ~77 GFLOP a step for Qwen3-0.6B, compute-bound at 52-58 us a launch on
//! an H200 (bench/NOTES.md); on tensor cores the same products are bound by reading the weights.
//!
//! Each plane (warp) owns 16 output columns and up to four 16-row tiles (64 rows: a decode batch
//! of 64 reads `w` once). A cube stages a `[64, K_STAGE]` chunk of `x` (zeros past row `m`, so
//! `x` needs no padding) and the `[K_STAGE, 16 * planes]` chunk of `w` its planes use in shared
//! memory, read from global memory in 16-byte vectors, the next chunk's loads in flight while the
//! current one is multiplied. (Tiles loaded by `wmma` straight from global memory, and scalar
//! loads of `x`, left the first version waiting on memory at 5% of DRAM bandwidth: ncu,
//! bench/NOTES.md.) The reduction over `k` is split across cubes (grid z) into f32 partials
//! `[splits, rows, n]` (`rows` = `m` rounded up to 16), summed by
//! [`super::skinny_matmul::matmul_epilogue_kernel`].

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::ir::{ElemType, FloatKind, StorageType};
use cubecl::prelude::*;

/// Side of the square tiles (m = n = k = 16).
pub const TILE: usize = 16;
/// Threads per plane the kernel is written for (CUDA's warp).
pub const PLANE_SIZE: usize = 32;
/// Rows of `x` one cube covers (four 16-row tiles).
pub const ROWS: usize = 4 * TILE;
/// Elements of `k` staged per round; `k` must be a multiple of it.
pub const K_STAGE: usize = 4 * TILE;
/// Elements per vector of the global loads (16 bytes of f16 or bf16); the launch's vector size.
pub const VECTOR: usize = 8;
/// Elements added to each row of the staged chunks, against shared-memory bank conflicts (the
/// rows stay 32-byte aligned, as tensor-core loads need).
const PAD: usize = 16;
/// Row stride of the staged `x`, in elements.
const X_STRIDE: usize = K_STAGE + PAD;

/// Whether `client` runs this kernel for element type `F` (16 x 16 x 16 tiles of `F` with f32
/// accumulation, on 32-wide planes) and the product's shape fits it (`k` a multiple of
/// [`K_STAGE`], `n` of [`TILE`]).
pub fn supported<R: Runtime, F: CubePrimitive>(
    client: &ComputeClient<R>,
    k: usize,
    n: usize,
) -> bool {
    let elem = F::as_type_native_unchecked().storage_type();
    let f32_type: StorageType = ElemType::Float(FloatKind::F32).into();
    let config = cubecl::ir::features::MmaConfig {
        a_type: elem,
        b_type: elem,
        cd_type: f32_type,
        m: TILE as u32,
        n: TILE as u32,
        k: TILE as u32,
    };
    let planes = client.properties().hardware.plane_size_min as usize == PLANE_SIZE
        && client.properties().hardware.plane_size_max as usize == PLANE_SIZE;
    planes
        && client.features().matmul.cmma.contains(&config)
        && k > 0
        && k.is_multiple_of(K_STAGE)
        && n > 0
        && n.is_multiple_of(TILE)
}

/// A 16 x 16 f32 accumulator tile set to zero.
#[cube]
fn zero_accumulator() -> cmma::Matrix<f32> {
    cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::Undefined,
        0.0,
    )
}

/// One 16-row tile of the product: `acc += xs[row tile, kk-th 16 of the chunk] · b`.
#[cube]
fn mma_tile<F: Float, N: Size>(
    xs: &SharedMemory<Vector<F, N>>,
    b: &cmma::Matrix<Vector<F, N>>,
    acc: &cmma::Matrix<f32>,
    #[comptime] tile: usize,
    #[comptime] kk: usize,
) {
    let start = (tile * TILE * X_STRIDE + kk * TILE) / VECTOR;
    let a = cmma::Matrix::<Vector<F, N>>::from_slice(
        cmma::MatrixIdent::A,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::RowMajor,
        &xs.slice(start, start + ((TILE - 1) * X_STRIDE + TILE) / VECTOR),
        X_STRIDE as u32,
    );
    cmma::execute::<Vector<F, N>, Vector<F, N>, f32, f32>(&a, b, acc, acc);
}

/// The `kk`-th 16 rows of the staged `w` chunk, this plane's 16 columns, as a B tile.
#[cube]
fn load_b<F: Float, N: Size>(
    ws: &SharedMemory<Vector<F, N>>,
    plane: usize,
    #[comptime] w_stride: usize,
    #[comptime] kk: usize,
) -> cmma::Matrix<Vector<F, N>> {
    let start = (kk * TILE * w_stride) / VECTOR + plane * TILE / VECTOR;
    cmma::Matrix::<Vector<F, N>>::from_slice(
        cmma::MatrixIdent::B,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::RowMajor,
        &ws.slice(start, start + ((TILE - 1) * w_stride + TILE) / VECTOR),
        w_stride as u32,
    )
}

/// The four row tiles' products with the `kk`-th B tile of the staged chunk; tiles past row `m`
/// are skipped (`live` tiles from the top).
#[cube]
#[allow(clippy::too_many_arguments)]
fn mma_rows<F: Float, N: Size>(
    xs: &SharedMemory<Vector<F, N>>,
    ws: &SharedMemory<Vector<F, N>>,
    plane: usize,
    acc0: &cmma::Matrix<f32>,
    acc1: &cmma::Matrix<f32>,
    acc2: &cmma::Matrix<f32>,
    acc3: &cmma::Matrix<f32>,
    live: usize,
    #[comptime] w_stride: usize,
    #[comptime] kk: usize,
) {
    let b = load_b::<F, N>(ws, plane, w_stride, kk);
    mma_tile::<F, N>(xs, &b, acc0, 0usize, kk);
    if live > 1usize {
        mma_tile::<F, N>(xs, &b, acc1, 1usize, kk);
    }
    if live > 2usize {
        mma_tile::<F, N>(xs, &b, acc2, 2usize, kk);
    }
    if live > 3usize {
        mma_tile::<F, N>(xs, &b, acc3, 3usize, kk);
    }
}

/// Stores row tile `tile` of this plane's columns into `partial` (row stride `n`).
#[cube]
fn store_tile(partial: &mut Array<f32>, acc: &cmma::Matrix<f32>, row: usize, col: usize, n: usize) {
    let start = row * n + col;
    cmma::store(
        &mut partial.slice_mut(start, start + (TILE - 1) * n + TILE),
        acc,
        n as u32,
        cmma::MatrixLayout::RowMajor,
    );
}

/// Loads chunk `chunk .. chunk + K_STAGE` of `x` (rows from `row_tile`, clamped to the last
/// row: the staging zeroes them) and of `w` (columns from `col_tile`, clamped to the last
/// vector) into this unit's registers, consecutive units on consecutive vectors.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_chunk<F: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    w: &Array<Vector<F, N>>,
    rx: &mut Array<Vector<F, N>>,
    rw: &mut Array<Vector<F, N>>,
    chunk: usize,
    m: usize,
    k: usize,
    n: usize,
    row_tile: usize,
    col_tile: usize,
    #[comptime] planes: usize,
) {
    let tid = UNIT_POS as usize;
    let units = comptime![planes * PLANE_SIZE];
    let x_row = comptime![K_STAGE / VECTOR];
    #[unroll]
    for i in 0..comptime![ROWS * K_STAGE / VECTOR / (planes * PLANE_SIZE)] {
        let e = tid + i * units;
        let r = usize::min(row_tile + e / x_row, m - 1);
        rx[i] = x[(r * k + chunk) / VECTOR + e % x_row];
    }
    let w_row = comptime![planes * TILE / VECTOR];
    let last = n / VECTOR - 1;
    #[unroll]
    for i in 0..comptime![K_STAGE * planes * TILE / VECTOR / (planes * PLANE_SIZE)] {
        let e = tid + i * units;
        let j = chunk + e / w_row;
        rw[i] = w[j * (n / VECTOR) + usize::min(col_tile / VECTOR + e % w_row, last)];
    }
}

/// `partial[s, r, c] = Σ_{j in split s} x[r, j] · w[j, c]` for `r < rows` (`m` rounded up to 16;
/// the rows past `m` are zero). Cube (x, y, z) = (group of `16 * planes` columns, 64-row tile,
/// split); cube dim (32, `planes`); each split covers `k_split` (a multiple of [`K_STAGE`])
/// elements of `k`. `x` and `w` are read as vectors of [`VECTOR`] elements (`N`).
#[cube(launch, launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn skinny_mma_kernel<F: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    w: &Array<Vector<F, N>>,
    partial: &mut Array<f32>,
    m: u32,
    k: u32,
    columns: u32,
    k_split: u32,
    rows: u32,
    #[comptime] planes: usize,
) {
    // (`columns`, not `n`: the launch macro names `N`'s vector size `_n`.)
    let (m, k, n) = (m as usize, k as usize, columns as usize);
    let tid = UNIT_POS as usize;
    let plane = UNIT_POS_Y as usize;
    let units = comptime![planes * PLANE_SIZE];
    let w_stride = comptime![planes * TILE + PAD];
    let col_tile = CUBE_POS_X as usize * comptime![planes * TILE];
    let col = col_tile + plane * TILE;
    let row_tile = CUBE_POS_Y as usize * ROWS;
    let k_begin = CUBE_POS_Z as usize * k_split as usize;
    let k_end = usize::min(k, k_begin + k_split as usize);
    // Row tiles holding at least one of the first `m` rows.
    let live = usize::min(4usize, (m - row_tile).div_ceil(TILE));
    // Planes past the last column stage with the others (the barriers need them all).
    let active = col < n;

    let mut xs =
        SharedMemory::<Vector<F, N>>::new_aligned(comptime![ROWS * X_STRIDE / VECTOR], 32usize);
    let mut ws =
        SharedMemory::<Vector<F, N>>::new_aligned(comptime![K_STAGE * w_stride / VECTOR], 32usize);
    let x_loads = comptime![ROWS * K_STAGE / VECTOR / (planes * PLANE_SIZE)];
    let w_loads = comptime![K_STAGE * planes * TILE / VECTOR / (planes * PLANE_SIZE)];
    let mut rx = Array::<Vector<F, N>>::new(x_loads);
    let mut rw = Array::<Vector<F, N>>::new(w_loads);
    let acc0 = zero_accumulator();
    let acc1 = zero_accumulator();
    let acc2 = zero_accumulator();
    let acc3 = zero_accumulator();

    load_chunk::<F, N>(
        x, w, &mut rx, &mut rw, k_begin, m, k, n, row_tile, col_tile, planes,
    );
    let x_row = comptime![K_STAGE / VECTOR];
    let w_row = comptime![planes * TILE / VECTOR];
    let mut chunk = k_begin;
    while chunk < k_end {
        #[unroll]
        for i in 0..x_loads {
            let e = tid + i * units;
            let r = e / x_row;
            xs[r * (X_STRIDE / VECTOR) + e % x_row] =
                select(row_tile + r < m, rx[i], Vector::<F, N>::new(F::new(0.0)));
        }
        #[unroll]
        for i in 0..w_loads {
            let e = tid + i * units;
            ws[e / w_row * (w_stride / VECTOR) + e % w_row] = rw[i];
        }
        sync_cube();
        let next = chunk + K_STAGE;
        if next < k_end {
            load_chunk::<F, N>(
                x, w, &mut rx, &mut rw, next, m, k, n, row_tile, col_tile, planes,
            );
        }
        if active {
            mma_rows::<F, N>(
                &xs, &ws, plane, &acc0, &acc1, &acc2, &acc3, live, w_stride, 0usize,
            );
            mma_rows::<F, N>(
                &xs, &ws, plane, &acc0, &acc1, &acc2, &acc3, live, w_stride, 1usize,
            );
            mma_rows::<F, N>(
                &xs, &ws, plane, &acc0, &acc1, &acc2, &acc3, live, w_stride, 2usize,
            );
            mma_rows::<F, N>(
                &xs, &ws, plane, &acc0, &acc1, &acc2, &acc3, live, w_stride, 3usize,
            );
        }
        sync_cube();
        chunk = next;
    }
    if active {
        let base = CUBE_POS_Z as usize * rows as usize + row_tile;
        store_tile(partial, &acc0, base, col, n);
        if live > 1usize {
            store_tile(partial, &acc1, base + TILE, col, n);
        }
        if live > 2usize {
            store_tile(partial, &acc2, base + 2 * TILE, col, n);
        }
        if live > 3usize {
            store_tile(partial, &acc3, base + 3 * TILE, col, n);
        }
    }
}
