//! The CUDA stream cubecl runs the calling thread's work on, found by watching one launch.
//!
//! Why: cubecl-cuda 0.10 keeps its streams private (bench/NOTES.md, sessions 7 and 9), so work
//! of our own (a CUDA graph of the decode step, a cuBLAS product) could only be ordered with
//! cubecl's by waiting on the host. cubecl gives each thread a stream and launches its kernels
//! with `cuLaunchKernel` on it; CUPTI's driver callbacks see that call's arguments. This module
//! subscribes for one launch of a probe kernel of its own, reads the stream from it, and
//! unsubscribes. It answers `None` where CUPTI is not loadable or already has a subscriber (a
//! profiler such as Nsight Compute), and callers fall back to what they did before.

// CUPTI and the driver are FFI; each `unsafe` block says why it is sound.
#![allow(unsafe_code)]
// `#[cube]` generates public helper items (expand functions, launch modules) without docs.
#![allow(missing_docs)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;
use cudarc::cupti::sys as cupti;
use cudarc::driver::sys::CUstream;

use crate::kernels::args::array_arg;

/// The kernel whose launch is watched: its name is what the callback looks for.
#[cube(launch)]
pub fn forge_stream_probe_kernel(out: &mut Array<u32>) {
    if ABSOLUTE_POS == 0 {
        out[0] = 1u32;
    }
}

/// The stream seen by the callback (0: none yet).
static FOUND: AtomicUsize = AtomicUsize::new(0);
/// One discovery at a time: CUPTI allows one subscriber per process.
static DISCOVERY: Mutex<()> = Mutex::new(());

thread_local! {
    /// Streams already found for this thread, by device index.
    static STREAMS: RefCell<HashMap<usize, usize>> = RefCell::new(HashMap::new());
}

/// The CUPTI callback: records the stream of a launch of the probe kernel.
unsafe extern "C" fn on_driver_call(
    _userdata: *mut c_void,
    domain: cupti::CUpti_CallbackDomain,
    cbid: cupti::CUpti_CallbackId,
    cbdata: *const c_void,
) {
    if domain != cupti::CUpti_CallbackDomain::CUPTI_CB_DOMAIN_DRIVER_API
        || cbid
            != cupti::CUpti_driver_api_trace_cbid_enum::CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel
                as u32
        || cbdata.is_null()
    {
        return;
    }
    // SAFETY: for the driver domain, CUPTI passes a `CUpti_CallbackData` valid for this call,
    // whose `functionParams` points at the launched call's parameters (`cuLaunchKernel_params`
    // for this callback id) and whose `symbolName` is the kernel's NUL-terminated name or null.
    unsafe {
        let data = &*(cbdata as *const cupti::CUpti_CallbackData);
        if data.callbackSite != cupti::CUpti_ApiCallbackSite::CUPTI_API_ENTER
            || data.symbolName.is_null()
            || data.functionParams.is_null()
        {
            return;
        }
        let name = CStr::from_ptr(data.symbolName).to_bytes();
        if name.windows(17).any(|w| w == b"forge_stream_prob") {
            let params = &*(data.functionParams as *const cupti::cuLaunchKernel_params);
            FOUND.store(params.hStream as usize, Ordering::SeqCst);
        }
    }
}

/// `client` as CUDA's client and `device`'s index, where the runtime `R` is CUDA: how code that
/// is generic over the runtime reaches the CUDA-only paths (graphs, cuBLAS).
pub fn as_cuda<'a, R: Runtime>(
    client: &'a ComputeClient<R>,
    device: &R::Device,
) -> Option<(&'a ComputeClient<CudaRuntime>, usize)> {
    use std::any::Any;
    let client = (client as &dyn Any).downcast_ref::<ComputeClient<CudaRuntime>>()?;
    let index = (device as &dyn Any)
        .downcast_ref::<cubecl::cuda::CudaDevice>()?
        .index;
    Some((client, index))
}

/// The CUDA stream cubecl runs this thread's work on for `client`'s device (`device_index`),
/// or `None` where CUPTI cannot watch a launch (not installed, or a profiler subscribed).
/// Found once per thread and device (one probe launch and a wait), then remembered.
pub fn current_stream(
    client: &ComputeClient<CudaRuntime>,
    device_index: usize,
) -> Option<CUstream> {
    if let Some(found) = STREAMS.with(|s| s.borrow().get(&device_index).copied()) {
        return Some(found as CUstream);
    }
    let found = discover(client)?;
    STREAMS.with(|s| s.borrow_mut().insert(device_index, found as usize));
    Some(found)
}

fn discover(client: &ComputeClient<CudaRuntime>) -> Option<CUstream> {
    let _one = DISCOVERY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // SAFETY: `is_culib_present` only tries to load the library.
    if !unsafe { cupti::is_culib_present() } {
        return None;
    }
    let mut subscriber: cupti::CUpti_SubscriberHandle = std::ptr::null_mut();
    // SAFETY: CUPTI is loadable (checked above); the callback is a plain function that lives as
    // long as the program and touches only an atomic.
    let subscribed = unsafe {
        cupti::cuptiSubscribe(&mut subscriber, Some(on_driver_call), std::ptr::null_mut())
    };
    if subscribed != cupti::CUptiResult::CUPTI_SUCCESS {
        return None;
    }
    FOUND.store(0, Ordering::SeqCst);
    // SAFETY: `subscriber` is the live subscription made above.
    let enabled = unsafe {
        cupti::cuptiEnableCallback(
            1,
            subscriber,
            cupti::CUpti_CallbackDomain::CUPTI_CB_DOMAIN_DRIVER_API,
            cupti::CUpti_driver_api_trace_cbid_enum::CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel as u32,
        )
    };
    if enabled == cupti::CUptiResult::CUPTI_SUCCESS {
        let out = client.empty(4);
        forge_stream_probe_kernel::launch::<CudaRuntime>(
            client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(32),
            array_arg::<CudaRuntime, u32>(&out, 1),
        );
        // The launch runs on cubecl's device thread; waiting for this thread's queue means the
        // callback has run.
        let _ = cubecl::future::block_on(client.sync());
    }
    // SAFETY: unsubscribes the subscription made above, once.
    unsafe {
        cupti::cuptiUnsubscribe(subscriber);
    }
    match FOUND.swap(0, Ordering::SeqCst) {
        0 => None,
        stream => Some(stream as CUstream),
    }
}
