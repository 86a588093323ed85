//! Matrix products through cuBLAS on cubecl's CUDA buffers. At the training step's f32 shapes
//! on an H200, cuBLAS with TF32 runs 2.9x faster than burn 0.21's own product (cubek's
//! `SimpleCyclicCmma`, itself TF32-class) and 6x on the LM head (bench/RESULTS.md, `matmul`).
//!
//! cuBLAS runs on a stream of its own: cubecl-cuda 0.10 keeps its streams private, so a product
//! is ordered with cubecl's work by the host: wait for this thread's cubecl queue, run the
//! product, wait for it. That costs an idle gap per product (bench/NOTES.md measures it).

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
    /// Element type of all three.
    pub elem: GemmElem,
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
    fn new(index: usize) -> Result<Self, GemmError> {
        driver::init()?;
        let device = driver::device::get(index as i32)?;
        // SAFETY: `device` is a valid device; the primary context is the one cubecl-cuda retains
        // for it, so cubecl's buffer addresses are valid in it.
        let context = unsafe { driver::primary_ctx::retain(device)? };
        // SAFETY: `context` was just retained and stays alive for the process.
        unsafe { driver::ctx::set_current(context)? };
        let stream = driver::stream::create(driver::stream::StreamKind::NonBlocking)?;
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

/// Runs `gemm` on `device` (whose client is `client`) after everything this thread queued on
/// `client`, and returns when it is done.
pub fn run(
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
        None => slot.insert(Blas::new(device.index)?),
    };
    // SAFETY: the context was retained in `Blas::new` and is never released.
    unsafe { driver::ctx::set_current(blas.context)? };
    let (data_type, compute) = match gemm.elem {
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
    let op = |t: bool| {
        if t {
            sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    // cuBLAS is column-major, and a row-major [r, c] matrix is a column-major [c, r] one: the
    // row-major out = op(a) · op(b) is the column-major outᵀ = op(b)ᵀ · op(a)ᵀ.
    let (m, n, k) = (gemm.m as i32, gemm.n as i32, gemm.k as i32);
    let ldb = if gemm.b_transposed { k } else { n };
    let lda = if gemm.a_transposed { m } else { k };
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: the pointers are live cubecl buffers of the sizes `Gemm` describes (held by the
    // resources above), in the current context; cubecl's queue is idle, and the call waits for
    // the product before the buffers can be reused.
    unsafe {
        blas::gemm_ex(
            blas.handle,
            op(gemm.b_transposed),
            op(gemm.a_transposed),
            n,
            m,
            k,
            (&raw const alpha).cast::<c_void>(),
            b.resource().ptr as *const c_void,
            data_type,
            ldb,
            a.resource().ptr as *const c_void,
            data_type,
            lda,
            (&raw const beta).cast::<c_void>(),
            out.resource().ptr as *mut c_void,
            data_type,
            n,
            compute,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )?;
        driver::stream::synchronize(blas.stream)?;
    }
    drop((a, b, out, guard));
    if first {
        self_check(client, device)?;
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
