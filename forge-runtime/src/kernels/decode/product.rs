//! The decode engine's matrix products `x [m, k] · w [k, n]` for few rows: on tensor cores
//! ([`super::skinny_mma`]) where the runtime has them for the weights' type and shape, on CUDA
//! cores ([`super::skinny_matmul`]) otherwise; `k` split across cubes so that a 64-row product
//! still fills the GPU, then one epilogue launch sums the splits and applies what the layer does
//! next ([`epilogue`]). Where the runtime is CUDA the engine runs its products through cuBLAS
//! instead ([`CublasProducts`]: faster at every decode shape on an H100, bench/RESULTS.md); these
//! kernels serve every other runtime.

use cubecl::prelude::*;
use cubecl::server::Handle;

use super::launch;
use super::skinny_matmul::{self, epilogue, matmul_epilogue_kernel, skinny_matmul_kernel};
use super::skinny_mma::{self, skinny_mma_kernel};
use crate::kernels::args::{array_arg, optional_array_arg};

/// Cubes a product should launch to fill a large GPU (two per multiprocessor of an H100).
const TARGET_CUBES: usize = 264;

/// How a tensor-core product is cut into cubes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmaLaunch {
    /// Planes (warps) per cube, each with 16 output columns.
    pub planes: usize,
    /// Cubes to aim for, by splitting `k` (each split writes a whole f32 partial product).
    pub target_cubes: usize,
    /// Fewest chunks of `k` ([`skinny_mma::K_STAGE`]) one split covers.
    pub min_stages: usize,
}

impl MmaLaunch {
    /// What the engine uses: the best or within 1 us of it on Qwen3-0.6B's four decode products
    /// in a sweep of 2-8 planes, 264-1056 cubes, 1-4 chunks (`model products`, H200, bench/NOTES.md).
    pub const DEFAULT: Self = Self {
        planes: 4,
        target_cubes: 528,
        min_stages: 2,
    };
}

/// A weight matrix `[k, n]`, contiguous, on the device.
#[derive(Debug)]
pub struct Weight {
    /// The `k * n` elements, row-major.
    pub handle: Handle,
    /// Rows (the summed dimension).
    pub k: usize,
    /// Columns.
    pub n: usize,
    /// Products with it run on tensor cores.
    pub tensor_cores: bool,
    /// Chunks of `k` its products through cuBLAS are cut into ([`cublas_splits`]).
    pub cublas_splits: usize,
}

impl Weight {
    /// `handle` as a `[k, n]` weight of element type `F`, on tensor cores when `client` has them
    /// for `F` and this shape, unless `FORGE_DECODE_TENSOR_CORES=0` (which keeps the CUDA-core
    /// kernel, to compare the two on one build).
    pub fn new<R: Runtime, F: CubePrimitive>(
        client: &ComputeClient<R>,
        handle: Handle,
        k: usize,
        n: usize,
    ) -> Self {
        let allowed = std::env::var("FORGE_DECODE_TENSOR_CORES").map_or(true, |v| v != "0");
        Self {
            handle,
            k,
            n,
            tensor_cores: allowed && skinny_mma::supported::<R, F>(client, k, n),
            cublas_splits: cublas_splits(k, n),
        }
    }

    /// [`Weight::cublas_splits`] halved until at most `max_splits` (powers of two: halving
    /// keeps them dividing `k`), what a cuBLAS product with it writes.
    pub fn cublas_splits_within(&self, max_splits: usize) -> usize {
        let mut splits = self.cublas_splits;
        while splits > max_splits.max(1) {
            splits /= 2;
        }
        splits
    }
}

/// The product summed over splits of `k`: `splits` f32 partial products `[rows, n]`.
#[derive(Debug)]
pub struct Partials {
    /// `splits * rows * n` f32 values.
    pub handle: Handle,
    /// Partial products.
    pub splits: usize,
    /// Rows of each: `m`, or `m` rounded up to 16 on tensor cores (the extra rows zero).
    pub rows: usize,
}

/// How a product's reduction over `k` is cut across cubes, and the partials that writes.
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// Splits of `k`, each a partial product.
    splits: usize,
    /// Elements of `k` per split.
    k_split: usize,
    /// Rows of each partial ([`Partials::rows`]).
    rows: usize,
}

impl Cut {
    /// The cut for `x [m, w.k] · w` with at most `max_splits` splits (`launch` on tensor cores).
    fn new(w: &Weight, m: usize, max_splits: usize, launch: MmaLaunch) -> Self {
        if w.tensor_cores {
            let columns = w.n.div_ceil(launch.planes * skinny_mma::TILE);
            let row_tiles = m.div_ceil(skinny_mma::ROWS);
            let stages = w.k / skinny_mma::K_STAGE;
            let splits = launch
                .target_cubes
                .div_ceil(columns * row_tiles)
                .clamp(1, (stages / launch.min_stages).max(1).min(max_splits));
            let k_split = stages.div_ceil(splits) * skinny_mma::K_STAGE;
            return Self {
                splits: w.k.div_ceil(k_split),
                k_split,
                rows: m.next_multiple_of(skinny_mma::TILE),
            };
        }
        let tile = skinny_matmul::TILE;
        let tiles = w.n.div_ceil(tile) * m.div_ceil(tile);
        let chunks = w.k.div_ceil(skinny_matmul::K_CHUNK);
        let splits = TARGET_CUBES
            .div_ceil(tiles)
            .clamp(1, chunks.min(max_splits));
        let k_split = chunks.div_ceil(splits) * skinny_matmul::K_CHUNK;
        Self {
            splits: w.k.div_ceil(k_split),
            k_split,
            rows: m,
        }
    }

    /// Bytes of the f32 partials.
    fn bytes(&self, n: usize) -> usize {
        (self.splits * self.rows * n).max(1) * 4
    }
}

/// Bytes of the f32 partials [`partials`] writes for `x [m, w.k] · w` with at most `max_splits`
/// splits, or [`CublasProducts::partials`] with [`Weight::cublas_splits_within`] of them (the
/// larger): what a buffer passed to either needs.
pub fn partials_bytes(w: &Weight, m: usize, max_splits: usize) -> usize {
    let cublas = w.cublas_splits_within(max_splits) * m * w.n * 4;
    Cut::new(w, m, max_splits, MmaLaunch::DEFAULT)
        .bytes(w.n)
        .max(cublas)
}

/// `x [m, w.k] · w` into f32 partial products over at most `max_splits` splits of `k` (one split:
/// the product itself, in f32), in a buffer of their own.
pub fn partials<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Weight,
    m: usize,
    max_splits: usize,
) -> Partials {
    let out = client.empty(partials_bytes(w, m, max_splits));
    partials_into::<R, F>(client, x, w, m, max_splits, MmaLaunch::DEFAULT, out)
}

/// [`partials`] written into `out` (at least [`partials_bytes`] bytes; the decode engine keeps
/// one such buffer for every product of a step), the tensor-core launch cut as `launch` says.
pub fn partials_into<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Weight,
    m: usize,
    max_splits: usize,
    launch: MmaLaunch,
    out: Handle,
) -> Partials {
    let cut = Cut::new(w, m, max_splits, launch);
    debug_assert!(out.size() as usize >= cut.bytes(w.n));
    let len = cut.splits * cut.rows * w.n;
    if w.tensor_cores {
        launch!(skinny_mma_kernel::<F, R>(
            client,
            CubeCount::Static(
                w.n.div_ceil(launch.planes * skinny_mma::TILE) as u32,
                m.div_ceil(skinny_mma::ROWS) as u32,
                cut.splits as u32,
            ),
            CubeDim::new_2d(skinny_mma::PLANE_SIZE as u32, launch.planes as u32),
            skinny_mma::VECTOR,
            array_arg::<R, F>(x, m * w.k),
            array_arg::<R, F>(&w.handle, w.k * w.n),
            array_arg::<R, f32>(&out, len),
            m as u32,
            w.k as u32,
            w.n as u32,
            cut.k_split as u32,
            cut.rows as u32,
            launch.planes,
        ));
    } else {
        let tile = skinny_matmul::TILE;
        launch!(skinny_matmul_kernel::<F, R>(
            client,
            CubeCount::Static(
                w.n.div_ceil(tile) as u32,
                m.div_ceil(tile) as u32,
                cut.splits as u32,
            ),
            CubeDim::new_2d(skinny_matmul::UNITS as u32, skinny_matmul::UNITS as u32),
            array_arg::<R, F>(x, m * w.k),
            array_arg::<R, F>(&w.handle, w.k * w.n),
            array_arg::<R, f32>(&out, len),
            m as u32,
            w.k as u32,
            w.n as u32,
            cut.k_split as u32,
        ));
    }
    Partials {
        handle: out,
        splits: cut.splits,
        rows: cut.rows,
    }
}

/// `out = epilogue(x [m, w.k] · w (+ bias))` with `mode` one of [`epilogue`]: `out` is `[m, w.n]`,
/// or `[m, w.n / 2]` for SwiGLU. `none` stands in for an absent bias (any buffer; unread).
#[allow(clippy::too_many_arguments)]
pub fn product<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Weight,
    m: usize,
    bias: Option<&Handle>,
    none: &Handle,
    mode: u32,
    out: &Handle,
) {
    let partials = partials::<R, F>(client, x, w, m, usize::MAX);
    finish::<R, F>(client, &partials, w, m, bias, none, mode, out);
}

/// The epilogue of [`product`] on its `partials`: sums the splits, applies `mode` (and `bias`),
/// writes `out`.
#[allow(clippy::too_many_arguments)]
pub fn finish<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    partials: &Partials,
    w: &Weight,
    m: usize,
    bias: Option<&Handle>,
    none: &Handle,
    mode: u32,
    out: &Handle,
) {
    let outputs = if mode == epilogue::SWIGLU {
        m * w.n / 2
    } else {
        m * w.n
    };
    let units = 256usize;
    launch!(matmul_epilogue_kernel::<F, R>(
        client,
        CubeCount::Static(outputs.div_ceil(units).max(1) as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        array_arg::<R, f32>(&partials.handle, partials.splits * partials.rows * w.n),
        optional_array_arg::<R, F>(bias, w.n, none),
        array_arg::<R, F>(out, outputs),
        partials.splits as u32,
        m as u32,
        partials.rows as u32,
        w.n as u32,
        mode,
        bias.is_some(),
    ));
}

/// The decode products through cuBLAS on the stream cubecl runs this thread's work on
/// ([`crate::kernels::cublas`]), where the runtime is CUDA: one "split", the f32 product itself,
/// so the kernels that take a product's split sums (RoPE, residual + norm, SwiGLU) read it as
/// they read the tensor-core kernel's partials.
///
/// Why: the tensor-core kernel splits `k` across cubes to fill the GPU and writes f32 partials
/// about as large as the weights (bench/NOTES.md, session 13), so each product moved 2-3x its
/// weights' bytes; cuBLAS picks its own cut per shape.
#[cfg(feature = "cuda")]
#[derive(Debug, Clone, Copy)]
pub struct CublasProducts {
    device: usize,
    elem: crate::kernels::cublas::GemmElem,
}

#[cfg(feature = "cuda")]
impl CublasProducts {
    /// cuBLAS products on `device` for weights of type `F`, where the runtime is CUDA, `F` is
    /// bf16 or f16, cubecl's stream for this thread is known (so products queue in order with
    /// cubecl's kernels and can be recorded in a graph), and `FORGE_DECODE_CUBLAS` is not `0`
    /// (which keeps the tensor-core kernel, to compare the two on one build). `FORGE_DECODE_CUBLAS=1`
    /// takes cuBLAS even where the stream is unknown (each product then waits for the device
    /// before and after: for a profiler, which holds CUPTI, to see the cuBLAS kernels).
    pub fn new<R: Runtime, F: CubePrimitive>(
        client: &ComputeClient<R>,
        device: &R::Device,
    ) -> Option<Self> {
        use cubecl::ir::{ElemType, FloatKind};
        let wanted = std::env::var("FORGE_DECODE_CUBLAS");
        if wanted.as_deref() == Ok("0") {
            return None;
        }
        let (client, device) = crate::kernels::cuda_stream::as_cuda(client, device)?;
        let elem = match F::as_type_native_unchecked().elem_type() {
            ElemType::Float(FloatKind::BF16) => crate::kernels::cublas::GemmElem::Bf16,
            ElemType::Float(FloatKind::F16) => crate::kernels::cublas::GemmElem::F16,
            _ => return None,
        };
        if wanted.as_deref() != Ok("1") {
            crate::kernels::cuda_stream::current_stream(client, device)?;
        }
        Some(Self { device, elem })
    }

    /// `x [m, w.k] · w` in f32 into `out` (at least `splits * m * w.n` f32), as `splits`
    /// partial products of `m` rows over equal chunks of `k` (one batched cuBLAS call; `splits`
    /// must divide `k`: [`cublas_splits`] picks one).
    pub fn partials<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        x: &Handle,
        w: &Weight,
        m: usize,
        splits: usize,
        out: Handle,
    ) -> Result<Partials, crate::kernels::cublas::GemmError> {
        use std::any::Any;
        let cuda = (client as &dyn Any)
            .downcast_ref::<ComputeClient<cubecl::cuda::CudaRuntime>>()
            .ok_or_else(|| crate::kernels::cublas::GemmError::Cubecl("not a CUDA client".into()))?;
        crate::kernels::cublas::run(
            cuda,
            &cubecl::cuda::CudaDevice::new(self.device),
            &crate::kernels::cublas::Gemm {
                a: x,
                a_transposed: false,
                b: &w.handle,
                b_transposed: false,
                out: &out,
                m,
                n: w.n,
                k: w.k,
                elem: self.elem,
                f32_out: true,
                k_splits: splits,
            },
        )?;
        Ok(Partials {
            handle: out,
            splits,
            rows: m,
        })
    }
}

/// Output columns (times splits) a decode product through cuBLAS should reach, unless
/// `FORGE_DECODE_CUBLAS_COLUMNS` says otherwise (0: never split).
pub const CUBLAS_COLUMNS: usize = 4096;

/// Chunks of `k` a decode product `[m, k] · [k, n]` through cuBLAS is cut into: doubled while
/// `n * splits` is under [`CUBLAS_COLUMNS`] and each chunk keeps at least 256 of `k`. cuBLAS
/// gives a 64-row product about one block per 32-64 output columns, so Qwen3-0.6B's o and down
/// products (n = 1,024) ran 32 blocks on 132 multiprocessors, or added a split-k reduction
/// launch of its own; as a batch of 4 chunks they run 4x the blocks, and the kernel after them
/// sums the 4 partials where it reads the product anyway.
pub fn cublas_splits(k: usize, n: usize) -> usize {
    let columns = std::env::var("FORGE_DECODE_CUBLAS_COLUMNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CUBLAS_COLUMNS);
    let mut splits = 1;
    while n * splits < columns && k.is_multiple_of(2 * splits) && k / (2 * splits) >= 256 {
        splits *= 2;
    }
    splits
}

#[cfg(test)]
mod tests {
    use super::cublas_splits;

    #[test]
    fn cublas_splits_reach_the_columns_in_chunks_of_at_least_256() {
        // Qwen3-0.6B: q/k/v, o, gate/up, down, LM head.
        assert_eq!(cublas_splits(1024, 4096), 1);
        assert_eq!(cublas_splits(2048, 1024), 4);
        assert_eq!(cublas_splits(1024, 6144), 1);
        assert_eq!(cublas_splits(3072, 1024), 4);
        assert_eq!(cublas_splits(1024, 151_936), 1);
        // Chunks stay at least 256 long and divide `k`.
        assert_eq!(cublas_splits(512, 64), 2);
        assert_eq!(cublas_splits(1000, 64), 2);
        assert_eq!(cublas_splits(768, 64), 2);
        assert_eq!(cublas_splits(300, 64), 1);
        assert_eq!(cublas_splits(100, 64), 1);
    }
}
