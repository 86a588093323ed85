//! Which GPU stream a thread's device work goes to. cubecl 0.10 gives every new thread a stream
//! of its own (one of 128, by a process-wide count), and every stream its own memory pools: a
//! thread spawned anew for each step would reserve new pools each step while the old ones stay
//! reserved, until the GPU runs out (seen: a data-parallel rank on a fresh thread per step ran
//! out of an H100's 80 GB at the second step). Work on such threads runs in a [`WorkStream`]:
//! the same stream, and pools, every time.

use cubecl::stream_id::StreamId;

/// A stream that device work can be pinned to, whatever thread does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkStream(StreamId);

impl WorkStream {
    /// A stream no thread has used yet (the one a new thread would get).
    pub fn new() -> Self {
        Self(
            std::thread::spawn(StreamId::current)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        )
    }

    /// The calling thread's stream.
    pub fn current() -> Self {
        Self(StreamId::current())
    }

    /// Runs `f` with its device work on this stream (the thread's own is restored after).
    /// One thread at a time: two threads in one stream at once would order each other's work.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        self.0.executes(f)
    }
}

impl Default for WorkStream {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_the_pinned_stream_from_any_thread() {
        let pinned = WorkStream::new();
        assert_ne!(pinned, WorkStream::current());
        for _ in 0..3 {
            let seen = std::thread::spawn(move || pinned.run(WorkStream::current))
                .join()
                .expect("thread");
            assert_eq!(seen, pinned);
        }
        // The thread's own stream is back afterwards.
        let own = WorkStream::current();
        pinned.run(|| ());
        assert_eq!(WorkStream::current(), own);
    }
}
