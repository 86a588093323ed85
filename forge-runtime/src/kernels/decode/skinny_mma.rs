//! `x [m, k] · w [k, n]` for few rows on tensor cores (cubecl's `cmma`: 16 x 16 x 16 tiles, f16
//! or bf16 inputs, f32 accumulation), where the runtime has them; the CUDA-core kernel
//! ([`super::skinny_matmul`]) is the fallback and shares its epilogue.
//!
//! Why: a decode step's products have 64 rows, so each weight element feeds 64 multiply-adds.
//! On CUDA cores that is ~77 GFLOP a step for Qwen3-0.6B, compute-bound at 52-58 us a launch on
//! an H200 (bench/NOTES.md); on tensor cores the same products are bound by reading the weights.
//!
//! Each plane (warp) owns 16 output columns and up to four 16-row tiles (64 rows: a decode batch
//! of 64 reads `w` once). A cube's planes share a staged `[64, K_STAGE]` chunk of `x` in shared
//! memory (zeros past row `m`, so `x` needs no padding); each plane reads its `w` tiles straight
//! from global memory, all of a chunk's tiles issued before the first product. The reduction over
//! `k` is split across cubes (grid z) into f32 partials `[splits, rows, n]` (`rows` = `m`
//! rounded up to 16), summed by [`super::skinny_matmul::matmul_epilogue_kernel`].

// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use cubecl::ir::{ElemType, FloatKind, StorageType};
use cubecl::prelude::*;

/// Side of the square tiles (m = n = k = 16).
pub const TILE: usize = 16;
/// Planes per cube, each with 16 columns of the output.
pub const PLANES: usize = 8;
/// Threads per plane the kernel is written for (CUDA's warp).
pub const PLANE_SIZE: usize = 32;
/// Output columns one cube computes.
pub const CUBE_COLUMNS: usize = PLANES * TILE;
/// Rows of `x` one cube covers (four 16-row tiles).
pub const ROWS: usize = 4 * TILE;
/// Elements of `k` staged per round; `k` must be a multiple of it.
pub const K_STAGE: usize = 4 * TILE;

/// Elements of the staged x chunk each unit loads.
const STAGE_LOADS: usize = ROWS * K_STAGE / (PLANES * PLANE_SIZE);

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

/// One 16-row tile of the product: `acc += xs[row tile, kk-th 16 of the chunk] · b`.
#[cube]
fn mma_tile<F: Float>(
    xs: &SharedMemory<F>,
    b: &cmma::Matrix<F>,
    acc: &cmma::Matrix<f32>,
    #[comptime] tile: usize,
    #[comptime] kk: usize,
) {
    let start = tile * TILE * K_STAGE + kk * TILE;
    let a = cmma::Matrix::<F>::from_slice(
        cmma::MatrixIdent::A,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::RowMajor,
        &xs.slice(start, start + (TILE - 1) * K_STAGE + TILE),
        K_STAGE as u32,
    );
    cmma::execute::<F, F, f32, f32>(&a, b, acc, acc);
}

/// `w[j .. j + 16, col .. col + 16]` as a B tile.
#[cube]
fn load_w<F: Float>(w: &Array<F>, j: usize, col: usize, n: usize) -> cmma::Matrix<F> {
    let start = j * n + col;
    cmma::Matrix::<F>::from_slice(
        cmma::MatrixIdent::B,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::RowMajor,
        &w.slice(start, start + (TILE - 1) * n + TILE),
        n as u32,
    )
}

/// The four row tiles' products with one B tile (`kk`-th 16 of the staged chunk); tiles past
/// row `m` are skipped (`live` tiles from the top).
#[cube]
#[allow(clippy::too_many_arguments)]
fn mma_rows<F: Float>(
    xs: &SharedMemory<F>,
    b: &cmma::Matrix<F>,
    acc0: &cmma::Matrix<f32>,
    acc1: &cmma::Matrix<f32>,
    acc2: &cmma::Matrix<f32>,
    acc3: &cmma::Matrix<f32>,
    live: usize,
    #[comptime] kk: usize,
) {
    mma_tile::<F>(xs, b, acc0, 0usize, kk);
    if live > 1usize {
        mma_tile::<F>(xs, b, acc1, 1usize, kk);
    }
    if live > 2usize {
        mma_tile::<F>(xs, b, acc2, 2usize, kk);
    }
    if live > 3usize {
        mma_tile::<F>(xs, b, acc3, 3usize, kk);
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

/// `partial[s, r, c] = Σ_{j in split s} x[r, j] · w[j, c]` for `r < rows` (`m` rounded up to 16;
/// the rows past `m` are zero). Cube (x, y, z) = (group of [`CUBE_COLUMNS`] columns, 64-row tile,
/// split); cube dim (32, [`PLANES`]); each split covers `k_split` (a multiple of [`K_STAGE`])
/// elements of `k`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn skinny_mma_kernel<F: Float>(
    x: &Array<F>,
    w: &Array<F>,
    partial: &mut Array<f32>,
    m: u32,
    k: u32,
    n: u32,
    k_split: u32,
    rows: u32,
) {
    let (m, k, n) = (m as usize, k as usize, n as usize);
    let tid = UNIT_POS as usize;
    let col = (CUBE_POS_X as usize * PLANES + UNIT_POS_Y as usize) * TILE;
    let row_tile = CUBE_POS_Y as usize * ROWS;
    let k_begin = CUBE_POS_Z as usize * k_split as usize;
    let k_end = usize::min(k, k_begin + k_split as usize);
    // Row tiles holding at least one of the first `m` rows.
    let live = usize::min(4usize, (m - row_tile).div_ceil(TILE));
    // Planes past the last column still stage x with the others (the barriers need them all).
    let active = col < n;

    let mut xs = SharedMemory::<F>::new_aligned(ROWS * K_STAGE, 32usize);
    let acc0 = cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::Undefined,
        0.0,
    );
    let acc1 = cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::Undefined,
        0.0,
    );
    let acc2 = cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::Undefined,
        0.0,
    );
    let acc3 = cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::Undefined,
        0.0,
    );
    // Clamped so idle planes read a valid tile (their products are never stored).
    let wcol = usize::min(col, n - TILE);

    let mut chunk = k_begin;
    while chunk < k_end {
        // The chunk's four w tiles first: their global reads are in flight while x is staged.
        let b0 = load_w::<F>(w, chunk, wcol, n);
        let b1 = load_w::<F>(w, chunk + TILE, wcol, n);
        let b2 = load_w::<F>(w, chunk + 2 * TILE, wcol, n);
        let b3 = load_w::<F>(w, chunk + 3 * TILE, wcol, n);
        #[unroll]
        for i in 0..STAGE_LOADS {
            let e = tid + i * PLANES * PLANE_SIZE;
            let r = row_tile + e / K_STAGE;
            let mut v = F::new(0.0);
            if r < m {
                v = x[r * k + chunk + e % K_STAGE];
            }
            xs[e] = v;
        }
        sync_cube();
        if active {
            mma_rows::<F>(&xs, &b0, &acc0, &acc1, &acc2, &acc3, live, 0usize);
            mma_rows::<F>(&xs, &b1, &acc0, &acc1, &acc2, &acc3, live, 1usize);
            mma_rows::<F>(&xs, &b2, &acc0, &acc1, &acc2, &acc3, live, 2usize);
            mma_rows::<F>(&xs, &b3, &acc0, &acc1, &acc2, &acc3, live, 3usize);
        }
        sync_cube();
        chunk += K_STAGE;
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
