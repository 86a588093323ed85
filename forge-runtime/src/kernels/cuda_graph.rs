//! CUDA graphs of the decode engine's step: its ~340 launches recorded once per batch size, then
//! replayed with one `cuGraphLaunch` a step.
//!
//! Why: cubecl's device thread spends ~6.7 us of host time per launch on an H200's host (bench
//! NOTES, session 10), so a decode step of 64 rows costs ~2.3 ms on the host alone, more than the
//! 40k tok/s target leaves for the whole step. A replayed graph issues the same kernels with the
//! same arguments for a few microseconds. The launches are recorded by capturing the stream
//! cubecl runs this thread's work on ([`super::cuda_stream`]) while the engine issues one step
//! through cubecl as usual; the capture and every call here run on cubecl's device thread
//! (`ComputeClient::exclusive`), in order with the work queued before them.
//!
//! What a recorded step may not do, which the engine guarantees: allocate or free device memory,
//! upload or read (its inputs are written by [`StepGraphs::write`] before each replay, into
//! buffers that live as long as the engine), or use a buffer that another stream wrote since the
//! last uncaptured step (cubecl would make the stream wait on an event recorded outside the
//! capture). So the first step of an engine runs without a graph.

// The driver calls are FFI; each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;
use cubecl::server::Handle;
use cudarc::driver::sys;

use super::cuda_stream;

/// Why a graph could not be recorded or replayed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The CUDA driver refused a call.
    #[error("CUDA driver: {call} returned {result:?}")]
    Driver {
        /// The call.
        call: &'static str,
        /// What it returned.
        result: sys::CUresult,
    },
    /// cubecl's device thread or buffers.
    #[error("cubecl: {0}")]
    Cubecl(String),
}

fn check(call: &'static str, result: sys::CUresult) -> Result<(), GraphError> {
    match result {
        sys::CUresult::CUDA_SUCCESS => Ok(()),
        result => Err(GraphError::Driver { call, result }),
    }
}

/// A stream handle, a graph or a device pointer moved to cubecl's device thread. The driver's
/// handles are plain pointers, usable from any thread of the process.
#[derive(Clone, Copy)]
struct Raw(usize);

/// The decode step's graphs on one engine, by the number of rows they were recorded for.
pub struct StepGraphs {
    client: ComputeClient<CudaRuntime>,
    stream: Raw,
    execs: HashMap<usize, Raw>,
    /// Pinned host buffers of [`StepGraphs::queue_read`], reused once their last read is done.
    reads: Vec<Arc<ReadBuffer>>,
}

/// Pinned host memory and an event for one queued read: freed when the engine and the last
/// [`QueuedRead`] using it are both gone.
struct ReadBuffer {
    context: Raw,
    host: Raw,
    bytes: usize,
    event: Raw,
}

// SAFETY: the fields are driver handles and a pinned host allocation, usable from any thread
// (the context is made current wherever they are used).
unsafe impl Send for ReadBuffer {}
// SAFETY: as for `Send`; shared references only read the handles.
unsafe impl Sync for ReadBuffer {}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        // SAFETY: the event and the pinned allocation were made in `context` and nothing uses
        // them any more (this is the last reference).
        unsafe {
            sys::cuCtxSetCurrent(self.context.0 as sys::CUcontext);
            sys::cuEventDestroy_v2(self.event.0 as sys::CUevent);
            sys::cuMemFreeHost(self.host.0 as *mut c_void);
        }
    }
}

/// Device bytes on their way to the host ([`StepGraphs::queue_read`]): the copy is queued on
/// cubecl's stream behind the work that writes them, and [`QueuedRead::wait`] waits for that
/// copy alone, not for anything queued after it.
pub struct QueuedRead {
    buffer: Arc<ReadBuffer>,
    len: usize,
}

impl QueuedRead {
    /// Waits for the copy; the bytes read, the sources one after another.
    pub fn wait(self) -> Result<Vec<u8>, GraphError> {
        let b = &self.buffer;
        // SAFETY: the event was recorded after the copies into `host` (`queue_read`); once it
        // has completed, `len` bytes of the pinned buffer hold them, and no other read uses the
        // buffer until this one is dropped (it holds the `Arc`).
        unsafe {
            check(
                "cuCtxSetCurrent",
                sys::cuCtxSetCurrent(b.context.0 as sys::CUcontext),
            )?;
            check(
                "cuEventSynchronize",
                sys::cuEventSynchronize(b.event.0 as sys::CUevent),
            )?;
            Ok(std::slice::from_raw_parts(b.host.0 as *const u8, self.len).to_vec())
        }
    }
}

impl std::fmt::Debug for StepGraphs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepGraphs")
            .field("rows", &self.execs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl StepGraphs {
    /// Graphs for work this thread issues through `client` on `device`, where the runtime is
    /// CUDA and its stream can be found; `None` otherwise, or when `FORGE_DECODE_GRAPHS=0` (to
    /// compare the two on one build).
    pub fn new<R: Runtime>(client: &ComputeClient<R>, device: &R::Device) -> Option<Self> {
        if std::env::var("FORGE_DECODE_GRAPHS").as_deref() == Ok("0") {
            return None;
        }
        let (client, index) = cuda_stream::as_cuda(client, device)?;
        let stream = cuda_stream::current_stream(client, index)?;
        Some(Self {
            client: client.clone(),
            stream: Raw(stream as usize),
            execs: HashMap::new(),
            reads: Vec::new(),
        })
    }

    /// The device address of `handle`'s first byte (stable while the handle lives: cubecl's
    /// pools do not move buffers).
    pub fn address(&self, handle: &Handle) -> Result<u64, GraphError> {
        let resource = self
            .client
            .get_resource(handle.clone())
            .map_err(|e| GraphError::Cubecl(format!("{e:?}")))?;
        Ok(resource.resource().ptr)
    }

    /// Copies each `(address, bytes)` to the device, in order with this thread's queued work and
    /// before anything queued after.
    pub fn write(&self, copies: Vec<(u64, Vec<u8>)>) -> Result<(), GraphError> {
        let stream = self.stream;
        self.exclusive(move || {
            for (address, bytes) in &copies {
                // SAFETY: `address` is a live device buffer of at least `bytes.len()` bytes (the
                // engine's input buffers); from pageable memory the call returns once `bytes` is
                // staged, so the vector may be dropped after it.
                check("cuMemcpyHtoDAsync", unsafe {
                    sys::cuMemcpyHtoDAsync_v2(
                        *address,
                        bytes.as_ptr() as *const c_void,
                        bytes.len(),
                        stream.0 as sys::CUstream,
                    )
                })?;
            }
            Ok(())
        })
    }

    /// Queues copies of `sources` (device address, bytes) into pinned host memory on cubecl's
    /// stream, behind the work queued before, and returns at once: the decode loop reads a
    /// step's draws while the next step runs.
    pub fn queue_read(&mut self, sources: &[(u64, usize)]) -> Result<QueuedRead, GraphError> {
        let len: usize = sources.iter().map(|&(_, n)| n).sum();
        // A buffer no read holds any more, large enough; else a new one.
        let free = self
            .reads
            .iter()
            .position(|b| Arc::strong_count(b) == 1 && b.bytes >= len);
        let buffer = match free {
            Some(i) => self.reads[i].clone(),
            None => {
                let stream = self.stream;
                let bytes = len.max(256);
                let made = self.exclusive(move || {
                    let mut context: sys::CUcontext = std::ptr::null_mut();
                    let mut host: *mut c_void = std::ptr::null_mut();
                    let mut event: sys::CUevent = std::ptr::null_mut();
                    // SAFETY: plain allocations in the stream's context, on cubecl's device
                    // thread (where that context is current); each result is checked.
                    unsafe {
                        check(
                            "cuStreamGetCtx",
                            sys::cuStreamGetCtx(stream.0 as sys::CUstream, &mut context),
                        )?;
                        check("cuMemAllocHost", sys::cuMemAllocHost_v2(&mut host, bytes))?;
                        check(
                            "cuEventCreate",
                            sys::cuEventCreate(
                                &mut event,
                                sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32,
                            ),
                        )?;
                    }
                    Ok([context as usize, host as usize, event as usize])
                })?;
                let buffer = Arc::new(ReadBuffer {
                    context: Raw(made[0]),
                    host: Raw(made[1]),
                    bytes,
                    event: Raw(made[2]),
                });
                self.reads.push(buffer.clone());
                buffer
            }
        };
        let stream = self.stream;
        let (host, event) = (buffer.host, buffer.event);
        let sources = sources.to_vec();
        self.exclusive(move || {
            let mut at = 0usize;
            for (address, n) in sources {
                // SAFETY: `address` is a live device buffer of at least `n` bytes (the engine's
                // draws); the pinned buffer has room for every source (`len` <= its size) and
                // stays alive until the read is waited for or dropped.
                check("cuMemcpyDtoHAsync", unsafe {
                    sys::cuMemcpyDtoHAsync_v2(
                        (host.0 + at) as *mut c_void,
                        address,
                        n,
                        stream.0 as sys::CUstream,
                    )
                })?;
                at += n;
            }
            // SAFETY: records the buffer's event on the same stream, after the copies.
            check("cuEventRecord", unsafe {
                sys::cuEventRecord(event.0 as sys::CUevent, stream.0 as sys::CUstream)
            })
        })?;
        Ok(QueuedRead { buffer, len })
    }

    /// Whether a graph was recorded for `rows`.
    pub fn has(&self, rows: usize) -> bool {
        self.execs.contains_key(&rows)
    }

    /// Records what `issue` launches through cubecl on this thread as the graph for `rows`; the
    /// launches are recorded, not run.
    pub fn record(&mut self, rows: usize, issue: impl FnOnce()) -> Result<(), GraphError> {
        let stream = self.stream;
        self.exclusive(move || {
            // SAFETY: `stream` is cubecl's live stream for this thread; relaxed mode, because
            // cubecl's device thread makes calls (pool bookkeeping, function attributes) that the
            // stricter modes forbid while a capture is open.
            check("cuStreamBeginCapture", unsafe {
                sys::cuStreamBeginCapture_v2(
                    stream.0 as sys::CUstream,
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
                )
            })
        })?;
        issue();
        let exec = self.exclusive(move || {
            let mut graph: sys::CUgraph = std::ptr::null_mut();
            // SAFETY: ends the capture begun above on the same stream; `graph` receives it.
            check("cuStreamEndCapture", unsafe {
                sys::cuStreamEndCapture(stream.0 as sys::CUstream, &mut graph)
            })?;
            let mut exec: sys::CUgraphExec = std::ptr::null_mut();
            // SAFETY: `graph` is the graph just captured; the executable copies what it needs,
            // so the graph is destroyed right after.
            let made = check("cuGraphInstantiate", unsafe {
                sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0)
            });
            // SAFETY: `graph` is live and no longer used.
            unsafe { sys::cuGraphDestroy(graph) };
            made.map(|()| Raw(exec as usize))
        })?;
        self.execs.insert(rows, exec);
        Ok(())
    }

    /// Replays the graph recorded for `rows` (see [`StepGraphs::has`]).
    pub fn replay(&self, rows: usize) -> Result<(), GraphError> {
        let exec = *self
            .execs
            .get(&rows)
            .ok_or_else(|| GraphError::Cubecl(format!("no graph recorded for {rows} rows")))?;
        let stream = self.stream;
        self.exclusive(move || {
            // SAFETY: `exec` is a live executable graph whose buffers the engine keeps alive.
            check("cuGraphLaunch", unsafe {
                sys::cuGraphLaunch(exec.0 as sys::CUgraphExec, stream.0 as sys::CUstream)
            })
        })
    }

    /// Runs `task` on cubecl's device thread after the work queued before it.
    fn exclusive<T: Send + 'static>(
        &self,
        task: impl FnOnce() -> Result<T, GraphError> + Send,
    ) -> Result<T, GraphError> {
        self.client
            .exclusive(task)
            .map_err(|e| GraphError::Cubecl(format!("{e:?}")))?
    }
}

impl Drop for StepGraphs {
    fn drop(&mut self) {
        let stream = self.stream;
        let execs: Vec<Raw> = self.execs.drain().map(|(_, e)| e).collect();
        let _ = self.exclusive(move || {
            // SAFETY: waits for the replays queued on the stream, then destroys each executable
            // graph once; nothing replays them afterwards.
            unsafe {
                sys::cuStreamSynchronize(stream.0 as sys::CUstream);
                for exec in execs {
                    sys::cuGraphExecDestroy(exec.0 as sys::CUgraphExec);
                }
            }
            Ok(())
        });
    }
}
