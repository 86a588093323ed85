//! Actors with torchforge's call shapes. A [`Service`] is a set of replicas, each a thread of its
//! own that owns its state (a model on its device, a data order, a reward function...) and runs
//! the calls sent to it one at a time, in order. A call returns at once with a [`Reply`], which
//! the caller waits for (`wait`) or awaits (it is a `Future`), so work on several services
//! overlaps without locks:
//! - [`Service::call`]: one named replica;
//! - [`Service::call_one`]: the replica with the fewest calls in flight (torchforge's `route`);
//! - [`Service::fan_out`]: every replica, the replies in replica order (torchforge's `fanout`).
//!
//! A replica's thread lives as long as the service, so its device work stays on one GPU stream
//! and its memory pools: cubecl 0.10 gives every new thread a stream of its own (one of 128, by a
//! process-wide count), each with its own pools, so work on a thread spawned anew each step
//! reserved new pools each step until the GPU ran out (a data-parallel rank did so on an H100 at
//! its second step, session 11). A call that panics
//! is caught: its reply says so, and the replica refuses later calls (its state may be half
//! updated) while the other replicas go on. Dropping the last handle of a service lets each
//! replica finish the calls already sent, then joins its thread.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

/// Why a call has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The call panicked; the replica takes no further calls.
    #[error("service `{service}`, replica {replica}: panicked: {message}")]
    Panicked {
        /// The service's name.
        service: String,
        /// Which replica.
        replica: usize,
        /// The panic's message.
        message: String,
    },
    /// An earlier call to this replica panicked.
    #[error(
        "service `{service}`, replica {replica}: out of service since an earlier call panicked: {message}"
    )]
    Failed {
        /// The service's name.
        service: String,
        /// Which replica.
        replica: usize,
        /// The earlier panic's message.
        message: String,
    },
    /// The replica stopped before running the call (its thread could not start, or ended).
    #[error("service `{service}`, replica {replica}: stopped before answering")]
    Stopped {
        /// The service's name.
        service: String,
        /// Which replica.
        replica: usize,
    },
}

/// A call as a replica's thread runs it.
type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// One replica: the way to its thread, and what routing and failure handling read.
struct Replica<S> {
    sender: Option<mpsc::Sender<Job<S>>>,
    thread: Option<JoinHandle<()>>,
    /// Calls sent and not answered yet.
    in_flight: Arc<AtomicUsize>,
    /// The message of the panic that put it out of service.
    failure: Arc<Mutex<Option<String>>>,
}

struct Inner<S> {
    name: String,
    replicas: Vec<Replica<S>>,
    /// Where `call_one`'s search for the least busy replica starts (round robin among equals).
    cursor: AtomicUsize,
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        // Closing the channels first lets every replica finish its queue at once.
        for replica in &mut self.replicas {
            replica.sender.take();
        }
        let me = std::thread::current().id();
        for replica in &mut self.replicas {
            if let Some(thread) = replica.thread.take()
                && thread.thread().id() != me
            {
                // A panic was caught per call; the loop itself does not panic.
                let _ = thread.join();
            }
        }
    }
}

/// A handle on a set of replicas; clones share them.
pub struct Service<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Service<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> std::fmt::Debug for Service<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.inner.name)
            .field("replicas", &self.inner.replicas.len())
            .finish()
    }
}

impl<S: Send + 'static> Service<S> {
    /// Starts one replica per state, each on a thread of its own named `forge-<name>-<i>`.
    pub fn spawn(name: &str, states: Vec<S>) -> Self {
        let replicas = states
            .into_iter()
            .enumerate()
            .map(|(i, mut state)| {
                let (sender, receiver) = mpsc::channel::<Job<S>>();
                let thread = std::thread::Builder::new()
                    .name(format!("forge-{name}-{i}"))
                    .spawn(move || {
                        for job in receiver {
                            job(&mut state);
                        }
                    })
                    // Without its thread the replica's calls answer `Stopped`.
                    .ok();
                Replica {
                    sender: thread.is_some().then_some(sender),
                    thread,
                    in_flight: Arc::new(AtomicUsize::new(0)),
                    failure: Arc::new(Mutex::new(None)),
                }
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                name: name.to_string(),
                replicas,
                cursor: AtomicUsize::new(0),
            }),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many replicas it has.
    pub fn replicas(&self) -> usize {
        self.inner.replicas.len()
    }

    /// Runs `f` on replica `replica`'s state, after the calls sent to it before.
    ///
    /// # Panics
    /// When `replica` is not below [`Self::replicas`] (a bug of the caller, not of the input).
    pub fn call<T: Send + 'static>(
        &self,
        replica: usize,
        f: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Reply<T> {
        let target = &self.inner.replicas[replica];
        let slot = Arc::new(Slot::default());
        let sender = ReplySender {
            slot: Arc::clone(&slot),
            service: self.inner.name.clone(),
            replica,
            in_flight: Arc::clone(&target.in_flight),
        };
        target.in_flight.fetch_add(1, Ordering::SeqCst);
        let failure = Arc::clone(&target.failure);
        let job: Job<S> = Box::new(move |state: &mut S| {
            let earlier = failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(message) = earlier {
                let error = ServiceError::Failed {
                    service: sender.service.clone(),
                    replica,
                    message,
                };
                sender.send(Err(error));
                return;
            }
            match std::panic::catch_unwind(AssertUnwindSafe(|| f(state))) {
                Ok(value) => sender.send(Ok(value)),
                Err(payload) => {
                    let message = panic_message(payload.as_ref());
                    *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(message.clone());
                    let error = ServiceError::Panicked {
                        service: sender.service.clone(),
                        replica,
                        message,
                    };
                    sender.send(Err(error));
                }
            }
        });
        // A job that cannot be sent is dropped here, and its sender answers `Stopped`.
        if let Some(channel) = &target.sender {
            let _ = channel.send(job);
        }
        Reply { slot }
    }

    /// Runs `f` on the replica with the fewest calls in flight (the first such after the last
    /// one chosen, so equals take turns).
    pub fn call_one<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Reply<T> {
        let n = self.replicas();
        let start = self.inner.cursor.load(Ordering::Relaxed);
        let chosen = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&r| self.inner.replicas[r].in_flight.load(Ordering::SeqCst))
            .unwrap_or(0);
        self.inner.cursor.store(chosen + 1, Ordering::Relaxed);
        self.call(chosen, f)
    }

    /// Runs `f(replica, state)` on every replica; the replies in replica order.
    pub fn fan_out<T: Send + 'static>(
        &self,
        f: impl Fn(usize, &mut S) -> T + Send + Sync + 'static,
    ) -> Vec<Reply<T>> {
        let f = Arc::new(f);
        (0..self.replicas())
            .map(|r| {
                let f = Arc::clone(&f);
                self.call(r, move |state| f(r, state))
            })
            .collect()
    }
}

/// Every reply's value, in order; the first error if any (after waiting for all of them, so no
/// call is still running when this returns).
pub fn wait_all<T>(replies: Vec<Reply<T>>) -> Result<Vec<T>, ServiceError> {
    let results: Vec<_> = replies.into_iter().map(Reply::wait).collect();
    results.into_iter().collect()
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Where a call's result lands.
struct Slot<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
}

struct SlotState<T> {
    value: Option<Result<T, ServiceError>>,
    /// Set once the value is in (it may have been taken since).
    answered: bool,
    waker: Option<Waker>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(SlotState {
                value: None,
                answered: false,
                waker: None,
            }),
            ready: Condvar::new(),
        }
    }
}

/// The replica's end of a reply: answers `Stopped` if dropped unanswered (the job was never run).
struct ReplySender<T> {
    slot: Arc<Slot<T>>,
    service: String,
    replica: usize,
    in_flight: Arc<AtomicUsize>,
}

impl<T> ReplySender<T> {
    fn send(&self, value: Result<T, ServiceError>) {
        let mut state = self
            .slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.answered {
            return;
        }
        state.value = Some(value);
        state.answered = true;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        self.slot.ready.notify_all();
    }
}

impl<T> Drop for ReplySender<T> {
    fn drop(&mut self) {
        let answered = self
            .slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .answered;
        if !answered {
            self.send(Err(ServiceError::Stopped {
                service: self.service.clone(),
                replica: self.replica,
            }));
        }
    }
}

/// The result of a call, once the replica has run it: [`Reply::wait`] blocks for it, `.await`
/// waits without blocking an async executor's thread.
pub struct Reply<T> {
    slot: Arc<Slot<T>>,
}

impl<T> std::fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").finish_non_exhaustive()
    }
}

impl<T> Reply<T> {
    /// Blocks until the call has run.
    pub fn wait(self) -> Result<T, ServiceError> {
        let mut state = self
            .slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(value) = state.value.take() {
                return value;
            }
            state = self
                .slot
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether the call has run (its result is waiting).
    pub fn is_ready(&self) -> bool {
        self.slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .value
            .is_some()
    }
}

impl<T> Future for Reply<T> {
    type Output = Result<T, ServiceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self
            .slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match state.value.take() {
            Some(value) => Poll::Ready(value),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    /// Polls `future` to completion on this thread, parking between polls.
    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                return value;
            }
            std::thread::park();
        }
    }

    /// Each replica keeps its state between calls, on one thread, in call order.
    #[test]
    fn replicas_keep_their_state_on_their_own_thread() {
        let service = Service::spawn("counter", vec![Vec::<u32>::new(), Vec::new()]);
        let mut replies = Vec::new();
        for k in 0..20u32 {
            replies.push(service.call((k % 2) as usize, move |log: &mut Vec<u32>| {
                log.push(k);
                (std::thread::current().name().map(str::to_string), log.len())
            }));
        }
        let results = wait_all(replies).expect("no call fails");
        for (k, (thread, len)) in results.iter().enumerate() {
            assert_eq!(
                thread.as_deref(),
                Some(format!("forge-counter-{}", k % 2).as_str())
            );
            assert_eq!(*len, k / 2 + 1, "calls run in order, state kept");
        }
        let logs = wait_all(service.fan_out(|_, log: &mut Vec<u32>| log.clone())).expect("logs");
        assert_eq!(logs[0], (0..20).step_by(2).collect::<Vec<_>>());
        assert_eq!(logs[1], (1..20).step_by(2).collect::<Vec<_>>());
    }

    /// Fanned-out calls run at the same time (a barrier of every replica would hang otherwise),
    /// with their replies in replica order.
    #[test]
    fn fan_out_reaches_every_replica_at_once() {
        let barrier = Arc::new(Barrier::new(3));
        let service = Service::spawn("ranks", vec![10, 20, 30]);
        let replies = service.fan_out(move |r, value: &mut i32| {
            barrier.wait();
            (r, *value)
        });
        assert_eq!(
            wait_all(replies).expect("fan out"),
            vec![(0, 10), (1, 20), (2, 30)]
        );
    }

    /// `call_one` sends to the replica with the fewest calls in flight: a replica held busy
    /// gets nothing more while another is free.
    #[test]
    fn call_one_routes_around_a_busy_replica() {
        let (release, hold) = mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        let service = Service::spawn("workers", vec![(), (), ()]);
        let busy = service.call(0, move |_| {
            hold.lock().expect("hold").recv().expect("released");
            0usize
        });
        let picked: Vec<usize> = (0..6)
            .map(|_| {
                service
                    .call_one(|_| std::thread::current().name().map(str::to_string))
                    .wait()
                    .expect("routed")
                    .and_then(|n| n.rsplit('-').next()?.parse().ok())
                    .expect("a replica thread")
            })
            .collect();
        assert!(picked.iter().all(|&r| r != 0), "{picked:?}");
        assert!(picked.contains(&1) && picked.contains(&2), "{picked:?}");
        release.send(()).expect("release");
        assert_eq!(busy.wait(), Ok(0));
    }

    /// A call that panics answers an error; the replica refuses later calls; the others go on.
    #[test]
    fn a_panicking_call_is_reported_and_its_replica_taken_out() {
        let service = Service::spawn("flaky", vec![0u32, 0]);
        let err = service
            .call(1, |_: &mut u32| -> u32 { panic!("boom at step 3") })
            .wait()
            .expect_err("panicked");
        assert!(
            matches!(&err, ServiceError::Panicked { replica: 1, message, .. } if message == "boom at step 3"),
            "{err}"
        );
        let later = service.call(1, |v: &mut u32| *v).wait();
        assert!(
            matches!(later, Err(ServiceError::Failed { replica: 1, .. })),
            "{later:?}"
        );
        let others = wait_all(service.fan_out(|r, v: &mut u32| {
            *v += 1;
            r
        }));
        assert!(others.is_err(), "replica 1 is out of service");
        assert_eq!(service.call(0, |v: &mut u32| *v).wait(), Ok(1));
        assert!(err.to_string().contains("service `flaky`, replica 1"));
    }

    /// A reply can be awaited; dropping the service finishes the calls already sent.
    #[test]
    fn replies_are_futures_and_queued_calls_finish_on_drop() {
        let service = Service::spawn("slow", vec![0u64]);
        let reply = service.call(0, |v: &mut u64| {
            std::thread::sleep(Duration::from_millis(50));
            *v += 7;
            *v
        });
        assert!(!reply.is_ready());
        let doubled = async { Ok::<_, ServiceError>(reply.await? * 2) };
        assert_eq!(block_on(doubled), Ok(14));
        let queued: Vec<_> = (0..5)
            .map(|k| {
                service.call(0, move |v: &mut u64| {
                    std::thread::sleep(Duration::from_millis(5));
                    *v += k;
                    *v
                })
            })
            .collect();
        drop(service);
        assert_eq!(wait_all(queued), Ok(vec![7, 8, 10, 13, 17]));
    }
}
