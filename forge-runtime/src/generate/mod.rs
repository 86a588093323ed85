//! The rollout engine: batched sampling with the log-probabilities the trainer needs.
//!
//! The recorded log-probability of a token is log softmax(logits / temperature) over the whole
//! vocabulary under the weights that sampled it, with temperature 1 for greedy decoding. top-k and
//! top-p narrow which tokens can be drawn but not this number, so the trainer's forward pass at the
//! same temperature recomputes exactly it (up to floating-point differences between the batched
//! decode and the full forward; `tests` measures that gap).

mod engine;
mod generator;
mod sampling;

pub use engine::{DecodeBackend, DecodeEngine, DrawResult, PendingDraws};
pub use generator::{
    Completion, CpuGenerator, GenerateError, GenerateRequest, GenerateTiming, StopReason, generate,
    generate_timed, prefill_rows,
};
pub use sampling::{SamplingParams, logprob_of, mix_seed, sample};

#[cfg(test)]
pub(crate) mod tests;
