//! Matrix products through cuBLAS on cubecl's CUDA buffers. At the training step's f32 shapes
//! on an H200, cuBLAS with TF32 runs 2.9x faster than burn 0.21's own product (cubek's
//! `SimpleCyclicCmma`, itself TF32-class) and 6x on the LM head (bench/RESULTS.md, `matmul`).
//!
//! cubecl-cuda 0.10 keeps its streams private. Where the stream cubecl runs the calling thread's
//! work on can be found ([`super::cuda_stream`], through CUPTI), a product is queued on it from
//! cubecl's device thread, in order with cubecl's kernels and without waiting for the device.
//! Otherwise cuBLAS runs on a stream of its own, ordered by the host: wait for this thread's
//! cubecl queue, run the product, wait for it, an idle gap per product (bench/NOTES.md).

// The cuBLAS and driver calls are FFI; each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;
use cubecl::server::Handle;
use cudarc::cublas::result as blas;
use cudarc::cublas::sys;
use cudarc::driver::result as driver;

/// Element type of all three matrices of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmElem {
    /// f32, accumulated in f32 (TF32 tensor cores if [`allow_tf32`] is on).
    F32,
    /// bf16, accumulated in f32.
    Bf16,
    /// f16, accumulated in f32.
    F16,
}

/// Why a product failed.
#[derive(Debug, thiserror::Error)]
pub enum GemmError {
    /// cubecl's queue or buffers.
    #[error("cubecl: {0}")]
    Cubecl(String),
    /// The CUDA driver (context, stream).
    #[error("CUDA driver: {0:?}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// cuBLAS itself (missing library, bad argument, execution failure).
    #[error("cuBLAS: {0:?}")]
    Cublas(#[from] cudarc::cublas::result::CublasError),
    /// `k_splits` does not divide `k`.
    #[error("a sum over {k} cut into {splits} equal chunks")]
    Splits {
        /// The summed dimension.
        k: usize,
        /// The chunks asked for.
        splits: usize,
    },
}

/// `out[m, n] = op(a) · op(b)`, all row-major and contiguous: `a` is [m, k], or stored [k, m] and
/// read transposed when `a_transposed`; `b` is [k, n], or stored [n, k] when `b_transposed`.
#[derive(Debug, Clone, Copy)]
pub struct Gemm<'a> {
    /// Left operand.
    pub a: &'a Handle,
    /// Read `a` transposed.
    pub a_transposed: bool,
    /// Right operand.
    pub b: &'a Handle,
    /// Read `b` transposed.
    pub b_transposed: bool,
    /// Output, `m * n` elements.
    pub out: &'a Handle,
    /// Rows of the output.
    pub m: usize,
    /// Columns of the output.
    pub n: usize,
    /// The summed dimension.
    pub k: usize,
    /// Element type of the inputs, and of the output unless `f32_out`.
    pub elem: GemmElem,
    /// Write the output in f32 (accumulated in f32 either way): the decode engine's products,
    /// whose sums its next kernel takes in f32.
    pub f32_out: bool,
    /// Cut the sum over `k` into this many equal chunks (`k` a multiple of it), each product
    /// written whole, one after another in `out` (`k_splits * m * n` elements) for the caller to
    /// sum: one batched call with `k_splits` times the blocks of one product, which a product
    /// of few rows and columns needs to keep the GPU's memory busy. 1: the product itself.
    pub k_splits: usize,
}

static TF32: AtomicBool = AtomicBool::new(false);

/// Lets f32 products use TF32 tensor cores (10-bit mantissa inputs, f32 accumulation), as
/// `torch.backends.cuda.matmul.allow_tf32` does. Off by default: exact f32, PyTorch's default.
pub fn allow_tf32(on: bool) {
    TF32.store(on, Ordering::Relaxed);
}

/// The cuBLAS handle of one GPU, its stream and the context they belong to.
struct Blas {
    handle: sys::cublasHandle_t,
    stream: cudarc::driver::sys::CUstream,
    context: cudarc::driver::sys::CUcontext,
}

// SAFETY: the handle, stream and context are plain driver handles, usable from any thread once
// the context is current there (`run` makes it so); the mutex serialises every use.
unsafe impl Send for Blas {}

/// One handle per GPU, by device index: a handle works only on its context's buffers (a product
/// on GPU 1 through GPU 0's handle reads illegal addresses).
static BLAS: Mutex<Vec<Option<Blas>>> = Mutex::new(Vec::new());

impl Blas {
    /// A handle on GPU `index`, bound to `stream`, or to a new stream of its own.
    fn new(index: usize, stream: Option<cudarc::driver::sys::CUstream>) -> Result<Self, GemmError> {
        driver::init()?;
        let device = driver::device::get(index as i32)?;
        // SAFETY: `device` is a valid device; the primary context is the one cubecl-cuda retains
        // for it, so cubecl's buffer addresses are valid in it.
        let context = unsafe { driver::primary_ctx::retain(device)? };
        // SAFETY: `context` was just retained and stays alive for the process.
        unsafe { driver::ctx::set_current(context)? };
        let stream = match stream {
            Some(stream) => stream,
            None => driver::stream::create(driver::stream::StreamKind::NonBlocking)?,
        };
        let handle = blas::create_handle()?;
        // SAFETY: both handles were just created in the current context.
        unsafe { blas::set_stream(handle, stream as sys::cudaStream_t)? };
        Ok(Self {
            handle,
            stream,
            context,
        })
    }
}

/// cuBLAS handles bound to cubecl's own streams, by (device index, stream): a handle's
/// workspace must not be shared by products running at once on two streams.
static STREAM_BLAS: Mutex<Vec<(usize, usize, Blas)>> = Mutex::new(Vec::new());

/// Runs `gemm` on `device` (whose client is `client`) after everything this thread queued on
/// `client`. Where cubecl's stream for this thread is known ([`super::cuda_stream`]), the
/// product is queued on that stream from cubecl's device thread, so it is ordered with cubecl's
/// work without waiting for the device, and returns once queued; otherwise it runs on a stream
/// of its own between two waits (`FORGE_CUBLAS_HOST_ORDER=1` forces that, to compare).
pub fn run(
    client: &ComputeClient<CudaRuntime>,
    device: &cubecl::cuda::CudaDevice,
    gemm: &Gemm<'_>,
) -> Result<(), GemmError> {
    if gemm.k_splits == 0 || !gemm.k.is_multiple_of(gemm.k_splits) {
        return Err(GemmError::Splits {
            k: gemm.k,
            splits: gemm.k_splits,
        });
    }
    if std::env::var("FORGE_CUBLAS_HOST_ORDER").as_deref() != Ok("1")
        && let Some(stream) = super::cuda_stream::current_stream(client, device.index)
    {
        return run_on_stream(client, device.index, stream as usize, gemm);
    }
    run_host_ordered(client, device, gemm)
}

/// What one `gemm_ex` call needs, as plain values (sent to cubecl's device thread).
#[derive(Clone, Copy)]
struct GemmCall {
    a: u64,
    b: u64,
    out: u64,
    a_transposed: bool,
    b_transposed: bool,
    m: usize,
    n: usize,
    k: usize,
    elem: GemmElem,
    f32_out: bool,
    k_splits: usize,
}

impl GemmCall {
    /// `gemm` with its three matrices at `[a, b, out]`.
    fn new(gemm: &Gemm<'_>, [a, b, out]: [u64; 3]) -> Self {
        Self {
            a,
            b,
            out,
            a_transposed: gemm.a_transposed,
            b_transposed: gemm.b_transposed,
            m: gemm.m,
            n: gemm.n,
            k: gemm.k,
            elem: gemm.elem,
            f32_out: gemm.f32_out,
            k_splits: gemm.k_splits,
        }
    }
}

/// [`run`] through a handle bound to cubecl's `stream`, queued from cubecl's device thread.
fn run_on_stream(
    client: &ComputeClient<CudaRuntime>,
    index: usize,
    stream: usize,
    gemm: &Gemm<'_>,
) -> Result<(), GemmError> {
    let cubecl = |e: cubecl::server::ServerError| GemmError::Cubecl(format!("{e:?}"));
    let address = |h: &Handle| -> Result<u64, GemmError> {
        Ok(client
            .get_resource(h.clone())
            .map_err(cubecl)?
            .resource()
            .ptr)
    };
    let call = GemmCall::new(
        gemm,
        [address(gemm.a)?, address(gemm.b)?, address(gemm.out)?],
    );
    let first = client
        .exclusive(move || -> Result<bool, GemmError> {
            let mut handles = STREAM_BLAS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let found = handles
                .iter()
                .position(|(i, s, _)| *i == index && *s == stream);
            let first = found.is_none();
            let at = match found {
                Some(at) => at,
                None => {
                    let blas = Blas::new(index, Some(stream as cudarc::driver::sys::CUstream))?;
                    handles.push((index, stream, blas));
                    handles.len() - 1
                }
            };
            let blas = &handles[at].2;
            // SAFETY: the context was retained in `Blas::new` and is never released.
            unsafe { driver::ctx::set_current(blas.context)? };
            // SAFETY: the addresses are live cubecl buffers of the sizes `Gemm` describes; the
            // product is queued on the stream cubecl's later work on them is queued on, so it
            // runs after the work that wrote them and before any that reuses them.
            unsafe { gemm_ex(blas.handle, &call)? };
            Ok(first)
        })
        .map_err(cubecl)??;
    if first {
        self_check(client, &cubecl::cuda::CudaDevice::new(index))?;
    }
    Ok(())
}

/// [`run`] on cuBLAS's own stream: wait for this thread's cubecl queue, run the product, wait
/// for it.
fn run_host_ordered(
    client: &ComputeClient<CudaRuntime>,
    device: &cubecl::cuda::CudaDevice,
    gemm: &Gemm<'_>,
) -> Result<(), GemmError> {
    let cubecl = |e: cubecl::server::ServerError| GemmError::Cubecl(format!("{e:?}"));
    cubecl::future::block_on(client.sync()).map_err(cubecl)?;
    // The resources keep the buffers alive until the product is done.
    let a = client.get_resource(gemm.a.clone()).map_err(cubecl)?;
    let b = client.get_resource(gemm.b.clone()).map_err(cubecl)?;
    let out = client.get_resource(gemm.out.clone()).map_err(cubecl)?;
    let mut guard = BLAS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if guard.len() <= device.index {
        guard.resize_with(device.index + 1, || None);
    }
    let slot = &mut guard[device.index];
    let first = slot.is_none();
    let blas = match slot.as_mut() {
        Some(blas) => blas,
        None => slot.insert(Blas::new(device.index, None)?),
    };
    // SAFETY: the context was retained in `Blas::new` and is never released.
    unsafe { driver::ctx::set_current(blas.context)? };
    let call = GemmCall::new(
        gemm,
        [a.resource().ptr, b.resource().ptr, out.resource().ptr],
    );
    // SAFETY: the pointers are live cubecl buffers of the sizes `Gemm` describes (held by the
    // resources above), in the current context; cubecl's queue is idle, and the call waits for
    // the product before the buffers can be reused.
    unsafe {
        gemm_ex(blas.handle, &call)?;
        driver::stream::synchronize(blas.stream)?;
    }
    drop((a, b, out, guard));
    if first {
        self_check(client, device)?;
    }
    Ok(())
}

/// Queues `call` on `handle`'s stream.
///
/// # Safety
/// `handle` must be live in the current context, and the addresses live buffers of that context
/// holding the matrices `call` describes until the product has run.
unsafe fn gemm_ex(handle: sys::cublasHandle_t, call: &GemmCall) -> Result<(), GemmError> {
    let (data_type, compute) = match call.elem {
        GemmElem::F32 if TF32.load(Ordering::Relaxed) => (
            sys::cudaDataType::CUDA_R_32F,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        ),
        GemmElem::F32 => (
            sys::cudaDataType::CUDA_R_32F,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        GemmElem::Bf16 => (
            sys::cudaDataType::CUDA_R_16BF,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        GemmElem::F16 => (
            sys::cudaDataType::CUDA_R_16F,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
    };
    let out_type = if call.f32_out {
        sys::cudaDataType::CUDA_R_32F
    } else {
        data_type
    };
    let op = |t: bool| {
        if t {
            sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    // cuBLAS is column-major, and a row-major [r, c] matrix is a column-major [c, r] one: the
    // row-major out = op(a) · op(b) is the column-major outᵀ = op(b)ᵀ · op(a)ᵀ.
    let splits = call.k_splits;
    let (m, n, k) = (call.m as i32, call.n as i32, (call.k / splits) as i32);
    let ldb = if call.b_transposed { call.k } else { call.n } as i32;
    let lda = if call.a_transposed { call.m } else { call.k } as i32;
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: as the caller promises; alpha and beta outlive the call, which reads them before
    // it returns (host pointer mode).
    unsafe {
        if splits == 1 {
            blas::gemm_ex(
                handle,
                op(call.b_transposed),
                op(call.a_transposed),
                n,
                m,
                k,
                (&raw const alpha).cast::<c_void>(),
                call.b as *const c_void,
                data_type,
                ldb,
                call.a as *const c_void,
                data_type,
                lda,
                (&raw const beta).cast::<c_void>(),
                call.out as *mut c_void,
                out_type,
                n,
                compute,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )?;
        } else {
            // Chunk `i` of `k`: columns `i * k` on of a row-major [m, k] (rows of one stored
            // transposed), rows `i * k` on of a row-major [k, n] (columns of one stored
            // transposed); the leading dimensions stay the whole matrices'.
            let chunk = i64::from(k);
            let stride_a = if call.a_transposed {
                chunk * i64::from(m)
            } else {
                chunk
            };
            let stride_b = if call.b_transposed {
                chunk
            } else {
                chunk * i64::from(n)
            };
            blas::gemm_strided_batched_ex(
                handle,
                op(call.b_transposed),
                op(call.a_transposed),
                n,
                m,
                k,
                (&raw const alpha).cast::<c_void>(),
                call.b as *const c_void,
                data_type,
                ldb,
                stride_b,
                call.a as *const c_void,
                data_type,
                lda,
                stride_a,
                (&raw const beta).cast::<c_void>(),
                call.out as *mut c_void,
                out_type,
                n,
                i64::from(m) * i64::from(n),
                splits as i32,
                compute,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )?;
        }
    }
    Ok(())
}

/// A product whose result is known, once per GPU: a cuBLAS that does not reach cubecl's
/// buffers (another context, another device) would otherwise train on whatever the output
/// buffer held before.
fn self_check(
    client: &ComputeClient<CudaRuntime>,
    device: &cubecl::cuda::CudaDevice,
) -> Result<(), GemmError> {
    let a = client.create_from_slice(f32::as_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    let b = client.create_from_slice(f32::as_bytes(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]));
    let out = client.create_from_slice(f32::as_bytes(&[f32::NAN; 4]));
    let check = Gemm {
        a: &a,
        a_transposed: false,
        b: &b,
        b_transposed: false,
        out: &out,
        m: 2,
        n: 2,
        k: 3,
        elem: GemmElem::F32,
        f32_out: false,
        k_splits: 1,
    };
    run(client, device, &check)?;
    let bytes = client
        .read_one(out)
        .map_err(|e| GemmError::Cubecl(format!("{e:?}")))?;
    let got = f32::from_bytes(&bytes);
    if got != [4.0, 5.0, 10.0, 11.0] {
        return Err(GemmError::Cubecl(format!(
            "cuBLAS self-check: [[1, 2, 3], [4, 5, 6]] x [[1, 0], [0, 1], [1, 1]] gave {got:?}, not [4, 5, 10, 11]: its products do not reach cubecl's buffers"
        )));
    }
    Ok(())
}
