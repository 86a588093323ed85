//! The services of a run, as actors with torchforge's call shapes ([`actor`]): each replica a
//! thread of its own owning its state, calls routed to one replica (`call_one`, torchforge's
//! `route`) or fanned out to all (`fan_out`), replies waited for or awaited. One process drives
//! them all, each replica of a GPU service on its device:
//!
//! | torchforge | here | replicas |
//! |---|---|---|
//! | dataset | [`DatasetService`] | one: the seeded record order |
//! | policy (vLLM) | [`Generator`] | `services.generator.num_replicas`, a device each |
//! | reward actors | [`RewardWorkers`] | `services.reward.procs` threads |
//! | reference model | [`Reference`] | `services.ref_model.num_replicas`, a device (or the CPU) each |
//! | replay buffer | [`crate::rl::ReplayBuffer`], run as a one-replica service by the GRPO recipe | one |
//! | trainer | [`Trainer`] | one data-parallel rank per trainer process, a device each |
//!
//! The GRPO recipe ([`crate::recipes`]) composes them: a rollout worker draws prompts, fans them
//! out to the generator's replicas, sends completions to the reward workers as each replica
//! answers, scores the kept groups with the reference replicas and adds the batch to the replay
//! buffer, while the trainer's ranks train on the previous batch.

pub mod actor;
mod dataset;
mod generator;
mod reference;
mod rewards;
mod trainer;

pub use actor::{Reply, Service, ServiceError, wait_all};
pub use dataset::{DatasetError, DatasetService, DrawnPrompt};
pub use generator::{Generator, GeneratorError, GeneratorReplica, ReplicaSamples};
pub use reference::{
    REFERENCE_POSITIONS, Reference, ReferenceError, ReferenceModel, ReferencePlace,
    completion_logprobs,
};
pub use rewards::{PendingScores, RewardWorkers};
pub use trainer::{Trainer, TrainerError};
